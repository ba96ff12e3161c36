"""Sweep-level trends: plateau share and spikes against model size and the pair's law (phenomena 2
and 4), and the best batch size per pair and size (phenomenon 3).

Trends are Spearman rank correlations (reported where at least 3 points with distinct values
exist): a handful of runs gives ranks, not a slope worth fitting.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import MmlmError
from ..jsonio import read_json
from .run_records import RunRecord


def read_laws(path: str | Path) -> dict:
    """laws.json as written by `mmlm fit`: {"unimodal": {...}, "bimodal": {"A|B": {"alpha", "beta", ...}}}."""
    path = Path(path)
    obj = read_json(path, "--laws file")
    if not isinstance(obj, dict) or not isinstance(obj.get("bimodal", {}), dict):
        raise MmlmError(f"--laws {path}: expected an object with a 'bimodal' table of pair laws")
    for key, law in obj.get("bimodal", {}).items():
        for p in ("alpha", "beta"):
            v = law.get(p) if isinstance(law, dict) else None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:  # 0 is a legitimate fit at a bound (flagged by mmlm fit)
                raise MmlmError(f"--laws {path}: bimodal '{key}' needs a non-negative number '{p}', got {v!r}")
    return obj


def pair_name(pair) -> str:
    return "|".join(sorted(pair))


def pair_law(laws: dict | None, pair) -> dict | None:
    """The bi-modal law of a pair, whichever order its key names the two datasets in."""
    if not laws or pair is None:
        return None
    table = laws.get("bimodal", {})
    a, b = pair
    return table.get(f"{a}|{b}") or table.get(f"{b}|{a}")


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    _, inverse = np.unique(x, return_inverse=True)
    counts = np.bincount(inverse)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2
    return mean_rank[inverse]


def spearman(x, y) -> float | None:
    """Spearman's rho over the points where both are finite; None below 3 points or for a constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return None
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def by_size(runs: list[RunRecord], plateau_share: dict[str, float], spikes: dict[str, int], laws: dict | None) -> dict:
    """Per mixed run: size, plateau share, spikes and the pair's exponents; per size: means; trends."""
    rows = []
    for r in runs:
        if r.id not in plateau_share:
            continue
        law = pair_law(laws, r.pair)
        n = r.n_params
        alpha = float(law["alpha"]) if law else None
        rows.append({
            "run": r.id,
            "pair": pair_name(r.pair) if r.pair else None,
            "size": r.size,
            "n_params": n,
            "plateau_fraction": plateau_share[r.id],
            "spikes": spikes[r.id],
            "alpha_ij": alpha,
            "beta_ij": float(law["beta"]) if law else None,
            "log_n_over_alpha": math.log(n) / alpha if (alpha and n) else None,
        })
    groups = defaultdict(list)
    for row in rows:
        if row["n_params"]:
            groups[row["n_params"]].append(row)
    sizes = [{
        "size": g[0]["size"],
        "n_params": n,
        "runs": len(g),
        "plateau_fraction": float(np.mean([x["plateau_fraction"] for x in g])),
        "spikes": float(np.mean([x["spikes"] for x in g])),
    } for n, g in sorted(groups.items())]

    def col(key):
        return [row[key] if row[key] is not None else math.nan for row in rows]

    return {
        "runs": rows,
        "sizes": sizes,
        "spearman": {
            "plateau_fraction~n_params": spearman(col("n_params"), col("plateau_fraction")),
            "plateau_fraction~alpha_ij": spearman(col("alpha_ij"), col("plateau_fraction")),
            "spikes~log_n_over_alpha": spearman(col("log_n_over_alpha"), col("spikes")),
        },
    }


def _mean_final_eval(r: RunRecord) -> float | None:
    ev = r.final_eval
    vals = [ev.get(d) for d in r.datasets]
    return float(np.mean(vals)) if vals and all(v is not None and math.isfinite(v) for v in vals) else None


def _budget(r: RunRecord) -> float | None:
    """The run's token budget to 2 significant figures (runs stop at whole steps, a little past it)."""
    t = r.setting("tokens")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
        return None
    return float(f"{t:.2g}")


def batch_size(runs: list[RunRecord], laws: dict | None) -> dict:
    """Best batch size per (pair, size) over runs that differ only in batch size.

    Runs are grouped by pair, mixture weights, model size and token budget; a group that holds at
    least two batch sizes names the one with the lowest final eval loss (mean over the pair's two
    datasets; ties go to the smaller batch). Across pairs, per size, the best batch size is
    rank-correlated with beta_ij and alpha_ij (the paper: it tracks beta_ij, not alpha_ij); a pair
    with several groups at one size enters with its largest token budget.
    """
    groups = defaultdict(list)
    for r in runs:
        loss = _mean_final_eval(r)
        if r.pair is None or r.batch_tokens is None or loss is None:
            continue
        mix = tuple(sorted((d, round(w, 3)) for d, w in r.mix.items()))
        key = (pair_name(r.pair), mix, r.size or r.n_params, _budget(r))
        groups[key].append((r, loss))
    out_groups = []
    best_by_size = defaultdict(dict)  # size -> pair -> (budget, best batch, law)
    for (pair, mix, size_key, budget), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if len({r.batch_tokens for r, _ in members}) < 2:
            continue
        members.sort(key=lambda m: m[0].batch_tokens)
        best_run, _ = min(members, key=lambda m: m[1])
        law = pair_law(laws, best_run.pair)
        out_groups.append({
            "pair": pair,
            "mix": dict(mix),
            "size": best_run.size,
            "n_params": best_run.n_params,
            "tokens": budget,
            "runs": [{"run": r.id, "batch_tokens": r.batch_tokens, "eval_loss": loss} for r, loss in members],
            "best_batch_tokens": best_run.batch_tokens,
            "alpha_ij": float(law["alpha"]) if law else None,
            "beta_ij": float(law["beta"]) if law else None,
        })
        prev = best_by_size[str(size_key)].get(pair)
        if prev is None or (budget or 0) >= (prev[0] or 0):
            best_by_size[str(size_key)][pair] = (budget, best_run.batch_tokens, law)
    spear = {}
    for size_key, pairs in best_by_size.items():
        with_law = [(b, law) for _, b, law in pairs.values() if law]
        spear[size_key] = {
            "pairs": len(with_law),
            "best_batch~beta_ij": spearman([law["beta"] for _, law in with_law], [b for b, _ in with_law]),
            "best_batch~alpha_ij": spearman([law["alpha"] for _, law in with_law], [b for b, _ in with_law]),
        }
    return {"groups": out_groups, "spearman": spear}
