"""Training-step throughput: mmlm's whole training step against a minimal plain-PyTorch nanoGPT loop,
at the demo's three sizes (target >= 0.95x each, issue 12).

Ours is `Trainer.train_step()`: interleaver rows, objective, forward, per-token loss, per-dataset
aggregation (Numba), backward, clipping, AdamW, the loss and gradient norm read back.
The baseline is the loop of nanoGPT's train.py in its simplest form, with its own small GPT class
below: random windows of a flat token array, forward, mean cross-entropy, backward, clip 1.0, AdamW,
`loss.item()`. Same width, depth, heads, vocabulary, context, batch, optimizer settings and threads.
Single steps alternate between the two (order flipped each pair); value = median tokens/s.

    python bench/train_step.py [--quick]
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlm.shards import DatasetWriter
from mmlm.train import BETAS, Trainer, TrainConfig, prepare
from mmlm.vocab import Vocab


# ---- the baseline: a minimal nanoGPT ------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class BaselineGPT(nn.Module):
    def __init__(self, vocab, seq_len, d, h, n_layer):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq_len, d)
        self.blocks = nn.ModuleList(Block(d, h) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for p in self.parameters():
            nn.init.normal_(p, std=0.02) if p.dim() > 1 else None

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def baseline_step_fn(cfg, data: np.ndarray, rows: int, seq_len: int, lr: float, wd: float):
    model = BaselineGPT(cfg.vocab_size, seq_len, cfg.d_model, cfg.n_head, cfg.n_layer)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], lr=lr, betas=BETAS)
    rng = np.random.default_rng(0)

    def step():
        ix = rng.integers(0, len(data) - seq_len - 1, rows)
        x = torch.stack([torch.from_numpy(data[i:i + seq_len].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + seq_len].astype(np.int64)) for i in ix])
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step, sum(p.numel() for p in model.parameters())


# ---- ours ----------------------------------------------------------------------------------------

def make_data(root: Path, vocab_size: int, n_tokens: int) -> np.ndarray:
    """Two datasets of random documents filling a vocabulary of vocab_size ids."""
    v = Vocab()
    n_special = v.size
    v.add_space("text", (vocab_size - n_special) // 2, {})
    v.add_space("image", vocab_size - n_special - (vocab_size - n_special) // 2, {})
    rng = np.random.default_rng(0)
    v.save(root / "vocab.json")
    flat = []
    for name in ("text", "image"):
        lo, hi = v.range_of(name)
        with DatasetWriter(root / name) as w:
            made = 0
            while made < n_tokens // 2:
                doc = rng.integers(lo, hi + 1, int(rng.integers(100, 1000)))
                w.add(doc)
                flat.append(doc)
                made += len(doc)
    return np.concatenate(flat).astype(np.uint32)


def demo_shapes() -> list[dict]:
    """The demo preset's smallest, middle and largest shapes (custom shapes: L2d24, L2d48, L3d64)."""
    from mmlm.sweep.demo import PRESETS

    sizes = PRESETS["demo"].sizes
    return [dict(sizes[0]), dict(sizes[len(sizes) // 2]), dict(sizes[-1])]


TARGET = 0.95


def _measure(size: str | dict, seq_len: int, batch_tokens: int, pairs: int, threads: int, tmp: Path, root: Path,
             flat: np.ndarray) -> dict:
    shape = dict(size) if isinstance(size, dict) else {"name": size}
    size = shape.pop("name")
    cfg = TrainConfig(data=str(root), out=str(tmp / f"run-{size}"), size=size, mix="text=0.5,image=0.5",
                      tokens=1e9, seq_len=seq_len, batch_tokens=batch_tokens, threads=threads, device="cpu", **shape)
    trainer = Trainer(prepare(cfg))
    ours = trainer.train_step
    rows = trainer.resolved.batch_rows
    base, n_base = baseline_step_fn(trainer.model_cfg, flat, rows, seq_len, trainer.resolved.lr, cfg.weight_decay)
    n_ours = sum(p.numel() for p in trainer.model.parameters())
    assert n_ours == n_base, (n_ours, n_base)
    t_ours, t_base = [], []
    for f in (ours, base, ours, base):  # warm up
        f()
    # alternate single steps, the order flipping each pair, so drifts in machine load hit both alike
    for i in range(pairs):
        pair = ((ours, t_ours), (base, t_base))
        for f, times in pair if i % 2 == 0 else pair[::-1]:
            t = time.perf_counter()
            out = f()
            times.append(time.perf_counter() - t)
            assert not isinstance(out, str) and math.isfinite(out if isinstance(out, float) else out[0])
    value = rows * seq_len / float(np.median(t_ours))
    baseline = rows * seq_len / float(np.median(t_base))
    return {"name": f"train_step_vs_plain_torch {size}", "value": value, "baseline": baseline,
            "ratio": value / baseline, "target": TARGET, "unit": "tok/s", "meets": bool(value / baseline >= TARGET),
            "note": f"{n_ours:,} params, seq {seq_len}, {rows} rows/step, {threads} threads, CPU, median of {pairs} "
                    f"alternating steps; MFU of ours: tokens/s x {trainer.speed.fpt:,} FLOPs/token vs "
                    f"{trainer.speed.peak.flops:.3g} FLOP/s = {value * trainer.speed.fpt / trainer.speed.peak.flops:.1%}"}


def run(quick: bool = False) -> list[dict]:
    """mmlm's step against the plain loop at three of the demo's shapes (seq 128, 512-token batches, a
    1,024-id vocabulary like the demo's 997, one thread: what each demo worker runs) and at micro with
    8192-token batches."""
    torch.set_flush_denormal(True)
    pairs = 8 if quick else 16
    threads = 1
    settings = [(shape, 128, 512) for shape in demo_shapes()]
    if not quick:
        settings.append(("micro", 256, 8192))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        flat = make_data(root, vocab_size=1024, n_tokens=400_000)
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for size, seq_len, batch_tokens in settings:
                r = _measure(size, seq_len, batch_tokens, pairs, threads, Path(tmp), root, flat)
                if batch_tokens != 512:
                    r["name"] += f" (batch {batch_tokens})"
                results.append(r)
        finally:
            torch.set_num_threads(prev)
    return results


if __name__ == "__main__":
    from run_all import main_for

    main_for(run)
