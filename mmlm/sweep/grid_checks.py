"""The checks of a grid file's parts (data root, sizes, budgets, mixtures, [train], branches, [slurm]);
each reports every problem through `bad(message)` and returns what it could read. `grid.grid_from_dict`
runs them in order."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..errors import MmlmError

SLURM_KEYS = {"partition", "gpus_per_run", "time_limit", "cpus_per_task", "mem"}
# TrainConfig fields the sweep sets itself, per run
SWEEP_SET = {"data", "size", "mix", "tokens", "out", "resume"}


def _check_data(root, bad):
    """The data root (as given and resolved), its datasets and its vocabulary size (None where unknown)."""
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
    return root, data_root, available, vocab_size


def _check_sizes(sizes, bad):
    """The grid's size names (named sizes and shapes, in order) and its shapes."""
    from ..model import SIZES

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
    return sizes, shapes


def _check_budgets(obj, bad):
    """(tokens, flops): exactly one of them a list of budgets."""
    tokens = flops = None
    if ("tokens" in obj) == ("flops" in obj):
        bad("give exactly one of 'tokens' (token budgets) or 'flops' (compute budgets)")
    elif "tokens" in obj:
        tokens = [int(round(t)) for t in _positive_list(obj["tokens"], "tokens", bad)]
    else:
        flops = _positive_list(obj["flops"], "flops", bad)
    return tokens, flops


def _check_mixtures(raw_mixes, available, data_root, bad) -> dict[str, dict[str, float]]:
    """{name: {dataset: weight}} of the grid's [mixtures.<name>] tables."""
    mixtures: dict[str, dict[str, float]] = {}
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
    return mixtures


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
