"""DIR/results.csv: one row per (finished run, eval dataset), rebuilt from the run folders.

Columns: run_id, size, n_params, n_params_nonembed, mixture, tokens, flops, eval_dataset, loss, loss_se
(standard error of the loss from its per-chunk losses; empty for runs that predate it), then
tokens_<dataset> (tokens the run actually drew from that dataset, counted by the interleaver) for every
dataset any run draws from.
This is the table `mmlm fit` reads. It is always rebuilt whole from the folders and replaced
atomically, so interrupting a sweep can neither lose nor repeat a row.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from .. import atomic
from .run_folders import read_spec, read_summary, runs_root

FIXED_COLUMNS = ["run_id", "size", "n_params", "n_params_nonembed", "mixture", "tokens", "flops", "eval_dataset", "loss", "loss_se"]


def collect_results(out: str | Path) -> tuple[list[str], list[dict]]:
    """(columns, rows) of every finished run under DIR/runs, sorted by run id and eval dataset."""
    found = []
    datasets: set[str] = set()
    root = runs_root(out)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        spec = read_spec(folder)
        if spec:
            datasets.update(spec.mix)
        summary = read_summary(folder)
        if not summary or summary.get("status") != "done":
            continue
        by_dataset = summary.get("tokens_by_dataset") or {}
        datasets.update(by_dataset)
        found.append((folder.name, spec, summary, by_dataset))
    columns = FIXED_COLUMNS + [f"tokens_{d}" for d in sorted(datasets)]
    rows = []
    for rid, spec, summary, by_dataset in found:
        mix = spec.mix if spec else summary.get("mix") or {}
        base = {
            "run_id": rid,
            "size": spec.size if spec else summary.get("size", ""),
            "n_params": summary.get("n_params"),
            "n_params_nonembed": summary.get("n_params_nonembed"),
            "mixture": spec.mixture if spec else "+".join(sorted(mix)),
            "tokens": summary.get("tokens"),
            "flops": summary.get("flops"),
        }
        base.update({f"tokens_{d}": int(by_dataset.get(d, 0)) for d in sorted(datasets)})
        se = summary.get("eval_loss_se") or {}
        for ds, loss in sorted((summary.get("eval_loss") or {}).items()):
            rows.append({**base, "eval_dataset": ds, "loss": loss, "loss_se": se.get(ds)})
    return columns, rows


def write_results(out: str | Path) -> tuple[Path, int]:
    """Rebuild DIR/results.csv; returns its path and number of rows."""
    columns, rows = collect_results(out)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(out) / "results.csv"
    atomic.write_text(path, buf.getvalue())
    return path, len(rows)
