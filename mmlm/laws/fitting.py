"""Fitting theta = (k, a, b, alpha, beta) of a law (see forms.py): two methods and the bootstrap.

- "reference": Hoffmann et al.'s Approach 3 as Epoch replicated it: scipy L-BFGS-B with its default
  settings from every point of a grid of 4,500 starts, keeping the lowest objective. (Epoch's grid:
  alpha, beta in {0, .5, 1, 1.5, 2}, e in {-1, -.5, 0, .5, 1}, a, b in {0, 5, ..., 25}.) We pass the
  exact gradient instead of scipy's finite differences; the procedure is otherwise the same.
- "fast": variable projection, then a compiled polish.
  1. For fixed exponents the law is linear in (K, A, B). On a 16 x 16 grid of (alpha, beta) one batched
     3x3 non-negative least-squares solve per pair (in relative error, which approximates the log
     residual) gives the coefficients, and every pair is scored by the true Huber objective at once.
  2. The best few distinct candidates are polished by iteratively reweighted Gauss-Newton with
     Levenberg-Marquardt damping (Numba): the Huber loss is majorised by weighted least squares
     (weights min(1, delta/|r|)), so each accepted step lowers the true objective, and it runs until
     no step lowers it further. L-BFGS-B with default tolerances stops early on this near-L1 surface
     (Epoch found the original fit did); this does not, so it reaches the same or a lower objective.
"""
from __future__ import annotations

import itertools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from mmlm.kernels import _lawfit
from mmlm.progress import Progress

from .forms import BOUNDS, HUBER_DELTA, LOG_COEF_BOUNDS, METHODS, PRED_FLOOR, Problem, huber, natural

# Epoch's grid for the uni-modal law, in theta order (k = e, a, b, alpha, beta).
REFERENCE_GRID_UNIMODAL = (
    (-1.0, -0.5, 0.0, 0.5, 1.0),
    (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    (0.0, 0.5, 1.0, 1.5, 2.0),
    (0.0, 0.5, 1.0, 1.5, 2.0),
)
# The same grid for the bi-modal law, with k = c = log C over a synergy of 0.02 to 1 nats.
REFERENCE_GRID_BIMODAL = ((-4.0, -3.0, -2.0, -1.0, 0.0),) + REFERENCE_GRID_UNIMODAL[1:]

# Exponent grid of the fast method: denser near 0, where language-model exponents sit.
FAST_EXPONENTS = np.linspace(0.1, np.sqrt(2.5), 16) ** 2
FAST_POLISHED = 3  # distinct candidates polished
# With alpha = beta only the grid's diagonal is a tied law: a denser line of exponents instead.
TIED_EXPONENTS = np.linspace(0.1, np.sqrt(2.5), 48) ** 2
_LO = np.array([b[0] for b in BOUNDS])
_HI = np.array([b[1] for b in BOUNDS])


def objective_grad(theta, p: Problem, delta: float = HUBER_DELTA):
    """Objective and exact gradient of one theta (compiled; what the optimisers call)."""
    return _lawfit.objective_grad(
        np.asarray(theta, dtype=float), p.log_n, p.log_d, p.log_loss, p.base, p.sign, p.weights, delta, p.kind
    )


@dataclass
class Fit:
    theta: np.ndarray  # (k, a, b, alpha, beta)
    objective: float
    starts: int  # optimiser runs it took
    ends: tuple = ()  # fast method: where each polished candidate ended (the local minima found)


def _tied_objective_grad(phi, p: Problem):
    """objective_grad of (k, a, b, e) with alpha = beta = e (4 parameters)."""
    f, g = objective_grad(np.append(phi, phi[3]), p)
    return f, np.array([g[0], g[1], g[2], g[3] + g[4]])


def fit_reference(p: Problem, grid=REFERENCE_GRID_UNIMODAL) -> Fit:
    """Best of plain L-BFGS-B runs from every start of the grid (scipy defaults)."""
    from scipy.optimize import minimize  # only here: importing SciPy's optimiser costs ~0.3 s
    best_x, best_f, n = None, np.inf, 0
    starts = itertools.product(*grid)
    if p.tie:  # the grid's diagonal alpha = beta
        starts = (s for s in starts if s[3] == s[4])
    for start in starts:
        if p.tie:
            r = minimize(_tied_objective_grad, np.array(start[:4], dtype=float), args=(p,), jac=True,
                         method="L-BFGS-B", bounds=BOUNDS[:4])
            x = np.append(r.x, r.x[3])
        else:
            r = minimize(objective_grad, np.array(start, dtype=float), args=(p,), jac=True, method="L-BFGS-B", bounds=BOUNDS)
            x = r.x
        n += 1
        if r.fun < best_f:
            best_x, best_f = x, float(r.fun)
    return Fit(best_x, best_f, n)


def projected_starts(p: Problem, exponents=FAST_EXPONENTS) -> tuple[np.ndarray, np.ndarray]:
    """For every (alpha, beta) in exponents x exponents: theta with (K, A, B) from weighted NNLS, and
    its Huber objective. Returns theta (m*m, 5) and objective (m*m,)."""
    w = p.weights
    n0, d0 = np.average(p.log_n, weights=w), np.average(p.log_d, weights=w)
    x = np.exp(-np.outer(exponents, p.log_n - n0))  # (m, n): N^-alpha, scaled to ~1
    y = np.exp(-np.outer(exponents, p.log_d - d0))
    loss = np.exp(p.log_loss)
    target = loss - p.base
    # Huber on log: least squares of (L_hat - L) / L ~ the log residual; lsq: of L_hat - L itself
    wl = w if p.kind == 1 else w / loss**2
    s, m = p.sign, len(exponents)
    # Gram matrix and right-hand side of the columns (sign, x, y), for every pair at once.
    G = np.empty((m, m, 3, 3))
    G[..., 0, 0] = wl.sum()
    G[..., 0, 1] = G[..., 1, 0] = (s * x @ wl)[:, None]
    G[..., 0, 2] = G[..., 2, 0] = (s * y @ wl)[None, :]
    G[..., 1, 1] = ((x * x) @ wl)[:, None]
    G[..., 2, 2] = ((y * y) @ wl)[None, :]
    G[..., 1, 2] = G[..., 2, 1] = (x * wl) @ y.T
    rhs = np.empty((m, m, 3))
    rhs[..., 0] = s * (wl * target).sum()
    rhs[..., 1] = (x @ (wl * target))[:, None]
    rhs[..., 2] = (y @ (wl * target))[None, :]
    # Non-negative least squares in 3 unknowns: solve on every subset of free coefficients and keep
    # the feasible one with the lowest cost (the NNLS optimum is one of them).
    tt = (wl * target * target).sum()
    best_cost = np.full((m, m), np.inf)
    coef = np.zeros((m, m, 3))
    for free in itertools.product((0, 1), repeat=3):
        idx = [i for i in range(3) if free[i]]
        if not idx:
            continue
        Gs = G[..., idx, :][..., :, idx]
        rs = rhs[..., idx]
        ridge = 1e-12 * np.trace(Gs, axis1=-2, axis2=-1)[..., None, None] * np.eye(len(idx))
        c = np.linalg.solve(Gs + ridge, rs[..., None])[..., 0]
        cost = tt - 2 * (c * rs).sum(-1) + np.einsum("...i,...ij,...j->...", c, Gs, c)
        better = (c >= 0).all(-1) & (cost < best_cost)
        best_cost = np.where(better, cost, best_cost)
        coef = np.where(better[..., None], 0.0, coef)
        coef[..., idx] = np.where(better[..., None], c, coef[..., idx])
    # Score: the true objective, from the precomputed powers (no exp per candidate).
    pred = p.base + s * coef[..., 0, None] + coef[..., 1, None] * x[:, None, :] + coef[..., 2, None] * y[None, :, :]
    if p.kind == 1:
        f = (((pred - loss) ** 2) * w).sum(-1)
    else:
        r = np.log(np.maximum(pred, PRED_FLOOR)) - p.log_loss
        f = (huber(r) * w).sum(-1)
    if p.tie:  # only the diagonal alpha = beta is a tied law
        f = np.where(np.eye(m, dtype=bool), f, np.inf)
    lo, hi = LOG_COEF_BOUNDS
    with np.errstate(divide="ignore"):
        logs = np.log(coef)
    alpha, beta = np.meshgrid(exponents, exponents, indexing="ij")
    theta = np.stack([logs[..., 0], logs[..., 1] + alpha * n0, logs[..., 2] + beta * d0, alpha, beta], -1)
    theta[..., :3] = np.clip(theta[..., :3], lo, hi)
    return theta.reshape(-1, 5), f.reshape(-1)


# A bootstrap refit stops once 3 steps in a row each gain < 1e-13 (relative): half the iterations
# of the full fit's 1e-15, and within ~1e-13 of its objective (measured on Chinchilla resamples).
BOOTSTRAP_REL_TOL = 1e-13


def polish(p: Problem, start, max_iter: int = 1000, rel_tol: float = 1e-15) -> tuple[np.ndarray, float]:
    return _lawfit.polish(
        np.asarray(start, dtype=float), p.log_n, p.log_d, p.log_loss, p.base, p.sign, p.weights,
        HUBER_DELTA, _LO, _HI, max_iter, p.kind, p.tie, rel_tol,
    )


def _distinct_best(theta: np.ndarray, f: np.ndarray, k: int, min_gap: float) -> list[np.ndarray]:
    """The k lowest-objective rows whose exponents differ from every row already taken by > min_gap."""
    chosen: list[np.ndarray] = []
    for i in np.argsort(f):
        if not np.isfinite(f[i]):
            break
        if all(np.abs(theta[i, 3:] - c[3:]).max() > min_gap for c in chosen):
            chosen.append(theta[i])
            if len(chosen) == k:
                break
    return chosen


def fit_fast(p: Problem, extra_starts=(), polished: int = FAST_POLISHED) -> Fit:
    """Variable projection over the exponent grid, then the compiled polish of the best few."""
    exponents = TIED_EXPONENTS if p.tie else FAST_EXPONENTS
    starts, f = projected_starts(p, exponents)
    if len(extra_starts):
        extra = np.clip(np.asarray(extra_starts, dtype=float).reshape(-1, 5), _LO, _HI)
        if p.tie:
            extra[:, 4] = extra[:, 3]
        starts = np.vstack([starts, extra])
        f = np.concatenate([f, [objective_grad(t, p)[0] for t in extra]])
    gap = 1.5 * float(np.diff(exponents).max())
    best_x, best_f, n, ends = None, np.inf, 0, []
    for start in _distinct_best(starts, f, polished, gap):
        x, fx = polish(p, start)
        n += 1
        ends.append((fx, x))
        if fx < best_f:
            best_x, best_f = x, fx
    distinct: list[np.ndarray] = []  # the local minima, best first, each once
    for _, x in sorted(ends, key=lambda e: e[0]):
        if all(np.abs(x - d).max() > 1e-3 for d in distinct):
            distinct.append(x)
    return Fit(best_x, float(best_f), n, tuple(distinct))


def fit(p: Problem, method: str = "fast", grid=REFERENCE_GRID_UNIMODAL, extra_starts=()) -> Fit:
    if method == "fast":
        return fit_fast(p, extra_starts)
    if method == "reference":
        return fit_reference(p, grid)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def resample_counts(n_points: int, k: int, seed: int) -> np.ndarray:
    """k bootstrap resamples of n points, as point counts (k, n)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_points, size=(k, n_points))
    return np.stack([np.bincount(row, minlength=n_points) for row in idx]).astype(float)


def _bootstrap_chunk(args) -> np.ndarray:
    p, counts, method, grid, center = args
    out = np.empty((len(counts), 5))
    for i, w in enumerate(counts):
        out[i] = fit(p.reweighted(w), method, grid, extra_starts=[center]).theta
    return out


def _warm_refit(q: Problem, starts) -> np.ndarray:
    """The best of the compiled polish from each warm start (no grid)."""
    best_x, best_f = None, np.inf
    for s in starts:
        x, fx = polish(q, s, rel_tol=BOOTSTRAP_REL_TOL)
        if fx < best_f:
            best_x, best_f = x, fx
    return best_x


def bootstrap(
    p: Problem, center: np.ndarray, k: int, method: str = "fast", grid=REFERENCE_GRID_UNIMODAL,
    seed: int = 0, jobs: int = 1, on_progress: Progress | None = None, warm_starts=None,
) -> np.ndarray:
    """theta refitted on k resamples of the points: (k, 5).

    Each refit also starts from `center` (the full-data fit), as Epoch started theirs from the
    published estimate. Resamples are drawn up front, so the result does not depend on `jobs`.
    warm_starts (fast method): refit each resample only by the polish from `center` and from these
    (the other local minima the full fit found), with no start grid. A resample moves the minimum a
    little, so this lands where a full refit does (tests/test_laws.py checks it) at ~1/30 the cost;
    such refits take about a millisecond, so they run in this process (a pool costs more than it saves).
    """
    counts = resample_counts(len(p.log_n), k, seed)
    if warm_starts is not None and method == "fast":
        starts = [np.asarray(center, dtype=float)] + [np.asarray(s, dtype=float) for s in warm_starts]
        out = np.empty((k, 5))
        step, reported = max(1, k // 20), 0
        for i, w in enumerate(counts):
            out[i] = _warm_refit(p.reweighted(w), starts)
            if on_progress and (i + 1 - reported >= step or i + 1 == k):
                on_progress("bootstrap", i + 1, k)
                reported = i + 1
        return out
    jobs = max(1, min(jobs, k, os.cpu_count() or 1))
    tasks = [(p, c, method, grid, center) for c in np.array_split(counts, max(1, min(k, jobs * 8)))]
    results = []
    if jobs == 1:
        chunks = map(_bootstrap_chunk, tasks)
    else:
        pool = ProcessPoolExecutor(max_workers=jobs)
        chunks = pool.map(_bootstrap_chunk, tasks)
    try:
        for r in chunks:
            results.append(r)
            if on_progress:
                on_progress("bootstrap", sum(map(len, results)), k)
    finally:
        if jobs > 1:
            pool.shutdown(cancel_futures=True)
    return np.vstack(results)


def percentile_ci(thetas: np.ndarray, names, level: float = 0.9) -> dict:
    """Central percentile interval (90%: 5 / 95 percentiles) of every parameter over bootstrap fits."""
    nat = natural(thetas, names)
    q = 100 * (1 - level) / 2
    return {k: [float(np.percentile(v, q)), float(np.percentile(v, 100 - q))] for k, v in nat.items()}
