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
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MmlmError

GRID_KEYS = {"data", "sizes", "tokens", "flops", "mixtures", "train", "slurm", "schedule", "branch"}
SLURM_KEYS = {"partition", "gpus_per_run", "time_limit", "cpus_per_task", "mem"}
# TrainConfig fields the sweep sets itself, per run
SWEEP_SET = {"data", "size", "mix", "tokens", "out", "resume"}
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

    # data root
    root = data if data is not None else obj.get("data")
    data_root: Path | None = None
    if root is None:
        bad("'data' is missing (the data root written by `mmlm tokenize`)")
    elif not isinstance(root, (str, Path)):
        bad(f"data: expected a folder name, got {root!r}")
    else:
        data_root = Path(root).expanduser().resolve()
        if not data_root.is_dir():
            bad(f"data: data root {root} does not exist")
            data_root = None
    available = _datasets_in(data_root) if data_root else None
    vocab_size = _vocab_size(data_root, bad) if data_root else None

    # sizes
    from ..model import SIZES

    sizes = obj.get("sizes")
    if not isinstance(sizes, list) or not sizes or not all(isinstance(s, (str, dict)) for s in sizes):
        bad(f"sizes: expected a non-empty list of size names ({', '.join(SIZES)}) or shapes "
            "{name, n_layer, d_model, n_head}")
        sizes = []
    shapes = _check_shapes([s for s in sizes if isinstance(s, dict)], bad)
    for s in sizes:
        if isinstance(s, str) and s not in SIZES:
            bad(f"sizes: unknown size '{s}' (known: {', '.join(SIZES)}; or a shape {{name, n_layer, d_model, n_head}})")
    names = [s if isinstance(s, str) else s.get("name") for s in sizes]
    sizes = list(dict.fromkeys(n for n in names if n in SIZES or n in shapes))

    # budgets: exactly one of tokens / flops
    tokens = flops = None
    if ("tokens" in obj) == ("flops" in obj):
        bad("give exactly one of 'tokens' (token budgets) or 'flops' (compute budgets)")
    elif "tokens" in obj:
        tokens = [int(round(t)) for t in _positive_list(obj["tokens"], "tokens", bad)]
    else:
        flops = _positive_list(obj["flops"], "flops", bad)

    # mixtures
    mixtures: dict[str, dict[str, float]] = {}
    raw_mixes = obj.get("mixtures")
    if not isinstance(raw_mixes, dict) or not raw_mixes:
        bad("mixtures: expected at least one [mixtures.<name>] table of dataset = weight")
        raw_mixes = {}
    for name, mix in raw_mixes.items():
        where = f"mixtures.{_toml_key(name)}"
        if not isinstance(mix, dict) or not mix:
            bad(f"{where}: expected a table of dataset = weight")
            continue
        ok = True
        for ds, w in mix.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
                bad(f"{where}: weight of '{ds}' must be a positive number, got {w!r}")
                ok = False
            if available is not None and ds not in available:
                bad(f"{where}: unknown dataset '{ds}' (not in {data_root}; has: {', '.join(available) or 'none'})")
                ok = False
        if ok:
            mixtures[str(name)] = {str(ds): float(w) for ds, w in mix.items()}

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
            plan = resolve(TrainConfig(**opts, size=size, tokens=1e18), model.seq_len, vocab_size, 1, torch.device("cpu"))
        except MmlmError as e:
            if str(e) not in reported:
                reported.add(str(e))
                bad(f"train: {e}")
            continue
        budgets = [(t, None) for t in grid.tokens] if grid.tokens else [(int(c // (6 * n_params)), c) for c in grid.flops]
        for tokens, c in budgets:
            for mname, mix in grid.mixtures.items():
                if tokens < plan.batch_tokens:
                    what = f"{_short(c)} FLOPs ({tokens} tokens)" if c else f"{tokens} tokens"
                    bad(f"{size} x {mname} x {what}: budget is smaller than one optimizer step "
                        f"(batch_tokens = {plan.batch_tokens})")
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


def _check_shapes(entries: list[dict], bad) -> dict[str, dict[str, int]]:
    """Custom sizes of the grid: {name: {"n_layer", "d_model", "n_head"}}; every problem goes to `bad`."""
    from ..model import SHAPE_KEYS, SIZES, check_shape, shape_name

    shapes: dict[str, dict[str, int]] = {}
    for e in entries:
        extra = sorted(set(e) - {"name", *SHAPE_KEYS})
        if extra:
            bad(f"sizes: shape {e!r}: unknown key '{extra[0]}' (expected name, {', '.join(SHAPE_KEYS)})")
            continue
        try:
            shape = check_shape(*(e.get(k) for k in SHAPE_KEYS), where=f"sizes: shape {e!r}: ")
        except MmlmError as err:
            bad(str(err).replace("--n-layer, --d-model, --n-head", "n_layer, d_model, n_head"))
            continue
        if shape is None:
            bad(f"sizes: shape {e!r}: needs n_layer, d_model and n_head")
            continue
        name = e.setdefault("name", shape_name(*shape))
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._]+", name):
            bad(f"sizes: shape name {name!r}: use letters, digits, '.' and '_' only")
        elif name in SIZES:
            bad(f"sizes: shape name '{name}' is a named size; give the shape another name")
        elif name in shapes and tuple(shapes[name].values()) != shape:
            bad(f"sizes: shape name '{name}' is given twice with different shapes")
        else:
            shapes[name] = dict(zip(SHAPE_KEYS, shape))
    return shapes


def _positive_list(value, key: str, bad) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        bad(f"{key}: expected a non-empty list of positive numbers")
        return []
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            bad(f"{key}: {v!r} is not a positive number")
        else:
            out.append(float(v))
    return list(dict.fromkeys(out))


def _check_train(opts, bad) -> dict:
    """[train] keys must be `mmlm train` options the sweep does not set itself, with values of their type."""
    from ..train import option_kinds

    if not isinstance(opts, dict):
        bad("train: expected a table of `mmlm train` options")
        return {}
    fields = option_kinds()
    out = {}
    for key, value in opts.items():
        if key in ("n_layer", "d_model", "n_head"):
            bad(f"train.{key}: a model shape belongs in 'sizes' (e.g. {{name = \"w32\", n_layer = 2, d_model = 32, n_head = 2}})")
        elif key in SWEEP_SET:
            instead = {"size": "sizes", "mix": "mixtures", "tokens": "tokens / flops"}.get(key)
            bad(f"train.{key}: set by the sweep for each run" + (f"; use the grid's '{instead}'" if instead else ""))
        elif key not in fields:
            close = [k for k in fields if k.replace("_", "") == key.replace("_", "").replace("-", "")]
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            bad(f"train.{key}: not an `mmlm train` option{hint}")
        else:
            kind, optional = fields[key]
            kinds = [kind.__name__] + (["None"] if optional else [])
            coerced = _coerce(value, kinds)
            if coerced is _BAD:
                bad(f"train.{key}: expected {' or '.join(k for k in kinds if k != 'None')}, got {value!r}")
            else:
                out[key] = coerced
    return out


_BAD = object()


def _coerce(value, kinds: list[str]):
    """`value` as one of the annotated types ("int", "float", "str", "bool"), or _BAD."""
    if isinstance(value, bool):
        return value if "bool" in kinds else _BAD
    if isinstance(value, int) and "int" in kinds:
        return value
    if isinstance(value, float) and "int" in kinds and "float" not in kinds and value.is_integer():
        return int(value)
    if isinstance(value, (int, float)) and "float" in kinds:
        return float(value)
    if isinstance(value, str) and "str" in kinds:
        return value
    return _BAD


def _check_branch(obj: dict, train_opts: dict, bad) -> bool:
    """`schedule = "wsd"` (same as train.schedule) and `branch = true` (cooldown branches, WSD only)."""
    if "schedule" in obj:
        from ..schedule import SCHEDULES

        if obj["schedule"] not in SCHEDULES:
            bad(f"schedule: {obj['schedule']!r} is not a schedule (choose from {', '.join(SCHEDULES)})")
        elif "schedule" in train_opts and train_opts["schedule"] != obj["schedule"]:
            bad(f"schedule: {obj['schedule']!r} disagrees with train.schedule {train_opts['schedule']!r}")
        else:
            train_opts["schedule"] = obj["schedule"]
    branch = obj.get("branch", False)
    if not isinstance(branch, bool):
        bad(f"branch: expected true or false, got {branch!r}")
        return False
    if branch and train_opts.get("schedule") != "wsd":
        bad('branch = true: cooldown branches need schedule = "wsd"')
    for key in ("keep_steps", "branch_from"):
        if key in train_opts:
            bad(f"train.{key}: set by the sweep for branched grids (branch = true)")
    return branch


def _check_slurm(opts, bad) -> dict:
    if not isinstance(opts, dict):
        bad("slurm: expected a table (partition, gpus_per_run, time_limit, cpus_per_task, mem)")
        return {}
    for key in sorted(set(opts) - SLURM_KEYS):
        bad(f"slurm.{key}: unknown option (expected {', '.join(sorted(SLURM_KEYS))})")
    out = {}
    for key in sorted(set(opts) & SLURM_KEYS):  # one at a time, to report every bad value
        try:
            out.update(slurm_params({key: opts[key]}))
        except MmlmError as e:
            bad(str(e))
    return out


def slurm_params(opts: dict, prefix: str = "slurm.") -> dict:
    """Check and normalise SLURM options: time_limit in minutes (or "H:MM:SS"), mem in GB (or "16G").

    `prefix` names the options in messages: "slurm." for a grid's table, "--" for command-line options."""
    out = {}
    for key, value in opts.items():
        name = prefix + (key.replace("_", "-") if prefix == "--" else key)
        if value is None:
            continue
        if key == "partition":
            if not isinstance(value, str) or not value:
                raise MmlmError(f"{name}: expected a partition name, got {value!r}")
            out[key] = value
        elif key == "time_limit":
            out[key] = _minutes(value, name)
        elif key == "mem":
            out[key] = _gigabytes(value, name)
        else:  # gpus_per_run, cpus_per_task
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "gpus_per_run" else 1):
                raise MmlmError(f"{name}: expected a whole number, got {value!r}")
            out[key] = value
    return out


def _minutes(value, name: str) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(math.ceil(value))
    text = str(value).strip()
    if re.fullmatch(r"\d+", text) and int(text) > 0:
        return int(text)
    if isinstance(value, str) and re.fullmatch(r"(\d+-)?\d+(:\d+){1,2}", text):
        days, _, hms = text.rpartition("-")
        parts = [int(p) for p in hms.split(":")]
        if len(parts) == 2:  # H:MM
            parts.append(0)
        h, m, s = parts
        return max(1, (int(days or 0) * 24 + h) * 60 + m + math.ceil(s / 60))
    raise MmlmError(f"{name}: expected minutes or 'H:MM:SS', got {value!r}")


def _gigabytes(value, name: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([MGT]?)B?\s*", str(value), re.IGNORECASE)
    if m and float(m.group(1)) > 0:
        return float(m.group(1)) * {"": 1, "M": 1 / 1024, "G": 1, "T": 1024}[m.group(2).upper()]
    raise MmlmError(f"{name}: expected gigabytes or e.g. '16G', got {value!r}")


def _datasets_in(root: Path) -> list[str]:
    from ..shards import list_datasets

    return list_datasets(root)


def _vocab_size(root: Path, bad) -> int | None:
    from ..vocab import Vocab

    try:
        return Vocab.load(root / "vocab.json").size
    except MmlmError as e:
        bad(f"data: {e}")
        return None


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
