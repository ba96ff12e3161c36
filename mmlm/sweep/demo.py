"""The demo preset: a grid small enough for a 2-core CPU, rich enough for `mmlm fit`.

What `mmlm fit` needs, and how the grid gives it:
- a uni-modal law (5 parameters) per dataset: text, code, image and molecule alone, each at 3 sizes x
  3 budgets = 9 (N, D) points;
- a bi-modal law (5 more) per pair: text+code and text+image at 50/50, 3 sizes x 3 budgets = 9 runs
  per pair, at budgets twice the uni-modal ones, so that every pair run at T tokens has uni-modal
  runs of both its datasets at T/2 (its per-dataset tokens).
Budgets grow x3 (a, 3a, 9a) to spread D; pair budgets are 2a, 6a, 18a.

Timing (measured on 2 shared cores, CPU seconds at one torch thread per worker, seq_len 64,
batch 512 tokens): pico ~5.5k tokens/s, nano ~4.7k, micro ~3.0k, i.e. 0.73 ms per token for the
three sizes together. Tokens per size: 4 datasets x 13a + 2 pairs x 26a = 104a; a = 4096 gave 426k
tokens per size and a sweep of 2 min 48 s wall with `--jobs 2` on an idle 2-core machine. The
demo uses a = 6144 (x1.5, for better-spread fits) and seq_len 128 (so that a 64-code image and
its sentinels fit in one context, and generation can draw whole images): about 4.5 minutes.
The largest runs are queued first, so the two workers finish together. Evaluation is only at the end (eval_every is larger than any run) on
8192 held-out tokens per dataset; checkpoints every 16 steps keep an interrupted demo cheap to resume.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .grid import Grid

DEMO_DATASETS = ("text", "code", "image", "speech", "molecule", "image-text", "speech-text")
UNIMODAL = ("text", "code", "image", "molecule")
PAIRS = (("text", "code"), ("text", "image"))
SIZES = ("pico", "nano", "micro")
BASE_TOKENS = 6144
UNIMODAL_TOKENS = (BASE_TOKENS, 3 * BASE_TOKENS, 9 * BASE_TOKENS)


def _demo_grid_dict() -> dict:
    mixtures = {name: {name: 1.0} for name in UNIMODAL}
    mixtures.update({f"{a}+{b}": {a: 0.5, b: 0.5} for a, b in PAIRS})
    return {
        "sizes": list(SIZES),
        "mixtures": mixtures,
        "train": {"seq_len": 128, "batch_tokens": 512, "eval_tokens": 8192, "eval_every": 1_000_000, "ckpt_every": 16},
    }


def demo_grid(data: str | Path = "data/demo") -> Grid:
    """The demo: the uni-modal grid (budgets a, 3a, 9a) and the pair grid (2a, 6a, 18a), as one."""
    from .grid import grid_from_dict

    base = _demo_grid_dict()
    uni = {k: v for k, v in base["mixtures"].items() if "+" not in k}
    pairs = {k: v for k, v in base["mixtures"].items() if "+" in k}
    parts = [grid_from_dict({**base, "tokens": list(UNIMODAL_TOKENS), "mixtures": uni}, "preset demo", data),
             grid_from_dict({**base, "tokens": [2 * t for t in UNIMODAL_TOKENS], "mixtures": pairs}, "preset demo", data)]
    tokens = sorted({t for g in parts for t in g.tokens})
    return replace(parts[0], mixtures=base["mixtures"], tokens=tokens, runs=[r for g in parts for r in g.runs])


def demo_data_missing(data: str | Path) -> bool:
    """Whether the demo data root lacks its vocabulary or any of its seven datasets."""
    from ..shards import list_datasets

    root = Path(data)
    return not (root / "vocab.json").is_file() or not set(DEMO_DATASETS) <= set(list_datasets(root))


def ensure_demo_data(data: str | Path, on_progress=None) -> bool:
    """Build the demo data root unless it is complete; returns whether it built anything."""
    from ..tokenize import build_demo

    if not demo_data_missing(data):
        return False
    build_demo(Path(data), on_progress=on_progress)
    return True
