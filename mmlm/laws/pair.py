"""The pair (bi-modal) estimator: matched measured losses, a whole-pipeline bootstrap, identifiability.

The interaction of a pair is small (hundredths of a nat) beside the fitted uni-modal laws' own
error, so it is estimated from measurements where the design allows:
- matched points: a mixed run of size N with per-dataset tokens (Di, Dj) whose uni-modal runs of the
  same N at Di and at Dj exist. Its separate loss [Li + Lj] / 2 is the *measured* one (mean over
  repeated runs; a run whose tokens differ by up to MATCH_TOKENS is moved to Di by the law's slope,
  which is accurate over so small a gap). The uni-modal laws' error then does not enter.
- other points fall back to the laws, side by side (a side with a matched run uses it).
Then -C + A / N^alpha + B / (Di + Dj)^beta is fitted to mixed - separate (BimodalLaw.fit with a base).

Intervals: a parametric bootstrap of the whole pipeline. Each resample simulates every uni-modal and
mixed run of the study from the fitted laws with log-normal noise at the estimated scale (uni-modal:
each law's residual scale, or the noise measured on repeated runs where there are enough; mixed: its
residual scale less the matched base's share, never below the uni-modal one), refits both uni-modal
laws, re-matches and refits the pair. The design stays fixed, so no resample loses a whole size, and
the uni-modal uncertainty enters the pair intervals. The same simulation (design.py) tells a
researcher before the runs how precise a grid will be.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmlm.progress import Progress

from . import identify
from .bimodal import PARAMS, BimodalLaw
from .forms import make_problem
from .unimodal import UnimodalLaw

SAME_SIZE = 1.01  # as results.SAME_SIZE
MATCH_TOKENS = 1.25  # a uni-modal run within this factor of Di counts as matched (slope-corrected)
DEFAULT_RESAMPLES = 200  # pair resamples when the user asked for none: identifiability needs intervals
DEFAULT_LEVEL = 0.9


@dataclass
class Points:
    """The runs of one pair study: uni-modal (N, D, loss) of i and of j, and mixed (N, Di, Dj, loss)."""

    ui: dict
    uj: dict
    mixed: dict


def matched_base(pts: Points, law_i: UnimodalLaw, law_j: UnimodalLaw, loss_i=None, loss_j=None):
    """(separate loss per mixed point, matched mask): measured where matched runs exist, else the laws'."""
    m = pts.mixed
    sides = []
    for u, law, d, loss in ((pts.ui, law_i, m["Di"], loss_i), (pts.uj, law_j, m["Dj"], loss_j)):
        loss = u["loss"] if loss is None else loss
        near = ((np.abs(np.log(m["N"])[:, None] - np.log(u["N"])[None, :]) <= np.log(SAME_SIZE))
                & (np.abs(np.log(d)[:, None] - np.log(u["D"])[None, :]) <= np.log(MATCH_TOKENS)))
        # each matched run moved from its own (N, D) to the mixed run's by the law
        moved = loss[None, :] + law.predict(m["N"][:, None], d[:, None]) - law.predict(u["N"], u["D"])[None, :]
        k = near.sum(1)
        measured = np.where(near, moved, 0.0).sum(1) / np.maximum(k, 1)
        sides.append((np.where(k > 0, measured, law.predict(m["N"], d)), k > 0))
    (bi, mi), (bj, mj) = sides
    return 0.5 * (bi + bj), mi & mj


def _sigma_mixed(law: BimodalLaw, matched, sig_i: float, sig_j: float) -> float:
    """Noise of a mixed loss: the pair residual's scale less the matched base's share (floored)."""
    s_uni = float(np.sqrt(0.5 * (sig_i**2 + sig_j**2)))
    s_res = identify.residual_sigma(law.theta_, law.problem_)
    if not np.isfinite(s_res):
        return s_uni
    base_share = 0.5 * s_uni**2 * float(np.mean(matched))  # var of the mean of two matched losses
    return float(max(np.sqrt(max(s_res**2 - base_share, 0.0)), s_uni))


def fit_points(pts: Points, law_i: UnimodalLaw, law_j: UnimodalLaw, method: str = "fast",
               use_matched: bool = True, extra_starts=()) -> tuple[BimodalLaw, np.ndarray]:
    """The pair law from the runs, given the uni-modal laws (no intervals)."""
    m = pts.mixed
    if use_matched:
        base, matched = matched_base(pts, law_i, law_j)
    else:
        base, matched = None, np.zeros(len(m["loss"]), dtype=bool)
    law = BimodalLaw(law_i, law_j, method).fit(m["N"], m["Di"], m["Dj"], m["loss"], base=base,
                                               extra_starts=extra_starts)
    return law, matched


def simulate(pts: Points, law_i, law_j, law: BimodalLaw, sig_i: float, sig_j: float, sig_m: float, rng) -> Points:
    """The same runs drawn again from the laws, with multiplicative log-normal noise."""
    def noisy(x, s):
        return x * np.exp(rng.normal(0.0, s, np.shape(x)))

    m = pts.mixed
    return Points(
        {**pts.ui, "loss": noisy(law_i.predict(pts.ui["N"], pts.ui["D"]), sig_i)},
        {**pts.uj, "loss": noisy(law_j.predict(pts.uj["N"], pts.uj["D"]), sig_j)},
        {**m, "loss": noisy(law.predict(m["N"], m["Di"], m["Dj"]), sig_m)},
    )


def _unimodal(u: dict, extra_starts=()) -> UnimodalLaw:
    """A uni-modal law by the fast method, also started from extra_starts (a bootstrap's centre)."""
    from . import fitting

    best = fitting.fit(make_problem(u["N"], u["D"], u["loss"]), "fast", extra_starts=extra_starts)
    law = UnimodalLaw()
    law._set(best.theta, best.objective, len(u["loss"]))
    return law


def refit(pts: Points, use_matched: bool = True, centre=None) -> tuple[UnimodalLaw, UnimodalLaw, BimodalLaw]:
    """Both stages on one (simulated) study, by the fast method (the reference method's 4,500 starts
    per refit would take hours; the fast one reaches the same or a lower objective)."""
    starts = centre or ((), (), ())
    li, lj = _unimodal(pts.ui, starts[0]), _unimodal(pts.uj, starts[1])
    law, _ = fit_points(pts, li, lj, "fast", use_matched, extra_starts=starts[2])
    return li, lj, law


def distinct(values, factor: float) -> list[float]:
    """Sorted values, one per group of values within `factor` of the group's first (runs of one size
    whose parameter counts, or of one budget whose drawn tokens, differ a little)."""
    out: list[float] = []
    for v in np.sort(np.asarray(values, dtype=float)):
        if not out or v > out[-1] * factor:
            out.append(float(v))
    return out


def sigma_of(law: UnimodalLaw, u: dict) -> float:
    return identify.residual_sigma(law.theta_, make_problem(u["N"], u["D"], u["loss"]))


def fit_pair(pts: Points, law_i: UnimodalLaw, law_j: UnimodalLaw, method: str = "fast", resamples: int = DEFAULT_RESAMPLES,
             level: float = DEFAULT_LEVEL, seed: int = 0, use_matched: bool = True, barrier_sizes=None,
             noise: float | None = None, on_progress: Progress | None = None) -> BimodalLaw:
    """The pair law with intervals of its parameters and its barrier, and its identifiability.

    noise: the uni-modal runs' measured noise (from repeated runs), if known; otherwise each law's
    residual scale stands in for it (noise plus misfit: wider intervals).
    The returned law carries `ci_` and `extra_` (identifiable, why, ci_barrier, matched, sigma, ...)."""
    from . import fitting

    law, matched = fit_points(pts, law_i, law_j, method, use_matched)
    if noise is not None and np.isfinite(noise) and noise > 0:
        sig_i = sig_j = float(noise)
    else:
        sig_i, sig_j = sigma_of(law_i, pts.ui), sigma_of(law_j, pts.uj)
    sig_m = _sigma_mixed(law, matched, sig_i, sig_j)
    m = pts.mixed
    sizes = sorted(set(np.round(m["N"], 0))) if barrier_sizes is None else list(barrier_sizes)
    if barrier_sizes is None:  # the study's largest size and 10x, 100x, 1000x beyond it
        sizes = [float(max(sizes)) * f for f in (1, 10, 100, 1000)]
    thetas = None
    if resamples > 0 and np.isfinite(sig_m) and all(np.isfinite([sig_i, sig_j])):
        rng = np.random.default_rng(seed)
        centre = ([law_i.theta_], [law_j.theta_], [law.theta_])
        thetas = np.empty((resamples, 5))
        for b in range(resamples):
            sim = simulate(pts, law_i, law_j, law, sig_i, sig_j, sig_m, rng)
            thetas[b] = refit(sim, use_matched, centre)[2].theta_
            if on_progress and ((b + 1) % 10 == 0 or b + 1 == resamples):
                on_progress("bootstrap", b + 1, resamples)
    law.ci_ = fitting.percentile_ci(thetas, PARAMS, level) if thetas is not None else {}
    ci_barrier = identify.barrier_ci(thetas, PARAMS, level, sizes) if thetas is not None else {}
    ok, why = identify.check(law.theta_, law.problem_, PARAMS, "bimodal", sig_m, law.ci_, thetas, ci_barrier)
    if thetas is None:
        ok, why = False, why + ["no bootstrap intervals (noise scale unknown)"]
    law.thetas_ = thetas
    law.extra_ = {
        "identifiable": ok, "why": why, "ci_level": level, "ci_barrier": ci_barrier,
        "matched": [bool(x) for x in matched], "n_matched": int(matched.sum()), "sigma": sig_m,
        "design": {"sizes": distinct(m["N"], SAME_SIZE), "tokens_i": distinct(m["Di"], 1.1),
                   "tokens_j": distinct(m["Dj"], 1.1)},
    }
    return law

