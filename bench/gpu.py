"""GPU section of the suite: runs only where CUDA is present (skipped elsewhere).

- attention parity: xformers memory_efficient_attention vs torch SDPA on the same bf16 inputs,
  and the whole 125M model's logits under both backends (max abs difference, reported as a note);
- attention speed: forward+backward of causal attention, xformers against SDPA;
- bf16 training throughput of the 125M and 350M sizes with xformers attention, as model FLOP/s
  against a large bf16 matmul measured in the same run (the ratio is an MFU against what this GPU
  really sustains, not its datasheet peak; the datasheet MFU is in the note).
"""
from __future__ import annotations

import statistics
import time

SIZES = ("125M", "350M")
DATASHEET_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def _skipped(names, why):
    return [{"name": n, "value": None, "baseline": None, "ratio": None, "target": None, "unit": "",
             "meets": None, "skipped": True, "note": why} for n in names]


def _time_cuda(fn, reps):
    import torch

    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _matmul_flops(reps):
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    a @ b
    return 2 * n**3 / _time_cuda(lambda: a @ b, reps)


def _attention_entries(quick):
    import torch

    from mmlm.model import attend

    B, T, H, D = (4, 1024, 12, 64) if quick else (8, 2048, 16, 64)
    q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    out = {b: attend(q, k, v, b) for b in ("sdpa", "xformers")}
    diff = (out["sdpa"].float() - out["xformers"].float()).abs().max().item()

    def step(backend):
        y = attend(q, k, v, backend)
        y.sum().backward()

    reps = 5 if quick else 20
    t = {}
    for _ in range(3):  # interleave the two backends
        for backend in ("sdpa", "xformers"):
            step(backend)
            t.setdefault(backend, []).append(_time_cuda(lambda: step(backend), reps))
    ts, tx = statistics.median(t["sdpa"]), statistics.median(t["xformers"])
    return [{"name": "gpu attention fwd+bwd: xformers vs sdpa", "value": 1 / tx, "baseline": 1 / ts,
             "ratio": ts / tx, "target": 0.9, "unit": "steps/s", "meets": ts / tx >= 0.9,
             "note": f"B={B} T={T} H={H} D={D} bf16; max |xformers - sdpa| = {diff:.2e}"}]


def _model_parity():
    import torch

    from mmlm.model import GPT, model_config

    torch.manual_seed(0)
    model = GPT(model_config("125M", 8192, seq_len=1024)).cuda().eval()
    idx = torch.randint(0, 8192, (2, 1024), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        model.set_attention("sdpa")
        a = model(idx)[0].float()
        model.set_attention("xformers")
        b = model(idx)[0].float()
    return (a - b).abs().max().item(), (a.argmax(-1) == b.argmax(-1)).float().mean().item()


def _train_entry(size, quick, matmul, name, peak):
    import torch

    from mmlm.model import GPT, count_params, model_config

    seq, batch = 2048, 8
    cfg = model_config(size, 8192, seq_len=seq)
    model = GPT(cfg, attention="xformers").cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), fused=True)
    x = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x[:, :-1])[0]
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    dt = _time_cuda(step, 5 if quick else 20)
    tokens_s = batch * seq / dt
    n = count_params(cfg)["n_params_nonembed"]
    flops_per_token = 6 * n + 12 * cfg.n_layer * seq * cfg.d_model  # PaLM appendix B
    achieved = flops_per_token * tokens_s
    note = f"{tokens_s:,.0f} tokens/s, batch {batch}x{seq}, {name}"
    if peak:
        note += f"; MFU vs datasheet {peak / 1e12:.0f} TFLOP/s: {achieved / peak:.1%}"
    return {"name": f"gpu bf16 train {size} (xformers): model FLOP/s vs bf16 matmul",
            "value": achieved / 1e12, "baseline": matmul / 1e12, "ratio": achieved / matmul,
            "target": 0.4, "unit": "TFLOP/s", "meets": achieved / matmul >= 0.4, "note": note}


def _train_entries(quick, matmul):
    import torch

    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in DATASHEET_BF16.items() if k in name), None)
    entries = []
    for size in SIZES:
        entries.append(_train_entry(size, quick, matmul, name, peak))
        torch.cuda.empty_cache()  # the model and optimizer went out of scope with _train_entry
    return entries


def run(quick: bool = False) -> list[dict]:
    names = ["gpu attention fwd+bwd: xformers vs sdpa"] + [f"gpu bf16 train {s} (xformers): model FLOP/s vs bf16 matmul" for s in SIZES]
    try:
        import torch
    except ImportError:
        return _skipped(names, "torch missing")
    if not torch.cuda.is_available():
        return _skipped(names, "no CUDA device")
    try:
        import xformers.ops  # noqa: F401
    except Exception as e:
        return _skipped(names, f"xformers does not import: {e}")
    entries = _attention_entries(quick)
    diff, agree = _model_parity()
    entries[0]["note"] += f"; 125M logits max diff {diff:.2e}, argmax agreement {agree:.4f}"
    return entries + _train_entries(quick, _matmul_flops(5 if quick else 20))


if __name__ == "__main__":
    from run_all import main_for

    main_for(run)
