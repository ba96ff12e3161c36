"""Built-in studies: `--preset demo` (make demo, minutes) and `--preset cpu-study` (an hour), one code path.

A `Study` says which datasets are trained alone, which pairs are mixed 50/50, the model shapes, the
budgets in optimizer steps and the seeds; `study_grid` turns it into an ordinary `Grid`. Pair runs get
twice the uni-modal budgets, so every pair run at T tokens has uni-modal runs of both its datasets at
about T/2 (its per-dataset tokens) at the same size, which is what `mmlm fit` and `mmlm analyze`
compare it with.

How the demo was designed (measured on 2 shared cores; docs/demo.md has the numbers):
- vocabulary: a 512-token BPE for text and code (997 ids in all), so the output layer is not most of a
  CPU model's compute;
- sizes: custom shapes from 41k to 222k parameters, about evenly spaced in log N, all far below the
  old demo's 0.2M-1.1M (pico..micro with a 4,096 BPE), where losses hardly moved with N;
- budgets: 400, 800 and 1,600 optimizer steps of 512 tokens (at 100-200 steps the three smaller
  shapes had not left the unigram plateau; 1 to 20 tokens per parameter, so both N and D matter),
  warm-up 10% of each run (train's default); cpu-study keeps 100-400 steps of 1,024 tokens;
- peak learning rate 3e-3 for every shape, from a sweep at 800 steps of 512 tokens (train's default
  for custom shapes, fitted at 100 steps of 1,024, is 2-3x too high for the small shapes there);
- the stall rule is off: with 100-step runs and small batches the smoothed loss is noisy enough to
  "stall" and restart good runs;
- evaluation once, at the end, on up to 131,072 held-out tokens per dataset (65,536 in cpu-study).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import MmlmError
from ..modalities import KINDS
from .grid import Grid

DEMO_DATASETS = tuple(KINDS)  # the demo corpus holds one dataset per kind, named after it (mmlm.demo_build)


def _shape(n_layer: int, d_model: int, n_head: int) -> dict:
    return {"name": f"L{n_layer}d{d_model}", "n_layer": n_layer, "d_model": d_model, "n_head": n_head}


@dataclass(frozen=True)
class Study:
    unimodal: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    sizes: tuple[dict, ...]
    steps: tuple[int, ...]  # uni-modal budgets in optimizer steps; pairs get twice each
    seeds: tuple[int, ...] = (0,)
    pair_steps: tuple[int, ...] | None = None  # uni-modal budgets the pairs double (default: all of `steps`)
    train: dict = field(default_factory=dict)

    @property
    def batch_tokens(self) -> int:
        return int(self.train["batch_tokens"])


_TRAIN = {"seq_len": 128, "batch_tokens": 1024, "eval_tokens": 65536, "eval_every": 1_000_000, "ckpt_every": 100,
          "stall_tokens": 0.0}
# the demo: 4x the steps of 100-400 steps of 1,024 tokens at half the batch (the small shapes need steps to
# leave the unigram plateau), one peak LR for all shapes (3e-3 beat train's 1e-2/7e-3 default for the two
# smallest at 512-token batches by 0.4-0.5 nats), and every held-out token the splits hold (up to 131,072)
_DEMO_TRAIN = {**_TRAIN, "batch_tokens": 512, "lr": 3e-3, "eval_tokens": 131072, "ckpt_every": 400}

PRESETS: dict[str, Study] = {
    # make demo: three uni-modal laws (text, code, the captioned digits) and the text|code pair law
    "demo": Study(
        unimodal=("text", "code", "image-text"),
        pairs=(("text", "code"),),
        sizes=(_shape(2, 24, 2), _shape(2, 32, 2), _shape(2, 48, 3), _shape(3, 64, 4)),
        steps=(400, 800, 1600),
        pair_steps=(400, 800),
        train=dict(_DEMO_TRAIN),
    ),
    # all seven datasets alone, four of the paper's pairs, two seeds (a noise estimate), one size more
    "cpu-study": Study(
        unimodal=DEMO_DATASETS,
        pairs=(("text", "code"), ("text", "image"), ("speech", "text"), ("molecule", "text")),
        sizes=(_shape(2, 24, 2), _shape(2, 32, 2), _shape(2, 48, 3), _shape(3, 64, 4), _shape(4, 96, 4)),
        steps=(100, 200, 400),
        seeds=(0, 1),
        pair_steps=(100, 200),
        train=dict(_TRAIN),
    ),
}


def study_grid(study: Study, data: str | Path = "data/demo", source: str = "preset") -> Grid:
    """The study as one Grid: per seed, the uni-modal part and the pair part."""
    from .grid import grid_from_dict

    uni = {name: {name: 1.0} for name in study.unimodal}
    pairs = {f"{a}+{b}": {a: 0.5, b: 0.5} for a, b in study.pairs}
    b = study.batch_tokens
    uni_tokens = [s * b for s in study.steps]
    pair_tokens = [2 * s * b for s in (study.pair_steps or study.steps)]
    parts = []
    for seed in study.seeds:
        train = {**study.train, **({"seed": seed} if seed else {})}  # seed 0 is train's default: ids as without seeds
        base = {"sizes": [dict(s) for s in study.sizes], "train": train}
        parts.append(grid_from_dict({**base, "tokens": uni_tokens, "mixtures": uni}, source, data))
        if pairs:
            parts.append(grid_from_dict({**base, "tokens": pair_tokens, "mixtures": pairs}, source, data))
    runs = [r for g in parts for r in g.runs]
    tokens = sorted({t for g in parts for t in g.tokens})
    return replace(parts[0], mixtures={**uni, **pairs}, tokens=tokens, runs=runs, train=dict(study.train))


def preset_grid(name: str, data: str | Path = "data/demo") -> Grid:
    if name not in PRESETS:
        raise MmlmError(f"--preset {name!r}: unknown preset (known: {', '.join(PRESETS)})")
    return study_grid(PRESETS[name], data, source=f"preset {name}")


def demo_grid(data: str | Path = "data/demo") -> Grid:
    return preset_grid("demo", data)


def demo_data_missing(data: str | Path) -> bool:
    """Whether the demo data root lacks its vocabulary or any of its seven datasets."""
    from ..shards import list_datasets

    root = Path(data)
    return not (root / "vocab.json").is_file() or not set(DEMO_DATASETS) <= set(list_datasets(root))


def ensure_demo_data(data: str | Path, on_progress=None) -> bool:
    """Build the demo data root unless it is complete; returns whether it built anything."""
    from ..demo_build import build_demo

    if not demo_data_missing(data):
        return False
    build_demo(Path(data), on_progress=on_progress)
    return True
