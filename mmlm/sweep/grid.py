"""Grid files: sizes x budgets x mixtures, checked in full before anything runs.

    data = "data/demo"                 # data root from `mmlm tokenize` (relative to the current folder)
    sizes = ["nano", "micro"]          # named sizes, or custom shapes: {name = "w32", n_layer = 2, d_model = 32, n_head = 2}
    tokens = [1e5, 3e5]                # token budgets ... or: flops = [1e12, 3e12] (IsoFLOP, tokens = C / (6 N))
    [mixtures."text+code"]
    text = 0.5
    code = 0.5
    [train]                            # any `mmlm train` option, underscores for dashes
    seq_len = 128
    [slurm]                            # optional, for --launcher slurm
    partition = "gpu"

Every (size, budget, mixture) is one `RunSpec` whose id is derived from the settings that change the
result, so the same grid always names the same runs and an edited grid names new ones.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MmlmError
from .grid_checks import (SWEEP_SET, _check_branch, _check_budgets, _check_data, _check_mixtures, _check_sizes,
                          _check_slurm, _check_train, slurm_params)

__all__ = ["Grid", "GridError", "RunSpec", "grid_from_dict", "load_grid", "parse_grid", "run_id", "slurm_params"]

GRID_KEYS = {"data", "sizes", "tokens", "flops", "mixtures", "train", "slurm", "schedule", "branch"}
# TrainConfig fields that say where or how a run executes, not what it computes (train lets them
# change when a run is resumed): left out of run ids, so moving a sweep to a GPU keeps its runs
NOT_IN_ID = SWEEP_SET | {"device", "threads", "attention", "eval_every", "ckpt_every", "max_restarts", "micro_batch",
                         "nproc", "fsdp", "keep_steps", "branch_from", "peak_flops", "compile", "tensorboard",
                         "tensorboard_dir", "activation_checkpointing"}


class GridError(MmlmError):
    """Every problem found in a grid, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class RunSpec:
    """One run of a sweep: everything `train()` needs besides where the run folder is."""

    id: str
    size: str
    mixture: str
    mix: dict[str, float]
    tokens: int
    n_params: int  # the N of flops = 6 N D, as train counts it
    data: str = ""  # absolute data root
    flops_budget: float | None = None  # set for IsoFLOP grids
    train: dict[str, Any] = field(default_factory=dict)
    branch_of: str | None = None  # a cooldown branch (branch = true): the trunk run it starts from ...
    branch_step: int | None = None  # ... at this update
    start_tokens: int = 0  # tokens the run inherits from its trunk (not trained again)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "RunSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})


@dataclass
class Grid:
    data: Path
    sizes: list[str]
    mixtures: dict[str, dict[str, float]]
    shapes: dict[str, dict[str, int]] = field(default_factory=dict)  # custom sizes: name -> n_layer, d_model, n_head
    tokens: list[int] | None = None
    flops: list[float] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    branch: bool = False
    source: str = "grid"
    runs: list[RunSpec] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        """Every dataset some mixture draws from, sorted."""
        return sorted({name for mix in self.mixtures.values() for name in mix})


def load_grid(path: str | Path, data: str | Path | None = None) -> Grid:
    """Read and check a grid file; `data` overrides its data root."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MmlmError(f"{path}: cannot read grid file ({e.strerror if isinstance(e, OSError) else e})") from None
    return parse_grid(text, source=str(path), data=data)


def parse_grid(text: str, source: str = "grid", data: str | Path | None = None) -> Grid:
    try:
        obj = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))  # else "(at end of document)"
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
        raise GridError([f"{source}:{line}: invalid TOML: {msg}"]) from None
    return grid_from_dict(obj, source=source, data=data)


def grid_from_dict(obj: dict, source: str = "grid", data: str | Path | None = None) -> Grid:
    """Check a parsed grid against the data root, the model sizes and train's options; expand its runs.

    Raises GridError listing every problem (one line each, prefixed with `source`).
    """
    problems: list[str] = []

    def bad(msg: str) -> None:
        problems.append(f"{source}: {msg}")

    for key in sorted(set(obj) - GRID_KEYS):
        bad(f"unknown key '{key}' (expected {', '.join(sorted(GRID_KEYS))})")

    root, data_root, available, vocab_size = _check_data(data if data is not None else obj.get("data"), bad)
    sizes, shapes = _check_sizes(obj.get("sizes"), bad)
    tokens, flops = _check_budgets(obj, bad)
    mixtures = _check_mixtures(obj.get("mixtures"), available, data_root, bad)

    # train options; a top-level schedule is train's --schedule
    train_opts = _check_train(obj.get("train", {}), bad)
    branch = _check_branch(obj, train_opts, bad)
    slurm = _check_slurm(obj.get("slurm", {}), bad)

    grid = Grid(
        data=data_root or Path(str(root)),
        sizes=sizes,
        mixtures=mixtures,
        shapes=shapes,
        tokens=tokens,
        flops=flops,
        train=train_opts,
        slurm=slurm,
        branch=branch,
        source=source,
    )
    if not problems and vocab_size is not None:
        grid.runs = _expand(grid, vocab_size, bad)
    if problems:
        raise GridError(problems)
    return grid


def _expand(grid: Grid, vocab_size: int, bad) -> list[RunSpec]:
    """One RunSpec per (size, budget, mixture), each checked by train's own `resolve` (so the grid fails
    now, not hours into the sweep); budgets too small for one optimizer step are problems."""
    import torch

    from ..model import count_params, model_config
    from ..train import TrainConfig, resolve

    runs: dict[str, RunSpec] = {}
    reported: set[str] = set()
    for size in grid.sizes:
        shape = grid.shapes.get(size)  # a custom shape travels in the run's train options (and so in its id)
        train = {**grid.train, **shape} if shape else dict(grid.train)
        model = model_config(size, vocab_size, grid.train.get("seq_len"), shape=tuple(shape.values()) if shape else None)
        n_params = count_params(model)["n_params"]
        # the step size train will use for this size (tokens set huge so only the options are checked)
        opts = {**train, "attention": "sdpa", "device": "cpu"}
        try:
            res = resolve(TrainConfig(**opts, size=size, tokens=1e18), model.seq_len, vocab_size, 1, torch.device("cpu"))
        except MmlmError as e:
            if str(e) not in reported:
                reported.add(str(e))
                bad(f"train: {e}")
            continue
        budgets = [(t, None) for t in grid.tokens] if grid.tokens else [(int(c // (6 * n_params)), c) for c in grid.flops]
        for tokens, c in budgets:
            for mname, mix in grid.mixtures.items():
                if tokens < res.batch_tokens:
                    what = f"{_short(c)} FLOPs ({tokens} tokens)" if c else f"{tokens} tokens"
                    bad(f"{size} x {mname} x {what}: budget is smaller than one optimizer step "
                        f"(batch_tokens = {res.batch_tokens})")
                    continue
                rid = run_id(size, mname, mix, tokens, train)
                runs[rid] = RunSpec(rid, size, mname, mix, tokens, n_params, str(grid.data), c, dict(train))
    if grid.branch:
        from .branch import branch_runs

        return branch_runs(grid, vocab_size, list(runs.values()))
    return list(runs.values())


def run_id(size: str, mixture: str, mix: dict[str, float], tokens: int, train: dict) -> str:
    """`<size>-<mixture>-<tokens>-<hash>`: readable, and the hash of the canonical settings keeps it unique."""
    total = sum(mix.values())
    settings = {
        "size": size,
        "mix": {k: round(v / total, 12) for k, v in sorted(mix.items())},
        "tokens": int(tokens),
        "train": {k: v for k, v in sorted(train.items()) if k not in NOT_IN_ID},
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9+._=-]+", "_", mixture).strip("_") or "mix"
    return f"{size}-{name}-{_short(tokens)}-{digest}"


def _short(x: float) -> str:
    """Exact and short: 100000 -> '100k', 3e6 -> '3M', 16384 -> '16384', 3e12 -> '3T'."""
    for unit, scale in (("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if x >= scale and float(x) % scale == 0:
            return f"{int(x // scale)}{unit}"
    return f"{x:.4g}" if float(x) != int(x) else str(int(x))
