"""Experiment design for a pair: how precisely will a grid of runs pin down C and the barrier?

`design` simulates the study many times from given laws (fitted, or written by hand) at a given loss
noise, fits every simulated study with the estimator `mmlm fit` uses (pair.py: matched measured
losses, whole-pipeline bootstrap, identifiability checks), and summarises what came out. The grid is
the paired design of a sweep: uni-modal runs of i and of j at every size N and per-dataset budget D,
and a mixed run at (N, Di = D, Dj = D), i.e. 2D tokens in all.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from mmlm.errors import MmlmError
from mmlm.progress import Progress

from . import identify, pair
from .bimodal import PARAMS, BimodalLaw


def grid_points(sizes, tokens) -> pair.Points:
    """The paired design (losses left empty): uni-modal runs at (N, D), mixed runs at (N, D, D)."""
    N, D = (a.ravel() for a in np.meshgrid(np.asarray(sizes, float), np.asarray(tokens, float), indexing="ij"))
    empty = np.zeros_like(N)
    return pair.Points({"N": N, "D": D, "loss": empty}, {"N": N, "D": D, "loss": empty},
                       {"N": N, "Di": D, "Dj": D, "loss": empty})


def truth_summary(law: BimodalLaw, n_at: float) -> dict:
    theta = law.theta_[None, :]
    nat = dict(zip(PARAMS, (law.C_, law.A_, law.B_, law.alpha_, law.beta_)))
    return {**nat, "n_min": float(identify.barrier_n_min(law.C_, law.A_, law.alpha_)),
            "d_at_n": float(identify.barrier_d(*(nat[k] for k in PARAMS), n_at)), "_theta": theta}


def run_study(args) -> dict:
    """Simulate one study from the true laws and fit it: the fitted pair, its intervals and flags."""
    law, grid, noise, seed, resamples, level, use_matched = args
    rng = np.random.default_rng([seed, 7])
    sim = pair.simulate(grid, law.law_i, law.law_j, law, noise, noise, noise, rng)
    li, lj, _ = pair.refit(sim, use_matched)
    n_at = float(grid.mixed["N"].max())
    fitted = pair.fit_pair(sim, li, lj, "fast", resamples, level, seed, use_matched, barrier_sizes=[n_at])
    e = fitted.extra_
    cb = e["ci_barrier"] or {}
    return {
        "seed": seed, "identifiable": e["identifiable"], "why": e["why"],
        "fit": {k: getattr(fitted, k + "_") for k in PARAMS},
        "n_min": float(identify.barrier_n_min(fitted.C_, fitted.A_, fitted.alpha_)),
        "ci": fitted.ci_, "ci_n_min": cb.get("n_min"), "ci_d_at_n": (cb.get("d_at_n") or {}).get(f"{n_at:.4g}"),
    }


def run_studies(law: BimodalLaw, grid: pair.Points, noise: float, seeds: int, resamples: int = pair.DEFAULT_RESAMPLES,
                level: float = pair.DEFAULT_LEVEL, use_matched: bool = True, jobs: int = 1, first_seed: int = 0,
                on_progress: Progress | None = None) -> list[dict]:
    tasks = [(law, grid, noise, first_seed + s, resamples, level, use_matched) for s in range(seeds)]
    jobs = max(1, min(jobs, seeds, os.cpu_count() or 1))
    out = []
    if jobs == 1:
        for t in tasks:
            out.append(run_study(t))
            if on_progress:
                on_progress("studies", len(out), seeds)
        return out
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for r in pool.map(run_study, tasks):
            out.append(r)
            if on_progress:
                on_progress("studies", len(out), seeds)
    return out


def _covers(ci, value) -> bool | None:
    if not ci or ci[0] is None:
        return None
    hi = math.inf if ci[1] is None else ci[1]
    return ci[0] <= value <= hi


def summarise(studies: list[dict], law: BimodalLaw, n_at: float) -> dict:
    """What a researcher asks of a design: interval widths of C and the barrier, P(identifiable), errors."""
    truth = truth_summary(law, n_at)
    C = np.array([s["fit"]["C"] for s in studies])
    width_c = np.array([s["ci"]["C"][1] - s["ci"]["C"][0] if s["ci"] else np.inf for s in studies])
    decades = []
    for s in studies:
        ci = s["ci_n_min"]
        ok = ci and ci[0] and ci[1]
        decades.append(math.log10(ci[1] / ci[0]) if ok else math.inf)
    ident = np.array([s["identifiable"] for s in studies])
    cover_c = [_covers(s["ci"].get("C") if s["ci"] else None, truth["C"]) for s in studies]
    cover_b = [_covers(s["ci_n_min"], truth["n_min"]) for s in studies]
    wrong = sum(1 for s, a, b in zip(studies, cover_c, cover_b) if s["identifiable"] and (a is False or b is False))
    return {
        "studies": len(studies),
        "p_identifiable": float(ident.mean()),
        "median_ci_width_C": float(np.median(width_c)),
        "median_ci_width_C_relative": float(np.median(width_c) / truth["C"]),
        "median_ci_width_barrier_decades": float(np.median(decades)),
        "median_rel_error_C": float(np.median(np.abs(C / truth["C"] - 1))),
        "coverage_C": float(np.mean([c is True for c in cover_c])),
        "coverage_barrier": float(np.mean([c is True for c in cover_b])),
        "identifiable_but_excluding_truth": int(wrong),
        "truth": {k: v for k, v in truth.items() if not k.startswith("_")},
    }


def setup(laws: dict, pair_name: str, noise: float | None = None, sizes=None, tokens=None, seeds: int = 20) -> dict:
    """The checked inputs of `design` (every problem is one MmlmError line, before anything runs)."""
    from .fitted import bimodal_law

    key, law = bimodal_law(laws, pair_name)
    path = laws.get("_path", "laws.json")
    stored = laws["bimodal"][key].get("design") or {}
    if noise is None:
        noise = (laws.get("noise") or {}).get("sigma")
        if noise is None:
            raise MmlmError(f"{path} records no loss noise; give it with --noise (e.g. 0.003 for 0.3%)")
    sizes = stored.get("sizes") if sizes is None else sizes
    tokens = stored.get("tokens_i") if tokens is None else tokens
    if not sizes or not tokens:
        raise MmlmError(f"{path}: bimodal.{key} records no design grid; give --sizes and --tokens")
    for name, vals in (("--sizes", sizes), ("--tokens", tokens)):
        if any(not (math.isfinite(v) and v > 0) for v in vals):
            raise MmlmError(f"{name}: every value must be a finite positive number, got {vals!r}")
    if not (math.isfinite(noise) and 0 < noise < 0.5):
        raise MmlmError(f"--noise must be a fraction between 0 and 0.5 (0.003 = 0.3%), got {noise!r}")
    if seeds < 2:
        raise MmlmError(f"--seeds must be at least 2, got {seeds}")
    n_runs = len(sizes) * len(tokens)
    if n_runs < 5:
        raise MmlmError(f"{len(sizes)} sizes x {len(tokens)} budgets = {n_runs} mixed runs, fewer than the pair "
                        "law's 5 parameters")
    return {"key": key, "law": law, "noise": float(noise), "sizes": sorted(sizes), "tokens": sorted(tokens),
            "seeds": seeds}


def design(laws: dict, pair_name: str, noise: float | None = None, sizes=None, tokens=None, seeds: int = 20,
           resamples: int = pair.DEFAULT_RESAMPLES, level: float = pair.DEFAULT_LEVEL, jobs: int = 1,
           on_progress: Progress | None = None) -> dict:
    """Expected precision of a paired grid for the pair law `pair_name` of a laws.json dict."""
    s = setup(laws, pair_name, noise, sizes, tokens, seeds)
    law, sizes, tokens = s["law"], s["sizes"], s["tokens"]
    grid = grid_points(sizes, tokens)
    studies = run_studies(law, grid, s["noise"], seeds, resamples, level, jobs=jobs, on_progress=on_progress)
    n_runs = len(sizes) * len(tokens)
    out = {"pair": s["key"], "noise": s["noise"], "sizes": sizes, "tokens": tokens, "seeds": seeds,
           "resamples": resamples, "level": level,
           "runs": {"unimodal_each": n_runs, "mixed": n_runs},
           **summarise(studies, law, float(max(sizes)))}
    if n_runs < 10:
        out["warning"] = f"{n_runs} mixed runs for 5 parameters (fewer than twice as many): never identifiable"
    return out
