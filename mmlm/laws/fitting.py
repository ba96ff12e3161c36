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
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.optimize import minimize

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
_LO = np.array([b[0] for b in BOUNDS])
_HI = np.array([b[1] for b in BOUNDS])


@njit(cache=True)
def _objective_grad(theta, log_n, log_d, log_loss, base, sign, weights, delta):
    """forms.objective of one theta, compiled, with its exact gradient."""
    k, a, b, alpha, beta = theta[0], theta[1], theta[2], theta[3], theta[4]
    tk = math.exp(k)
    f = 0.0
    g = np.zeros(5)
    for i in range(log_n.shape[0]):
        w = weights[i]
        if w == 0.0:
            continue
        ta = math.exp(a - alpha * log_n[i])
        tb = math.exp(b - beta * log_d[i])
        pred = base[i] + sign * tk + ta + tb
        if pred <= PRED_FLOOR:
            # flat (and large) here: a line search that steps in backs off
            r = math.log(PRED_FLOOR) - log_loss[i]
            f += w * delta * (abs(r) - 0.5 * delta)
            continue
        r = math.log(pred) - log_loss[i]
        if abs(r) <= delta:
            f += w * 0.5 * r * r
            q = w * r / pred
        else:
            f += w * delta * (abs(r) - 0.5 * delta)
            q = w * math.copysign(delta, r) / pred
        g[0] += q * sign * tk
        g[1] += q * ta
        g[2] += q * tb
        g[3] -= q * ta * log_n[i]
        g[4] -= q * tb * log_d[i]
    return f, g


def objective_grad(theta, p: Problem, delta: float = HUBER_DELTA):
    """Objective and exact gradient of one theta (compiled; what the optimisers call)."""
    return _objective_grad(
        np.asarray(theta, dtype=float), p.log_n, p.log_d, p.log_loss, p.base, p.sign, p.weights, delta
    )


@dataclass
class Fit:
    theta: np.ndarray  # (k, a, b, alpha, beta)
    objective: float
    starts: int  # optimiser runs it took


def fit_reference(p: Problem, grid=REFERENCE_GRID_UNIMODAL) -> Fit:
    """Best of plain L-BFGS-B runs from every start of the grid (scipy defaults)."""
    best_x, best_f, n = None, np.inf, 0
    for start in itertools.product(*grid):
        r = minimize(objective_grad, np.array(start, dtype=float), args=(p,), jac=True, method="L-BFGS-B", bounds=BOUNDS)
        n += 1
        if r.fun < best_f:
            best_x, best_f = r.x, float(r.fun)
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
    wl = w / loss**2  # least squares of (L_hat - L) / L ~ the log residual
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
    r = np.log(np.maximum(pred, PRED_FLOOR)) - p.log_loss
    f = (huber(r) * w).sum(-1)
    lo, hi = LOG_COEF_BOUNDS
    with np.errstate(divide="ignore"):
        logs = np.log(coef)
    alpha, beta = np.meshgrid(exponents, exponents, indexing="ij")
    theta = np.stack([logs[..., 0], logs[..., 1] + alpha * n0, logs[..., 2] + beta * d0, alpha, beta], -1)
    theta[..., :3] = np.clip(theta[..., :3], lo, hi)
    return theta.reshape(-1, 5), f.reshape(-1)


@njit(cache=True)
def _solve5(A, b):
    """Gaussian elimination with partial pivoting for the 5x5 step (no LAPACK: quick to compile)."""
    A = A.copy()
    x = b.copy()
    n = x.shape[0]
    for c in range(n):
        p = c
        for r in range(c + 1, n):
            if abs(A[r, c]) > abs(A[p, c]):
                p = r
        if p != c:
            for j in range(n):
                A[c, j], A[p, j] = A[p, j], A[c, j]
            x[c], x[p] = x[p], x[c]
        for r in range(c + 1, n):
            m = A[r, c] / A[c, c]
            for j in range(c, n):
                A[r, j] -= m * A[c, j]
            x[r] -= m * x[c]
    for c in range(n - 1, -1, -1):
        for j in range(c + 1, n):
            x[c] -= A[c, j] * x[j]
        x[c] /= A[c, c]
    return x


@njit(cache=True)
def _polish(theta0, log_n, log_d, log_loss, base, sign, weights, delta, lo, hi, max_iter):
    """Iteratively reweighted Gauss-Newton with Levenberg-Marquardt damping, within the bounds."""
    theta = theta0.copy()
    f, g = _objective_grad(theta, log_n, log_d, log_loss, base, sign, weights, delta)
    lam = 1e-3
    row = np.zeros(5)
    stall = 0
    for _ in range(max_iter):
        # Gauss-Newton matrix of the weighted least-squares majoriser of the Huber loss.
        H = np.zeros((5, 5))
        tk = math.exp(theta[0])
        for i in range(log_n.shape[0]):
            w = weights[i]
            if w == 0.0:
                continue
            ta = math.exp(theta[1] - theta[3] * log_n[i])
            tb = math.exp(theta[2] - theta[4] * log_d[i])
            pred = base[i] + sign * tk + ta + tb
            if pred <= PRED_FLOOR:
                continue
            r = math.log(pred) - log_loss[i]
            u = w if abs(r) <= delta else w * delta / abs(r)
            row[0] = sign * tk / pred
            row[1] = ta / pred
            row[2] = tb / pred
            row[3] = -ta * log_n[i] / pred
            row[4] = -tb * log_d[i] / pred
            for a in range(5):
                for b in range(5):
                    H[a, b] += u * row[a] * row[b]
        # A variable on a bound that the gradient pushes outward stays where it is.
        free = np.ones(5, dtype=np.bool_)
        for j in range(5):
            if (theta[j] <= lo[j] and g[j] > 0) or (theta[j] >= hi[j] and g[j] < 0):
                free[j] = False
        rel = 0.0
        improved = False
        while lam < 1e12:
            A = H.copy()
            rhs = -g.copy()
            for j in range(5):
                A[j, j] += lam * H[j, j] + 1e-14 * (1.0 + H[j, j])
                if not free[j]:
                    A[j, :] = 0.0
                    A[:, j] = 0.0
                    A[j, j] = 1.0
                    rhs[j] = 0.0
            step = _solve5(A, rhs)
            new = np.minimum(np.maximum(theta + step, lo), hi)
            fn, gn = _objective_grad(new, log_n, log_d, log_loss, base, sign, weights, delta)
            if fn < f:
                rel = (f - fn) / f
                theta, f, g = new, fn, gn
                lam = max(lam * 0.2, 1e-12)
                improved = True
                break
            lam *= 5.0
        if not improved:
            break
        stall = stall + 1 if rel < 1e-15 else 0
        if stall >= 3:
            break
    return theta, f


def polish(p: Problem, start, max_iter: int = 1000) -> tuple[np.ndarray, float]:
    return _polish(
        np.asarray(start, dtype=float), p.log_n, p.log_d, p.log_loss, p.base, p.sign, p.weights,
        HUBER_DELTA, _LO, _HI, max_iter,
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
    starts, f = projected_starts(p)
    if len(extra_starts):
        extra = np.clip(np.asarray(extra_starts, dtype=float).reshape(-1, 5), _LO, _HI)
        starts = np.vstack([starts, extra])
        f = np.concatenate([f, [objective_grad(t, p)[0] for t in extra]])
    gap = 1.5 * float(np.diff(FAST_EXPONENTS).max())
    best_x, best_f, n = None, np.inf, 0
    for start in _distinct_best(starts, f, polished, gap):
        x, fx = polish(p, start)
        n += 1
        if fx < best_f:
            best_x, best_f = x, fx
    return Fit(best_x, float(best_f), n)


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


def bootstrap(
    p: Problem, center: np.ndarray, k: int, method: str = "fast", grid=REFERENCE_GRID_UNIMODAL,
    seed: int = 0, jobs: int = 1, on_progress=None,
) -> np.ndarray:
    """theta refitted on k resamples of the points: (k, 5).

    Each refit also starts from `center` (the full-data fit), as Epoch started theirs from the
    published estimate. Resamples are drawn up front, so the result does not depend on `jobs`.
    """
    counts = resample_counts(len(p.log_n), k, seed)
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
                on_progress(len(r))
    finally:
        if jobs > 1:
            pool.shutdown(cancel_futures=True)
    return np.vstack(results)


def percentile_ci(thetas: np.ndarray, names, level: float = 0.9) -> dict:
    """Central percentile interval (90%: 5 / 95 percentiles) of every parameter over bootstrap fits."""
    nat = natural(thetas, names)
    q = 100 * (1 - level) / 2
    return {k: [float(np.percentile(v, q)), float(np.percentile(v, 100 - q))] for k, v in nat.items()}
