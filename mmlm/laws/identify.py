"""Is a fitted law identified by its data? Loss noise, local curvature, interval widths (plain NumPy).

A law is marked identifiable only when every check passes; each failed check adds one "why":
- degrees of freedom: fewer than 2 points per parameter (fewer than 1 per parameter is an error elsewhere);
- a parameter at or near a bound of the search box (an exponent ~0 or at its maximum, a coefficient ~0);
- parameters that trade off: the Gauss-Newton Hessian (in log-coefficients, exponents centred on the
  data) is near-singular, or two parameters correlate beyond +-CORR_LIMIT (locally or over the bootstrap);
- an interval wider than the value itself (C, alpha, beta of a pair; alpha, beta of a uni-modal law),
  or a barrier interval wider than BARRIER_DECADES decades.
The thresholds were set by bench/fit_pair.py: the conservative side, where a wrong answer is never
marked identifiable more often than the 90% intervals allow.
"""
from __future__ import annotations

import numpy as np

from .forms import BOUNDS, LOG_COEF_BOUNDS, PRED_FLOOR, Problem, natural

N_PARAMS = 5
CORR_LIMIT = 0.999
COND_LIMIT = 1e12
# an exponent closer than this to its bounds, or a log-coefficient within this of its box, is "at a bound"
EXPONENT_MARGIN = 0.01
LOG_COEF_MARGIN = 1.0
BARRIER_DECADES = 1.0
MIN_REPEAT_DOF = 10  # repeated runs this many dof or more estimate the noise (else: residuals)
# parameters whose interval must not be wider than their value
WIDTH_CHECKED = {"unimodal": ("alpha", "beta"), "bimodal": ("C", "alpha", "beta")}


def residual_sigma(theta, p: Problem) -> float:
    """RMS log residual with the degrees-of-freedom correction sqrt(n / (n - 5)) (nan without dof)."""
    r = log_residuals(theta, p)
    n = len(r)
    return float(np.sqrt((r**2).sum() / (n - N_PARAMS))) if n > N_PARAMS else float("nan")


def log_residuals(theta, p: Problem) -> np.ndarray:
    from .forms import predict

    pred = predict(theta, p.log_n, p.log_d, p.base, p.sign)
    return np.log(np.maximum(pred, PRED_FLOOR)) - p.log_loss


def repeat_sigma(groups: list[np.ndarray]) -> tuple[float, int]:
    """Pooled standard deviation of log loss within groups of repeated runs (same N and tokens), and its dof."""
    ss, dof = 0.0, 0
    for g in groups:
        if len(g) >= 2:
            x = np.log(g)
            ss += float(((x - x.mean()) ** 2).sum())
            dof += len(g) - 1
    return (float(np.sqrt(ss / dof)) if dof else float("nan")), dof


def local_covariance(theta, p: Problem, sigma: float):
    """Gauss-Newton covariance sigma^2 (J^T J)^-1 of (log K, log A, log B, alpha, beta) with the log-
    coefficients taken at the data's centre (so A and alpha do not correlate just by where N = 1 is),
    and the condition number of J^T J (of the column-scaled Jacobian)."""
    t = np.asarray(theta, dtype=float)
    n0, d0 = p.log_n.mean(), p.log_d.mean()
    tk = np.exp(t[0])
    ta = np.exp(t[1] - t[3] * p.log_n)
    tb = np.exp(t[2] - t[4] * p.log_d)
    pred = np.maximum(p.base + p.sign * tk + ta + tb, PRED_FLOOR)
    J = np.stack([p.sign * tk + 0 * pred, ta, tb, -ta * (p.log_n - n0), -tb * (p.log_d - d0)], 1) / pred[:, None]
    scale = np.linalg.norm(J, axis=0)
    if np.any(scale == 0):
        return None, np.inf
    H = (J / scale).T @ (J / scale)
    cond = float(np.linalg.cond(H))
    if not np.isfinite(cond) or cond > 1e16:
        return None, cond
    cov = sigma**2 * np.linalg.inv(H) / np.outer(scale, scale)
    return cov, cond


def _corr(cov) -> np.ndarray:
    s = np.sqrt(np.diag(cov))
    return cov / np.outer(s, s)


def _trade_offs(corr: np.ndarray, names, where: str) -> list[str]:
    out = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            if abs(corr[a, b]) > CORR_LIMIT:
                out.append(f"{names[a]} and {names[b]} trade off ({where} correlation {corr[a, b]:+.4f})")
    return out


def centred(thetas: np.ndarray, p: Problem) -> np.ndarray:
    """theta rows with the log-coefficients of A and B moved to the data's centre."""
    t = np.array(thetas, dtype=float, copy=True)
    t[..., 1] -= t[..., 3] * p.log_n.mean()
    t[..., 2] -= t[..., 4] * p.log_d.mean()
    return t


def at_bounds(theta, names) -> list[str]:
    """One reason per parameter at or near a bound of the search box (log-coefficients, then exponents)."""
    t = np.asarray(theta, dtype=float)
    why: list[str] = []
    lo, hi = LOG_COEF_BOUNDS
    for name, v in zip(names[:3], t[:3]):
        if v <= lo + LOG_COEF_MARGIN:
            why.append(f"{name} at its lower bound (~0)")
        elif v >= hi - LOG_COEF_MARGIN:
            why.append(f"{name} at its upper bound")
    for name, v in zip(names[3:], t[3:]):
        if v <= BOUNDS[3][0] + EXPONENT_MARGIN:
            why.append(f"{name} at its bound 0 ({v:.3g})")
        elif v >= BOUNDS[3][1] - EXPONENT_MARGIN:
            why.append(f"{name} at its bound {BOUNDS[3][1]:g}")
    return why


def check(theta, p: Problem, names, kind: str, sigma: float, ci: dict | None = None,
          thetas: np.ndarray | None = None, ci_barrier: dict | None = None) -> tuple[bool, list[str]]:
    """(identifiable, why): every reason the law is not identified by its points (empty when it is)."""
    why: list[str] = []
    t = np.asarray(theta, dtype=float)
    n = p.n_points
    if n < 2 * N_PARAMS:
        why.append(f"only {n} points for {N_PARAMS} parameters (needs >= {2 * N_PARAMS})")
    why += at_bounds(t, names)
    if np.ptp(p.log_n) < 1e-9 or np.ptp(p.log_d) < 1e-9:
        why.append("only one distinct N or D")
    if np.isfinite(sigma) and sigma > 0:
        cov, cond = local_covariance(t, p, sigma)
        if cov is None or cond > COND_LIMIT:
            why.append(f"near-singular Hessian (condition number {cond:.3g})")
        else:
            why += _trade_offs(_corr(cov), names, "local")
    if thetas is not None and len(thetas) > 2:
        c = centred(thetas, p)
        sd = c.std(0)
        if np.all(sd > 0):
            why += [w for w in _trade_offs(np.corrcoef(c.T), names, "bootstrap") if w not in why]
    for name in WIDTH_CHECKED[kind]:
        if ci and name in ci:
            value = natural(t, names)[name]
            lo_, hi_ = ci[name]
            if hi_ - lo_ > abs(value):
                why.append(f"the interval of {name} [{lo_:.3g}, {hi_:.3g}] is wider than its value {value:.3g}")
    if ci_barrier and "n_min" in ci_barrier:
        lo_, hi_ = ci_barrier["n_min"]
        if lo_ is None or hi_ is None or lo_ <= 0:
            why.append("the barrier's interval is unbounded (some resamples never reach synergy)")
        elif np.log10(hi_ / lo_) > BARRIER_DECADES:
            why.append(f"the barrier's interval [{lo_:.3g}, {hi_:.3g}] spans {np.log10(hi_ / lo_):.2g} decades "
                       f"(more than {BARRIER_DECADES:g})")
    return not why, why


# ---- the competition barrier of many parameter sets --------------------------------------------

def barrier_n_min(C, A, alpha) -> np.ndarray:
    """Smallest N with A / N^alpha < C (D -> infinity); inf where no N reaches synergy."""
    C, A, alpha = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (C, A, alpha)))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out = np.where(alpha > 0, (A / C) ** (1 / np.where(alpha > 0, alpha, 1)), np.where(A < C, 0.0, np.inf))
    return np.where(C > 0, out, np.inf)


def barrier_d(C, A, B, alpha, beta, n: float) -> np.ndarray:
    """D = Di + Dj beyond which a mixed model of size n beats separate ones; inf where it never does."""
    C, A, B, alpha, beta = (np.asarray(x, dtype=float) for x in (C, A, B, alpha, beta))
    gap = C - A / n**alpha
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        d = (B / np.where(gap > 0, gap, 1.0)) ** (1 / np.where(beta > 0, beta, 1.0))
    return np.where((gap > 0) & (beta > 0), d, np.where(gap > 0, 0.0, np.inf))


def quantile_interval(values: np.ndarray, level: float) -> list:
    """[lo, hi] order-statistic interval (no interpolation, so infinities stay ordered); inf -> None."""
    v = np.sort(np.asarray(values, dtype=float))
    q = (1 - level) / 2
    lo = v[int(np.floor(q * (len(v) - 1)))]
    hi = v[int(np.ceil((1 - q) * (len(v) - 1)))]
    return [float(x) if np.isfinite(x) else None for x in (lo, hi)]


def barrier_ci(thetas: np.ndarray, names, level: float, sizes) -> dict:
    """Intervals of the barrier over bootstrap fits: n_min, and the barrier D at each of `sizes`."""
    nat = natural(thetas, names)
    C, A, B, al, be = (nat[k] for k in names)
    out = {"n_min": quantile_interval(barrier_n_min(C, A, al), level), "d_at_n": {}}
    for n in sizes:
        out["d_at_n"][f"{n:.4g}"] = quantile_interval(barrier_d(C, A, B, al, be, n), level)
    return out


# ---- a results table's loss noise and a uni-modal law's identifiability -------------------------

def noise_estimate(points: dict, laws: dict) -> dict:
    """Loss noise (standard deviation of log loss) of the uni-modal runs of a table.

    From repeated runs (same dataset, N and D within 1%) when they give MIN_REPEAT_DOF degrees of
    freedom or more: that is the noise itself (a few near-duplicate points say little).
    Otherwise from the laws' residuals (dof-corrected): noise plus any misfit of the law, so an upper
    estimate. Both are given when both exist."""
    from .forms import make_problem

    groups, by_law = [], {}
    for name, law in laws.items():
        pts = points[name]
        key = np.stack([np.round(np.log(pts["N"]) / np.log(1.01)), np.round(np.log(pts["D"]) / np.log(1.01))], 1)
        _, inv = np.unique(key, axis=0, return_inverse=True)
        groups += [pts["loss"][inv.ravel() == g] for g in range(inv.max() + 1)]
        by_law[name] = residual_sigma(law.theta_, make_problem(pts["N"], pts["D"], pts["loss"]))
    rep, dof = repeat_sigma(groups)
    finite = [v for v in by_law.values() if np.isfinite(v)]
    resid = float(np.sqrt(np.mean(np.square(finite)))) if finite else float("nan")
    out = {"residuals": {"sigma": resid if finite else None, "by_law": {k: (v if np.isfinite(v) else None)
                                                                       for k, v in by_law.items()}}}
    if dof:
        out["repeats"] = {"sigma": rep, "dof": dof}
    if dof >= MIN_REPEAT_DOF:
        out.update(sigma=rep, method="repeats", dof=dof)
    elif finite:
        out.update(sigma=resid, method="residuals")
    else:
        out.update(sigma=None, method="none")
    return out


def check_unimodal(law, pts: dict, level: float = 0.9) -> None:
    """Sets law.extra_ = {identifiable, why, sigma} of a fitted UnimodalLaw from its points."""
    from .forms import make_problem
    from .unimodal import PARAMS

    p = make_problem(pts["N"], pts["D"], pts["loss"])
    sigma = residual_sigma(law.theta_, p)
    ok, why = check(law.theta_, p, PARAMS, "unimodal", sigma, law.ci_ or None)
    law.extra_ = {"identifiable": ok, "why": why, "sigma": sigma if np.isfinite(sigma) else None}
