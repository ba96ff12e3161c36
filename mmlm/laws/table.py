"""Reading a results table (CSV) and picking the points of each law from it.

Two kinds of table:
- the `results.csv` of `mmlm sweep`: one row per (run, eval dataset) with run_id, n_params,
  eval_dataset, loss and tokens_<dataset> (tokens the run trained on from each dataset);
- any CSV with N, D (or FLOPs, D = C / 6N) and loss columns, named by option; optionally a dataset
  column (a table without one is one dataset, "default") and a mixture column ("a+b", "a|b" or "a,b"),
  whose per-dataset tokens come from tokens_<name> columns, else D split evenly.

Every row becomes a `Record` of what the run trained on (tokens per dataset) and one eval loss. The
uni-modal law of X takes runs trained on X alone, evaluated on X, with D = their X tokens. The
bi-modal law of (i, j) takes runs trained on exactly i and j, with the mean of their eval losses on
i and j, Di = tokens of i, Dj = tokens of j.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mmlm.errors import MmlmError

DEFAULT_DATASET = "default"
N_GUESSES = ("N", "n", "n_params", "params", "Model Size", "model_size")
D_GUESSES = ("D", "d", "tokens", "n_tokens", "Tokens")
SWEEP_COLUMNS = ("run_id", "n_params", "eval_dataset", "loss")


@dataclass
class Record:
    line: int  # line in the CSV file (the header is line 1)
    run: str  # rows of one run share this (the two eval losses of a mixed run)
    n: float
    dataset: str  # what the loss was measured on
    loss: float
    tokens: dict[str, float]  # what the run trained on: dataset -> tokens (only > 0)
    unique: float = 0.0  # unique tokens U_D of a repeated-data run (--unique-col; 0: not given)
    group: str = ""  # the --group-col value(s) of the row, joined by "/" ("" without the option)


@dataclass
class Table:
    path: str
    records: list[Record] = field(default_factory=list)
    duplicates: int = 0  # data rows identical to an earlier row (each still counts as a point)

    @property
    def has_unique(self) -> bool:
        return bool(self.records) and all(r.unique > 0 for r in self.records)

    def unique_tokens(self, name: str) -> np.ndarray:
        """U_D of the runs trained on `name` alone, in the order of unimodal_points."""
        return np.array([r.unique for r in self.records if r.dataset == name and set(r.tokens) == {name}], dtype=float)

    def groups(self) -> dict[str, list[Record]]:
        """Uni-modal records by group: the --group-col value, prefixed by the dataset when there are several."""
        uni = [r for r in self.records if set(r.tokens) == {r.dataset}]
        several = len({r.dataset for r in uni}) > 1
        out: dict[str, list[Record]] = {}
        for r in uni:
            key = "/".join(x for x in ((r.dataset if several or not r.group else ""), r.group) if x)
            out.setdefault(key, []).append(r)
        return out

    def only(self, names: list[str]) -> "Table":
        """The rows of runs trained and evaluated on these datasets only (`mmlm fit --datasets`)."""
        if not names:
            raise MmlmError("--datasets names no dataset")
        known = {r.dataset for r in self.records} | {d for r in self.records for d in r.tokens}
        missing = [n for n in names if n not in known]
        if missing:
            raise MmlmError(f"--datasets: {', '.join(missing)} not in {self.path} (it has: {', '.join(sorted(known))})")
        keep = set(names)
        return replace(self, records=[r for r in self.records if r.dataset in keep and set(r.tokens) <= keep])

    def unimodal_names(self) -> list[str]:
        """Datasets with runs trained on them alone (and evaluated on them)."""
        return sorted({r.dataset for r in self.records if set(r.tokens) == {r.dataset}})

    def pairs(self) -> list[tuple[str, str]]:
        """Pairs of datasets that some run trained on together (exactly those two)."""
        return sorted({tuple(sorted(r.tokens)) for r in self.records if len(r.tokens) == 2})

    def unimodal_points(self, name: str):
        """N, D, loss, lines of the runs trained on `name` alone."""
        rs = [r for r in self.records if r.dataset == name and set(r.tokens) == {name}]
        return _arrays(rs, lambda r: (r.n, r.tokens[name], r.loss))

    def bimodal_points(self, i: str, j: str):
        """N, Di, Dj, mean loss on i and j, lines: one entry per run trained on exactly i and j."""
        runs: dict[str, dict[str, Record]] = {}
        for r in self.records:
            if set(r.tokens) == {i, j} and r.dataset in (i, j):
                seen = runs.setdefault(r.run, {})
                if r.dataset in seen:
                    raise MmlmError(f"{self.path} line {r.line}: run {r.run} has a second {r.dataset} loss "
                                    f"(first on line {seen[r.dataset].line})")
                seen[r.dataset] = r
        out = []
        for run, by in runs.items():
            missing = {i, j} - set(by)
            if missing:
                r = next(iter(by.values()))
                raise MmlmError(f"{self.path} line {r.line}: run {run} trained on {i}+{j} has no "
                                f"eval loss on {missing.pop()}")
            ri, rj = by[i], by[j]
            out.append((ri.n, ri.tokens[i], ri.tokens[j], 0.5 * (ri.loss + rj.loss), min(ri.line, rj.line)))
        out.sort(key=lambda t: t[-1])
        if not out:
            return tuple(np.zeros(0) for _ in range(4)) + ([],)
        cols = list(zip(*out))
        return tuple(np.array(c, dtype=float) for c in cols[:4]) + (list(cols[4]),)


def _arrays(rs: list[Record], get):
    vals = [get(r) for r in rs]
    cols = list(zip(*vals)) if vals else [(), (), ()]
    return tuple(np.array(c, dtype=float) for c in cols) + ([r.line for r in rs],)


def _number(path, line: int, col: str, text: str, positive: bool = True) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        need = "a finite positive number" if positive else "a finite number >= 0"
        raise MmlmError(f"{path} line {line}: {col} is {text!r} (needs {need})")
    return v


def _pick(path, header: list[str], given: str | None, guesses, what: str, option: str) -> str:
    if given is not None:
        if given not in header:
            raise MmlmError(f"{path}: missing column {given!r} ({option}); columns are: {', '.join(header)}")
        return given
    for g in guesses:
        if g in header:
            return g
    raise MmlmError(f"{path}: no {what} column (tried {', '.join(repr(g) for g in guesses)}); "
                    f"name it with {option}; columns are: {', '.join(header)}")


def _split_mixture(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[+|,]", text) if p.strip()]


def read_table(
    path: str | Path, n_col: str | None = None, d_col: str | None = None, flops_col: str | None = None,
    loss_col: str | None = None, dataset_col: str | None = None, mixture_col: str | None = None,
    unique_col: str | None = None, group_col: str | None = None,
) -> Table:
    """Read a results CSV into records (see the module doc). Every problem is one MmlmError line."""
    path = Path(path)
    if path.is_dir():
        hint = f" (e.g. {path / 'results.csv'})" if (path / "results.csv").is_file() else ""
        raise MmlmError(f"{path}: is a folder; give the results CSV file{hint}")
    if not path.is_file():
        raise MmlmError(f"{path}: no such file")
    if d_col and flops_col:
        raise MmlmError("give --d-col or --flops-col, not both")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's byte-order mark
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [(i + 2, row) for i, row in enumerate(reader) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise MmlmError(f"{path}: cannot read as CSV ({e})") from None
    if not header:
        raise MmlmError(f"{path}: empty file (no header)")
    header = [h.strip() for h in header]
    table = Table(str(path))
    seen: set[tuple[str, ...]] = set()
    for _, row in rows:
        key = tuple(c.strip() for c in row)
        table.duplicates += key in seen
        seen.add(key)
    sweep = all(c in header for c in SWEEP_COLUMNS) and any(h.startswith("tokens_") for h in header)
    generic_opts = d_col or flops_col or mixture_col
    if sweep and not generic_opts:
        _read_sweep(table, header, rows, n_col or "n_params", loss_col or "loss", dataset_col or "eval_dataset")
    else:
        _read_generic(table, header, rows, n_col, d_col, flops_col, loss_col, dataset_col, mixture_col)
    if not table.records:
        raise MmlmError(f"{path}: no data rows")
    if unique_col or group_col:
        _read_extra(table, header, rows, unique_col, group_col)
    return table


def _read_extra(table: Table, header, rows, unique_col, group_col) -> None:
    """The unique tokens (--unique-col) and the group (--group-col, comma-separated columns) of each row."""
    groups = [g.strip() for g in (group_col or "").split(",") if g.strip()]
    _require(table.path, header, {**({unique_col: "--unique-col"} if unique_col else {}),
                                  **{g: "--group-col" for g in groups}})
    by_line = {line: row for line, row in rows}
    for r in table.records:
        c = _cells(table.path, header, r.line, by_line[r.line])
        if unique_col:
            r.unique = _number(table.path, r.line, unique_col, c[unique_col])
            d = sum(r.tokens.values())
            if r.unique > d * (1 + 1e-9):
                raise MmlmError(f"{table.path} line {r.line}: {unique_col} is {r.unique:g}, more than the "
                                f"{d:g} tokens the run trained on")
        if groups:
            r.group = "/".join(c[g] for g in groups)


def _cells(path, header, line, row) -> dict[str, str]:
    if len(row) != len(header):
        raise MmlmError(f"{path} line {line}: {len(row)} fields, the header has {len(header)}")
    return dict(zip(header, (c.strip() for c in row)))


def _require(path, header, cols: dict[str, str]) -> None:
    missing = [f"{c!r}" + (f" ({opt})" if opt else "") for c, opt in cols.items() if c not in header]
    if missing:
        raise MmlmError(f"{path}: missing column(s) {', '.join(missing)}; columns are: {', '.join(header)}")


def _read_sweep(table: Table, header, rows, n_col, loss_col, dataset_col) -> None:
    _require(table.path, header, {n_col: "--n-col", loss_col: "--loss-col", dataset_col: "--dataset-col"})
    token_cols = {h[len("tokens_"):]: h for h in header if h.startswith("tokens_")}
    has_id = "run_id" in header
    for line, row in rows:
        c = _cells(table.path, header, line, row)
        tokens = {}
        for name, col in token_cols.items():
            t = _number(table.path, line, col, c[col], positive=False)
            if t > 0:
                tokens[name] = t
        table.records.append(Record(
            line, c["run_id"] if has_id else str(line), _number(table.path, line, n_col, c[n_col]),
            c[dataset_col], _number(table.path, line, loss_col, c[loss_col]), tokens,
        ))


def _read_generic(table: Table, header, rows, n_col, d_col, flops_col, loss_col, dataset_col, mixture_col) -> None:
    n_col = _pick(table.path, header, n_col, N_GUESSES, "N (model size)", "--n-col")
    if flops_col:
        _require(table.path, header, {flops_col: "--flops-col"})
    else:
        d_col = _pick(table.path, header, d_col, D_GUESSES, "D (tokens)", "--d-col")
    loss_col = _pick(table.path, header, loss_col, ("loss", "Loss", "L"), "loss", "--loss-col")
    if dataset_col:
        _require(table.path, header, {dataset_col: "--dataset-col"})
    if mixture_col:
        _require(table.path, header, {mixture_col: "--mixture-col"})
        if not dataset_col:
            raise MmlmError("--mixture-col needs --dataset-col (the dataset each loss was measured on)")
    for line, row in rows:
        c = _cells(table.path, header, line, row)
        n = _number(table.path, line, n_col, c[n_col])
        if flops_col:
            d = _number(table.path, line, flops_col, c[flops_col]) / (6.0 * n)
        else:
            d = _number(table.path, line, d_col, c[d_col])
        loss = _number(table.path, line, loss_col, c[loss_col])
        dataset = c[dataset_col] if dataset_col else DEFAULT_DATASET
        if not dataset:
            raise MmlmError(f"{table.path} line {line}: {dataset_col} is empty")
        if mixture_col:
            names = _split_mixture(c[mixture_col])
            if not names:
                raise MmlmError(f"{table.path} line {line}: {mixture_col} is empty")
            tokens = {}
            for name in names:
                col = f"tokens_{name}"
                tokens[name] = (_number(table.path, line, col, c[col]) if col in c else d / len(names))
            run = f"{c[mixture_col]}|{n!r}|{d!r}"
        else:
            tokens, run = {dataset: d}, str(line)
        table.records.append(Record(line, run, n, dataset, loss, tokens))
