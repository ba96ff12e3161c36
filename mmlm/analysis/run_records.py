"""Reading run folders: metrics.jsonl (strictly, errors name file:line), config.json, summary.json.

A run folder needs only metrics.jsonl; config.json and summary.json add model size, mixture and
batch size where present. A sweep folder holds its runs as DIR/runs/<run_id>/ (or DIR/<run_id>/).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MmlmError
from ..jsonio import loads

# Keys whose values must be numbers; everything else in a line is ignored.
_NUMERIC = ("tokens", "lr", "loss", "grad_norm")
_NUMERIC_PREFIXES = ("loss/", "eval/", "tokens/")


def _number(value, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MmlmError(f"{where}: '{key}' must be a number, got {json.dumps(value)[:40]}")
    return float(value)


@dataclass
class Metrics:
    """One run's metrics: a row per logged step, columns of floats with a presence mask."""

    path: Path
    steps: np.ndarray  # int64 [n], strictly increasing
    values: dict[str, np.ndarray]  # key -> float64 [n]
    present: dict[str, np.ndarray]  # key -> bool [n]: the key was logged at that step

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the rows where `key` was logged."""
        if key not in self.values:
            return np.zeros(0, np.int64), np.zeros(0)
        m = self.present[key]
        return self.steps[m], self.values[key][m]

    def _names(self, prefix: str) -> list[str]:
        return [k[len(prefix):] for k in self.values if k.startswith(prefix)]

    @property
    def datasets(self) -> list[str]:
        """Datasets with a training loss (`loss/<dataset>`), in the order they first appear."""
        return self._names("loss/")

    @property
    def eval_datasets(self) -> list[str]:
        return self._names("eval/")


def read_metrics(path: str | Path) -> Metrics:
    """Parse metrics.jsonl.

    Every line is a JSON object with an integer `step`; known keys must hold numbers (null counts
    as not logged). Lines with the same step are merged (an eval line after a train line). A step
    lower than the one before means the run was resumed from an earlier checkpoint: the rows it
    re-logs replace the earlier ones from that step on. A last line cut short without its newline
    (a run killed mid-write) is ignored; any other malformed line is an error naming file:line.
    """
    path = Path(path)
    if not path.is_file():
        raise MmlmError(f"{path}: no such file (a run folder holds metrics.jsonl)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MmlmError(f"{path}: unreadable ({e})") from None
    lines = text.split("\n")
    rows: list[tuple[int, dict[str, float]]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = loads(line)
        except ValueError as e:
            if lineno == len(lines):  # no newline after it: an interrupted write
                continue
            raise MmlmError(f"{where}: malformed metrics line ({e})") from None
        if not isinstance(obj, dict):
            raise MmlmError(f"{where}: malformed metrics line (not a JSON object)")
        if "step" not in obj:
            raise MmlmError(f"{where}: malformed metrics line (no 'step')")
        step = _number(obj["step"], "step", where)
        if step < 0 or step != int(step):
            raise MmlmError(f"{where}: 'step' must be a non-negative integer, got {obj['step']}")
        row = {}
        for key, value in obj.items():
            if key in _NUMERIC or key.startswith(_NUMERIC_PREFIXES):
                if value is not None:
                    row[key] = _number(value, key, where)
        step = int(step)
        while rows and rows[-1][0] > step:
            rows.pop()
        if rows and rows[-1][0] == step:
            rows[-1][1].update(row)
        else:
            rows.append((step, row))
    if not rows:
        raise MmlmError(f"{path}: no metrics (the file is empty)")
    n = len(rows)
    keys = list(dict.fromkeys(k for _, r in rows for k in r))
    values = {k: np.full(n, np.nan) for k in keys}
    present = {k: np.zeros(n, bool) for k in keys}
    for i, (_, r) in enumerate(rows):
        for k, v in r.items():
            values[k][i] = v
            present[k][i] = True
    return Metrics(path, np.array([s for s, _ in rows], np.int64), values, present)


def read_json_or_empty(path: Path) -> dict:
    """A JSON object file, or {} when there is none (config.json and summary.json are optional here)."""
    if not path.is_file():
        return {}
    try:
        obj = loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise MmlmError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise MmlmError(f"{path}: expected a JSON object")
    return obj


def find_setting(config: dict, key: str):
    """A setting from a run's config.json: its top level first, then one level down (`mmlm train`
    keeps its options under "train" and the resolved values under "resolved"); None stays unset."""
    if config.get(key) is not None:
        return config[key]
    for v in config.values():
        if isinstance(v, dict) and v.get(key) is not None:
            return v[key]
    return None


@dataclass
class RunRecord:
    """A run folder: its metrics and whatever config.json / summary.json say about it."""

    id: str
    path: Path
    metrics: Metrics
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    def setting(self, key: str):
        """A training setting from config.json (see `find_setting`), else from summary.json."""
        value = find_setting(self.config, key)
        return value if value is not None else self.summary.get(key)

    @property
    def datasets(self) -> list[str]:
        return self.metrics.datasets or self.metrics.eval_datasets or list(self.mix)

    @property
    def pair(self) -> tuple[str, str] | None:
        ds = self.datasets
        return (ds[0], ds[1]) if len(ds) == 2 else None

    @property
    def mix(self) -> dict[str, float]:
        """Token shares by dataset (normalised); equal shares when no config says otherwise."""
        mix = self.setting("mix")
        if isinstance(mix, dict) and mix and all(isinstance(v, (int, float)) for v in mix.values()):
            total = float(sum(mix.values()))
            if total > 0:
                return {str(k): float(v) / total for k, v in mix.items()}
        ds = self.metrics.datasets
        return {d: 1.0 / len(ds) for d in ds} if ds else {}

    @property
    def n_params(self) -> int | None:
        n = self.summary.get("n_params", self.config.get("n_params"))
        return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None

    @property
    def size(self) -> str | None:
        s = self.setting("size")
        return str(s) if s is not None else None

    @property
    def batch_tokens(self) -> int | None:
        b = self.setting("batch_tokens")
        return int(b) if isinstance(b, (int, float)) and not isinstance(b, bool) else None

    @property
    def final_eval(self) -> dict[str, float]:
        """Final held-out loss per dataset: summary.json's eval_loss, else the last eval/<d> logged."""
        ev = self.summary.get("eval_loss")
        if isinstance(ev, dict) and ev:
            return {str(k): float(v) for k, v in ev.items() if isinstance(v, (int, float))}
        out = {}
        for d in self.metrics.eval_datasets:
            _, v = self.metrics.series(f"eval/{d}")
            if v.size and math.isfinite(v[-1]):
                out[d] = float(v[-1])
        return out


def read_run(path: str | Path, run_id: str | None = None) -> RunRecord:
    """The record of one run folder: metrics.jsonl (required), config.json and summary.json (where present)."""
    path = Path(path)
    return RunRecord(
        id=run_id or path.resolve().name,
        path=path,
        metrics=read_metrics(path / "metrics.jsonl"),
        config=read_json_or_empty(path / "config.json"),
        summary=read_json_or_empty(path / "summary.json"),
    )


def find_run_dirs(path: str | Path) -> list[Path]:
    """PATH itself when it holds metrics.jsonl, else its runs: PATH/runs/<id>/ or PATH/<id>/."""
    path = Path(path)
    if not path.is_dir():
        raise MmlmError(f"{path}: no such folder")
    if (path / "metrics.jsonl").is_file():
        return [path]
    base = path / "runs" if (path / "runs").is_dir() else path
    dirs = sorted(p for p in base.iterdir() if p.is_dir() and (p / "metrics.jsonl").is_file())
    if not dirs:
        raise MmlmError(f"{path}: no metrics.jsonl here, nor in {base}/<run>/ (not a run or sweep folder)")
    return dirs
