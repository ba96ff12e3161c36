"""WSD with cooldown branches: one trunk per size for three budgets, against separate runs.

Per size (pico, nano, micro; --quick: pico, nano) and budgets a, 2a, 4a of a CPU-cheap synthetic
corpus (a sparse random Markov chain, so the loss has a floor and falls with both N and D):
- branched: the grid `schedule = "wsd"`, `branch = true`: the 4a trunk and two cooldown branches,
  each trained through the sweep's own worker (`worker.train_run`), as `mmlm sweep` would;
- separate WSD: the same three budgets as ordinary runs with the same settings (their own folders);
- linear: today's default schedule (linear decay after warm-up), three separate runs.
Reported: every branched final loss against its separate WSD run (target: within 0.5%), the mean
loss of branched against linear decay, the compute branching saved (tokens actually trained) on
this three-budget grid and, from the same plan, on a four-budget grid spaced x2 (target >= 30%),
and a uni-modal law fitted on branched against one fitted on separate results (alpha, beta, and the
prediction of the largest size from a fit on the others).

    python bench/wsd.py [--quick]
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

SEQ, BATCH, VOCAB_TEXT = 64, 512, 240


def make_corpus(root: Path, n_tokens: int = 400_000, seed: int = 0) -> None:
    """One dataset "text": documents from a random order-1 Markov chain, 6 successors per token with
    Zipf-like probabilities (entropy floor about 1.2 nats)."""
    from mmlm.shards import DatasetWriter
    from mmlm.vocab import Vocab

    v = Vocab()
    v.add_space("text", VOCAB_TEXT, {"kind": "synthetic"})
    v.save(root / "vocab.json")
    lo, hi = v.range_of("text")
    rng = np.random.default_rng(seed)
    n = hi - lo + 1
    succ = np.stack([rng.choice(n, 6, replace=False) for _ in range(n)])
    p = 1 / np.arange(1, 7)
    p /= p.sum()
    made = 0
    with DatasetWriter(root / "text") as w:
        while made < n_tokens:
            length = int(rng.integers(50, 400))
            x = np.empty(length, np.int64)
            x[0] = rng.integers(n)
            picks = rng.choice(6, length, p=p)
            for i in range(1, length):
                x[i] = succ[x[i - 1], picks[i]]
            w.add([v.begin("text"), *(lo + x).tolist(), v.end("text"), v.eos])
            made += length + 3
        w.meta.update(kind="text")


GRID = """
data = "{data}"
sizes = {sizes}
tokens = {tokens}
{extra}
[mixtures.text]
text = 1.0
[train]
seq_len = {seq}
batch_tokens = {batch}
eval_tokens = 16384
eval_every = 1000000
threads = 1
{train}
"""


def _grid(data, sizes, tokens, extra="", train=""):
    from mmlm.sweep import parse_grid

    return parse_grid(GRID.format(data=data, sizes=list(sizes), tokens=list(tokens), extra=extra, train=train,
                                  seq=SEQ, batch=BATCH))


def _train_all(grid, out: Path) -> dict:
    """Every run of the grid through the sweep's worker, trunks first; {run id: (spec, summary)}."""
    from mmlm.sweep.branch import wave
    from mmlm.sweep.run_folders import read_summary, run_dir, write_spec
    from mmlm.sweep.worker import train_run

    results = {}
    for spec in sorted(grid.runs, key=wave):
        write_spec(out, spec)
        outcome = train_run(str(out), spec.id, threads=1)
        if outcome["status"] != "done":
            raise RuntimeError(f"{spec.id}: {outcome['error']}")
        results[spec.id] = (spec, read_summary(run_dir(out, spec.id)))
    return results


def _by_key(results: dict, n_params_of=None) -> dict:
    return {(s.size, s.tokens): (summ["n_params"], summ["eval_loss"]["text"], summ["tokens"] - s.start_tokens)
            for s, summ in results.values()}


def _fit(points: dict, sizes) -> dict:
    from mmlm.laws import UnimodalLaw

    keys = [k for k in points if k[0] in sizes]
    N = np.array([points[k][0] for k in keys], float)
    D = np.array([k[1] for k in keys], float)
    L = np.array([points[k][1] for k in keys], float)
    return UnimodalLaw().fit(N, D, L)


def run(quick: bool = False) -> list[dict]:
    import torch

    torch.set_flush_denormal(True)
    sizes = ("pico", "nano") if quick else ("pico", "nano", "micro")
    a = BATCH * (25 if quick else 40)
    budgets = (a, 2 * a, 4 * a)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        make_corpus(tmp / "data")
        branched = _grid(tmp / "data", sizes, budgets, extra='schedule = "wsd"\nbranch = true')
        # separate WSD runs: the same settings as each branched family (shared warm-up and stall rule)
        per_size = {}
        for s in branched.runs:
            per_size[s.size] = s.train
        separate_runs = []
        for size in sizes:
            t = per_size[size]
            g = _grid(tmp / "data", [size], budgets, train=f'schedule = "wsd"\nwarmup = {t["warmup"]}\nstall_tokens = {t["stall_tokens"]}')
            separate_runs.append(g)
        linear = _grid(tmp / "data", sizes, budgets)
        rb = _by_key(_train_all(branched, tmp / "branched"))
        rs = {}
        for g in separate_runs:
            rs.update(_by_key(_train_all(g, tmp / "separate")))
        rl = _by_key(_train_all(linear, tmp / "linear"))
    seconds = time.perf_counter() - t0

    from mmlm.schedule import branch_plan

    diffs = {k: rb[k][1] / rs[k][1] - 1 for k in rb}
    worst = max(abs(d) for d in diffs.values())
    trained_b = sum(v[2] for v in rb.values())
    trained_s = sum(v[2] for v in rs.values())
    saved3 = 1 - trained_b / trained_s
    four = branch_plan([a, 2 * a, 4 * a, 8 * a], BATCH, 0.2)
    saved4 = 1 - four["tokens_branched"] / four["tokens_separate"]
    mean_b = float(np.mean([v[1] for v in rb.values()]))
    mean_l = float(np.mean([v[1] for v in rl.values()]))
    entries = [
        {"name": "wsd branch loss vs separate WSD run (max |rel diff|)", "value": worst, "baseline": 0.0,
         "ratio": worst, "target": 0.005, "unit": "rel", "meets": bool(worst <= 0.005),
         "note": f"lower is better; {len(diffs)} budgets of sizes {', '.join(sizes)} at {budgets} tokens; "
                 + ", ".join(f"{k[0]}@{k[1]}: {rb[k][1]:.4f} vs {rs[k][1]:.4f}" for k in sorted(rb))},
        {"name": "wsd compute saved by branching (3 budgets measured; 4 budgets x2 planned)", "value": saved4,
         "baseline": saved3, "ratio": saved4, "target": 0.30, "unit": "share", "meets": bool(saved4 >= 0.30),
         "note": f"tokens trained branched {trained_b:,} vs separate {trained_s:,} on the 3-budget grid "
                 f"({saved3:.1%} saved, the baseline column); a 4-budget grid spaced x2 saves {saved4:.1%} (value)"},
        {"name": "wsd branched vs linear-decay runs (mean final loss)", "value": mean_b, "baseline": mean_l,
         "ratio": mean_l / mean_b, "target": 0.98, "unit": "nats", "meets": bool(mean_l / mean_b >= 0.98),
         "note": "ratio = linear / branched loss (>= 1: WSD is as good); "
                 + ", ".join(f"{k[0]}@{k[1]}: {rb[k][1]:.4f} vs {rl[k][1]:.4f}" for k in sorted(rb))
                 + f"; whole bench {seconds:.0f} s"},
    ]
    if len(sizes) >= 3:
        fb, fs = _fit(rb, sizes), _fit(rs, sizes)
        hb, hs = _fit(rb, sizes[:-1]), _fit(rs, sizes[:-1])
        big = [k for k in rb if k[0] == sizes[-1]]
        def pred(law, pts):
            return float(np.mean([abs(law.predict(pts[k][0], k[1]) / pts[k][1] - 1) for k in big]))
        eb, es = pred(hb, rb), pred(hs, rs)
        d_alpha, d_beta = abs(fb.alpha_ - fs.alpha_), abs(fb.beta_ - fs.beta_)
        entries.append({
            "name": "wsd fit on branched vs separate results (|d alpha| + |d beta|)", "value": d_alpha + d_beta,
            "baseline": 0.0, "ratio": d_alpha + d_beta, "target": 0.01, "unit": "abs", "meets": bool(d_alpha + d_beta <= 0.01),
            "note": f"lower is better; branched alpha {fb.alpha_:.4f} beta {fb.beta_:.4f}, separate alpha {fs.alpha_:.4f} "
                    f"beta {fs.beta_:.4f}; held-out {sizes[-1]} predicted from {', '.join(sizes[:-1])}: mean |error| "
                    f"{eb:.2%} (branched) vs {es:.2%} (separate)"})
    return entries


if __name__ == "__main__":
    from run_all import main_for

    main_for(run)
