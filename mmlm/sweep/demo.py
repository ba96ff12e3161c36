"""Built-in studies: `--preset demo` (make demo, minutes) and `--preset cpu-study` (an hour), one code path.

A `Study` says which datasets are trained alone, which pairs are mixed 50/50, the model shapes, the
budgets in optimizer steps and the seeds; `study_grid` turns it into an ordinary `Grid`. Pair runs get
twice the uni-modal budgets, so every pair run at T tokens has uni-modal runs of both its datasets at
about T/2 (its per-dataset tokens) at the same size, which is what `mmlm fit` and `mmlm analyze`
compare it with.

How the demo was designed (measured on 2 shared cores; docs/demo.md has the numbers):
- vocabulary: a 512-token BPE for text and code (997 ids in all), so the output layer is not most of a
  CPU model's compute;
- sizes: custom shapes from 41k to 222k parameters, about evenly spaced in log N;
- budgets: 400, 800 and 1,600 optimizer steps of 512 tokens (1 to 20 tokens per parameter, so both N
  and D matter), warm-up 10% of each run (train's default), train's default peak LR for custom shapes;
  with the width-scaled initialisation (model.init_std) every shape leaves the unigram plateau within
  the first 100 steps on text and molecules;
- datasets: text and molecules have laws that are identified at these budgets and predict the held-out
  size within 1.5%; code (still on its plateau at 400 steps) and the captioned digits (loss still falling
  faster with each doubling of D, so E is not identified) are not, so the demo fits text, molecule and
  their pair, and trains the digits model outside the laws; cpu-study fits all seven and says which
  are not identified;
- the stall rule is off: with small batches the smoothed loss is noisy enough to "stall" good runs;
- evaluation once, at the end, on up to 131,072 held-out tokens per dataset.
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
    seeds: tuple[int, ...] = (0,)  # of the uni-modal runs (repeats give the noise estimate)
    pair_seeds: tuple[int, ...] = (0,)
    pair_steps: tuple[int, ...] | None = None  # uni-modal budgets the pairs double (default: all of `steps`)
    train: dict = field(default_factory=dict)
    # the model `mmlm analyze digits` draws from: one image-text run (shape, steps), outside the laws
    digits: tuple[dict, int] | None = None

    @property
    def batch_tokens(self) -> int:
        return int(self.train["batch_tokens"])


_TRAIN = {"seq_len": 128, "batch_tokens": 512, "eval_tokens": 131072, "eval_every": 1_000_000, "ckpt_every": 400,
          "stall_tokens": 0.0}
_SIZES = (_shape(2, 24, 2), _shape(2, 32, 2), _shape(2, 48, 3), _shape(3, 64, 4))
# the digits model: 18% of 60 digits drawn from captions right at L4d96 x 3,200 steps, 15% at L3d64 (docs/demo.md);
# cpu-study's is at its largest law size, so that `--holdout largest` holds it out with that size
_DIGITS = (_shape(4, 96, 4), 3200)

PRESETS: dict[str, Study] = {
    # make demo: the text and molecule laws, their pair law, and the digits model
    "demo": Study(
        unimodal=("text", "molecule"),
        pairs=(("text", "molecule"),),
        sizes=_SIZES,
        steps=(400, 800, 1600),
        digits=_DIGITS,
        train=dict(_TRAIN),
    ),
    # all seven datasets alone with two seeds (a noise estimate), four of the paper's pairs
    "cpu-study": Study(
        unimodal=DEMO_DATASETS,
        pairs=(("text", "code"), ("text", "image"), ("speech", "text"), ("molecule", "text")),
        sizes=_SIZES,
        steps=(400, 800, 1600),
        seeds=(0, 1),
        digits=(_shape(3, 64, 4), 6400),
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
        if pairs and seed in study.pair_seeds:
            parts.append(grid_from_dict({**base, "tokens": pair_tokens, "mixtures": pairs}, source, data))
    mixtures = {**uni, **pairs}
    if study.digits:
        shape, steps = study.digits
        mixtures["image-text"] = {"image-text": 1.0}
        parts.append(grid_from_dict({"sizes": [dict(shape)], "train": dict(study.train), "tokens": [steps * b],
                                     "mixtures": {"image-text": mixtures["image-text"]}}, source, data))
    runs = [r for g in parts for r in g.runs]
    tokens = sorted({t for g in parts for t in g.tokens})
    return replace(parts[0], mixtures=mixtures, tokens=tokens, runs=runs, train=dict(study.train))


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
