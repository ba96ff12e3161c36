"""Benchmark: does the pair-law estimator of `mmlm fit` recover a planted pair law, with honest intervals?

Planted truth: mmlm.laws.synthetic's laws (text, code and their pair: C = 0.12, A = 40, B = 300,
alpha = beta = 0.3). Design: the paired grid of a sweep, 5 sizes (1e7 - 1e9) x 4 per-dataset budgets
(1e9 - 3.2e10): uni-modal runs of each dataset at every (N, D), mixed runs at (N, D, D). Every loss is
multiplied by exp(N(0, noise)) at noise 0.1%, 0.3%, 0.5%, 1%, over many noise seeds. Each simulated
study is fitted exactly as `mmlm fit` does (mmlm.laws.design.run_study: both uni-modal laws, matched
measured losses, 200-resample whole-pipeline bootstrap, identifiability checks).

Per noise level: median relative error of C, alpha, beta; the barrier's error in decades (smallest N
with synergy); coverage of the 90% intervals of C, alpha, beta and the barrier (target 80-95%); how
many fits are marked identifiable while their 90% interval of C or of the barrier excludes the truth
(the issue's target: 0); and, as the baseline, the errors of the previous estimator (pair law on the
fitted uni-modal laws, no matched runs) and a joint fit of all 15 parameters on the same studies.

    python bench/fit_pair.py [--quick]
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

NOISES = (0.001, 0.003, 0.005, 0.01)
SIZES = np.logspace(7, 9, 5)
TOKENS = np.logspace(9, 10.5, 4)


def _covers(ci, v):
    if not ci or ci[0] is None:
        return False
    return ci[0] <= v <= (math.inf if ci[1] is None else ci[1])


def level_stats(studies, baseline, truth) -> dict:
    fit = {k: np.array([s["fit"][k] for s in studies]) for k in ("C", "alpha", "beta")}
    err = {k: float(np.median(np.abs(v / truth[k] - 1))) for k, v in fit.items()}
    dec = np.array([abs(math.log10(s["n_min"] / truth["n_min"])) if 0 < s["n_min"] < math.inf else math.inf
                    for s in studies])
    cov = {k: float(np.mean([_covers(s["ci"].get(k) if s["ci"] else None, truth[k]) for s in studies]))
           for k in ("C", "alpha", "beta")}
    cov["barrier"] = float(np.mean([_covers(s["ci_n_min"], truth["n_min"]) for s in studies]))
    ident = [s for s in studies if s["identifiable"]]
    wrong = sum(1 for s in ident if not _covers(s["ci"].get("C"), truth["C"]) or not _covers(s["ci_n_min"], truth["n_min"]))
    ident_err = float(np.median([abs(s["fit"]["C"] / truth["C"] - 1) for s in ident])) if ident else None
    b_err = float(np.median([abs(b["fit"]["C"] / truth["C"] - 1) for b in baseline]))
    b_dec = float(np.median([abs(math.log10(b["n_min"] / truth["n_min"])) if 0 < b["n_min"] < math.inf else math.inf
                             for b in baseline]))
    j_err = float(np.median([abs(b["joint"]["C"] / truth["C"] - 1) for b in baseline]))
    j_dec = float(np.median([abs(math.log10(b["joint"]["n_min"] / truth["n_min"])) if 0 < b["joint"]["n_min"] < math.inf
                             else math.inf for b in baseline]))
    return {"seeds": len(studies), "err": err, "barrier_decades": float(np.median(dec)), "coverage": cov,
            "identifiable": len(ident), "wrong_identifiable": wrong, "ident_err_C": ident_err,
            "baseline_err_C": b_err, "baseline_barrier_decades": b_dec, "joint_err_C": j_err,
            "joint_barrier_decades": j_dec}


def joint_fit(sim, li, lj, pl):
    """The alternative the issue asks to consider: all 15 parameters (law i, law j, pair) fitted together,
    least squares on every log residual (uni-modal and mixed), from the two-stage estimate."""
    from scipy.optimize import least_squares

    from mmlm.laws.forms import BOUNDS, predict

    ui, uj, m = sim.ui, sim.uj, sim.mixed
    lnm, ldm = np.log(m["N"]), np.log(m["Di"] + m["Dj"])

    def resid(x):
        ti, tj, tp = x[:5], x[5:10], x[10:]
        ri = np.log(predict(ti, np.log(ui["N"]), np.log(ui["D"]))) - np.log(ui["loss"])
        rj = np.log(predict(tj, np.log(uj["N"]), np.log(uj["D"]))) - np.log(uj["loss"])
        base = 0.5 * (predict(ti, lnm, np.log(m["Di"])) + predict(tj, lnm, np.log(m["Dj"])))
        rm = np.log(np.maximum(predict(tp, lnm, ldm, base, -1.0), 1e-12)) - np.log(m["loss"])
        return np.concatenate([ri, rj, rm])

    lo = np.array([b[0] for b in BOUNDS] * 3)
    hi = np.array([b[1] for b in BOUNDS] * 3)
    x0 = np.clip(np.concatenate([li.theta_, lj.theta_, pl.theta_]), lo + 1e-9, hi - 1e-9)
    r = least_squares(resid, x0, bounds=(lo, hi), x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12)
    C, A, alpha = np.exp(r.x[10]), np.exp(r.x[11]), r.x[13]
    return C, A, alpha


def baseline_study(args):
    """Alternatives on the same simulated study: the previous estimator (pair law on the fitted laws,
    no matching) and a joint fit of all 15 parameters."""
    from mmlm.laws import identify, pair

    law, grid, noise, seed = args
    rng = np.random.default_rng([seed, 7])  # the same draw as design.run_study
    sim = pair.simulate(grid, law.law_i, law.law_j, law, noise, noise, noise, rng)
    li, lj, fitted = pair.refit(sim, use_matched=False)
    _, _, matched = pair.refit(sim)
    jC, jA, jal = joint_fit(sim, li, lj, matched)
    return {"fit": {"C": fitted.C_}, "n_min": float(identify.barrier_n_min(fitted.C_, fitted.A_, fitted.alpha_)),
            "joint": {"C": float(jC), "n_min": float(identify.barrier_n_min(jC, jA, jal))},
            "matched": {"C": matched.C_, "n_min": float(identify.barrier_n_min(matched.C_, matched.A_, matched.alpha_))}}


def table_lines(stats: dict) -> list[str]:
    lines = [
        "| noise | seeds | err C | err alpha | err beta | barrier err (decades) | coverage C / alpha / beta / barrier "
        "| identifiable | identifiable but excluding truth | err C (identifiable) | laws-based: err C / barrier "
        "| joint fit: err C / barrier |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for noise, s in stats.items():
        c = s["coverage"]
        lines.append(
            f"| {100 * noise:g}% | {s['seeds']} | {s['err']['C']:.1%} | {s['err']['alpha']:.1%} | {s['err']['beta']:.1%} "
            f"| {s['barrier_decades']:.2f} | {c['C']:.0%} / {c['alpha']:.0%} / {c['beta']:.0%} / {c['barrier']:.0%} "
            f"| {s['identifiable']} / {s['seeds']} | {s['wrong_identifiable']} "
            f"| {'-' if s['ident_err_C'] is None else format(s['ident_err_C'], '.1%')} "
            f"| {s['baseline_err_C']:.1%} / {s['baseline_barrier_decades']:.2f} "
            f"| {s['joint_err_C']:.1%} / {s['joint_barrier_decades']:.2f} |")
    return lines


def misspecified_lines(law, grid, truth, seeds: int, boot_seeds: int, resamples: int, jobs: int) -> list[str]:
    """Point estimates of the three estimators at every noise level, and the full estimator's flags."""
    from mmlm.laws.design import run_studies

    lines = ["| noise | matched: err C / barrier | laws-based: err C / barrier | joint fit: err C / barrier "
             "| matched, full: identifiable / excluding truth / coverage C, barrier |", "|---|---|---|---|---|"]
    for noise in NOISES:
        alt = [baseline_study((law, grid, noise, s)) for s in range(seeds)]  # serial: bench functions do not pickle
        full = "-"
        if noise <= 0.003 and boot_seeds:
            studies = run_studies(law, grid, noise, boot_seeds, resamples, jobs=jobs)
            st = level_stats(studies, alt[:boot_seeds], truth)
            full = (f"{st['identifiable']} / {st['wrong_identifiable']} of {boot_seeds} / "
                    f"{st['coverage']['C']:.0%}, {st['coverage']['barrier']:.0%}")

        def med(key, get):
            c = np.array([get(a)["C"] for a in alt])
            n = np.array([get(a)["n_min"] for a in alt])
            dec = np.where((n > 0) & np.isfinite(n), np.abs(np.log10(np.where(n > 0, n, 1) / truth["n_min"])), np.inf)
            return f"{np.median(np.abs(c / truth['C'] - 1)):.1%} / {np.median(dec):.2f}"

        lines.append(f"| {100 * noise:g}% | {med('m', lambda a: a['matched'])} "
                     f"| {med('l', lambda a: {'C': a['fit']['C'], 'n_min': a['n_min']})} "
                     f"| {med('j', lambda a: a['joint'])} | {full} |")
    return lines


def run(quick: bool = False) -> list[dict]:
    from mmlm.laws import synthetic
    from mmlm.laws.design import grid_points, run_studies, truth_summary

    seeds = 8 if quick else int(os.environ.get("MMLM_BENCH_PAIR_SEEDS", 40))
    resamples = 100 if quick else 200
    jobs = min(2, os.cpu_count() or 1)
    _, bi = synthetic.laws()
    law = bi["code|text"]
    grid = grid_points(SIZES, TOKENS)
    truth = truth_summary(law, float(SIZES.max()))
    stats = {}
    t0 = time.perf_counter()
    for noise in NOISES:
        studies = run_studies(law, grid, noise, seeds, resamples, jobs=jobs)
        baseline = [baseline_study((law, grid, noise, s)) for s in range(seeds)]
        stats[noise] = level_stats(studies, baseline, truth)
    # the same pair on uni-modal truths that the Chinchilla form does not fit exactly
    from mmlm.laws.bimodal import BimodalLaw

    mis = BimodalLaw.from_dict(synthetic.BIMODAL["code|text"], synthetic.CoupledLaw(law.law_i, 1.1),
                                 synthetic.CoupledLaw(law.law_j, 1.1))
    mis_lines = misspecified_lines(mis, grid, truth, seeds, 0 if quick else 20, resamples, jobs)
    seconds = time.perf_counter() - t0
    table = table_lines(stats) + ["", "Misspecified uni-modal truth (synthetic.CoupledLaw, q = 1.1: the Chinchilla fit misses "
                                  "it by ~0.01 nats RMS), same pair and grid; errors are medians:", ""] + mis_lines
    note = (f"{seeds} noise seeds per level, {resamples} resamples per study, 5 sizes x 4 budgets paired design, "
            f"{seconds:.0f} s. Baseline: the previous estimator (pair law on the fitted uni-modal laws) on the same "
            "studies; also a joint least-squares fit of all 15 parameters (point estimates only). Errors are medians; "
            "barrier errors in decades of the smallest N with synergy.")
    out = []
    for noise, s in stats.items():
        tag = f"@ {100 * noise:g}% noise"
        out.append({"name": f"fit_pair: identifiable but 90% interval excludes truth {tag}", "value": s["wrong_identifiable"],
                    "baseline": None, "ratio": None, "target": 0, "unit": "fits", "meets": s["wrong_identifiable"] == 0})
        out.append({"name": f"fit_pair: coverage of C's 90% interval {tag}", "value": s["coverage"]["C"],
                    "baseline": None, "ratio": None, "target": "0.8-0.95", "unit": "fraction",
                    "meets": 0.8 <= s["coverage"]["C"] <= 0.95})
        out.append({"name": f"fit_pair: median relative error of C {tag}", "value": s["err"]["C"],
                    "baseline": s["baseline_err_C"], "ratio": s["baseline_err_C"] / max(s["err"]["C"], 1e-12),
                    "target": 1.0, "unit": "fraction", "meets": s["err"]["C"] <= s["baseline_err_C"]})
    s = stats[0.001]
    out.append({"name": "fit_pair: identifiable at 0.1% noise", "value": s["identifiable"] / s["seeds"], "baseline": None,
                "ratio": None, "target": 0.5, "unit": "fraction", "meets": s["identifiable"] / s["seeds"] > 0.5})
    out.append({"name": "fit_pair: error of C when identifiable at 0.1% noise", "value": s["ident_err_C"],
                "baseline": None, "ratio": None, "target": 0.35, "unit": "fraction",
                "meets": s["ident_err_C"] is not None and s["ident_err_C"] <= 0.35, "note": note, "table": table})
    return out


if __name__ == "__main__":
    sys.path.append(str(Path(__file__).resolve().parent))
    from run_all import main_for

    results = run(quick="--quick" in sys.argv[1:])
    main_for(lambda quick: results)
    print("\n".join(results[-1]["table"]))
