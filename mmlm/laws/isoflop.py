"""IsoFLOP analysis: Chinchilla's Approach 2 (Hoffmann et al. 2022), per group of a results table.

Per compute budget C (the runs with the same C = 6ND, within 1%), a curve of the loss over log N
through the IsoFLOP points; its minimum is the compute-optimal N*(C), with D*(C) = C / (6 N*) and the
loss there L*(C). Two curves (CURVES):
- "parabola" (default; Approach 2): least squares L = c0 + c1 log N + c2 log^2 N through the point of
  lowest loss and its PARABOLA_NEIGHBOURS neighbours on each side (an IsoFLOP curve is not a parabola
  far from its minimum: through all points of Porian et al.'s curves the exponent a was off by up
  to 0.37; through these five, by at most 0.031);
- "akima": Porian et al.'s own estimate, an Akima spline of log L over log N, minimised on a grid 25x
  finer than the sizes run.
A budget whose lowest loss is at the smallest or largest size run (or whose parabola opens
downwards) has no bracketed optimum and is skipped (and listed).
Over the budgets, least squares of log N* on log C gives N* ~ C^a and of log D* on log C, D* ~ C^b
(with C = 6 N* D*, a + b = 1). Bootstrap intervals resample the points within each budget and
redo all of it. The loss-at-optimum law L*(C) = E + A C^-alpha is fitted to (C, L*) by the Huber
objective on log loss (delta 1e-3), as Porian et al. do.
"""
from __future__ import annotations

import numpy as np

from mmlm.errors import MmlmError

from .forms import HUBER_DELTA, huber

SAME_BUDGET = 1.01  # budgets within this factor are one IsoFLOP curve
MIN_POINTS = 3  # distinct sizes a curve needs
PARABOLA_NEIGHBOURS = 2
CURVES = ("parabola", "akima")
MIN_BUDGETS = 2  # bracketed optima an exponent needs
CI_LEVEL = 0.95  # as the laws' bootstrap intervals (2.5 - 97.5 percentiles)


def budgets(C: np.ndarray) -> np.ndarray:
    """An integer label per point: points whose C agree within SAME_BUDGET share one."""
    order = np.argsort(C)
    labels = np.empty(len(C), dtype=int)
    lab, start = -1, None
    for i in order:
        if start is None or C[i] > start * SAME_BUDGET:
            lab += 1
            start = C[i]
        labels[i] = lab
    return labels


def vertex(log_n: np.ndarray, loss: np.ndarray, weights=None, curve: str = "parabola"):
    """(log N*, L*) of one IsoFLOP curve, or (None, why) when no optimum is bracketed.
    weights: point counts (a bootstrap resample); a size drawn twice counts twice in the parabola."""
    w = np.ones(len(log_n)) if weights is None else np.asarray(weights, dtype=float)
    # one entry per distinct size: its mean loss, and its count
    x, inv = np.unique(np.round(log_n, 9), return_inverse=True)
    cnt = np.bincount(inv, weights=w)
    y = np.bincount(inv, weights=w * loss) / cnt
    if len(x) < MIN_POINTS:
        return None, f"fewer than {MIN_POINTS} distinct sizes"
    i = int(np.argmin(y))
    if curve != "akima" and (i == 0 or i == len(x) - 1):
        return None, "the lowest loss is at the edge of the sizes run (not bracketed)"
    if curve == "akima":
        from scipy.interpolate import Akima1DInterpolator

        grid = np.linspace(x[0], x[-1], (len(x) - 1) * 25)
        ly = Akima1DInterpolator(x, np.log(y))(grid)
        j = int(np.argmin(ly))
        if j == 0 or j == len(grid) - 1:
            return None, "the spline's minimum is at the edge of the sizes run (not bracketed)"
        return (float(grid[j]), float(np.exp(ly[j]))), None
    lo, hi = max(0, i - PARABOLA_NEIGHBOURS), min(len(x), i + PARABOLA_NEIGHBOURS + 1)
    xs, ys, ws = x[lo:hi], y[lo:hi], cnt[lo:hi]
    x0 = float(np.mean(xs))
    c2, c1, c0 = np.polyfit(xs - x0, ys, 2, w=np.sqrt(ws))
    if c2 <= 0:
        return None, "the parabola opens downwards (no minimum)"
    xv = -c1 / (2 * c2)
    if not (xs[0] - x0 <= xv <= xs[-1] - x0):
        return None, "the parabola's minimum lies outside the points it was fitted on"
    return (xv + x0, c0 - c1 * c1 / (4 * c2)), None


def _optima(log_n, loss, C, labels, weights=None, curve="parabola"):
    """Per budget label: (C, log N*, L*) of the bracketed ones, and (C, why) of the others."""
    got, skipped = [], []
    for lab in np.unique(labels):
        m = labels == lab
        if weights is not None:
            m = m & (weights > 0)
        c = float(np.exp(np.mean(np.log(C[labels == lab]))))
        v, why = (vertex(log_n[m], loss[m], None if weights is None else weights[m], curve) if m.any()
                  else (None, "no points"))
        if v is None:
            skipped.append((c, why))
        else:
            got.append((c, v[0], v[1]))
    return got, skipped


def _slope(log_c, log_y):
    slope, intercept = np.polyfit(log_c, log_y, 1)
    return float(slope), float(np.exp(intercept))


def fit_loss_law(C, L) -> dict | None:
    """L*(C) = E + A C^-alpha by Huber on log loss: a grid over alpha with (E, A) by non-negative least
    squares in relative error, then L-BFGS-B on (log E, log A, alpha) from the best."""
    from scipy.optimize import minimize, nnls

    C, L = np.asarray(C, dtype=float), np.asarray(L, dtype=float)
    if len(C) < 4:
        return None
    lc, ll = np.log(C), np.log(L)
    c0 = float(np.mean(lc))

    def obj(t):  # t = (log E, log A', alpha) with A' = A * exp(-alpha c0) (scaled to ~1)
        pred = np.exp(t[0]) + np.exp(t[1] - t[2] * (lc - c0))
        return float(huber(np.log(pred) - ll, HUBER_DELTA).sum())

    best = None
    for alpha in np.linspace(0.01, 1.5, 150):
        X = np.stack([np.ones_like(C), np.exp(-alpha * (lc - c0))], 1) / L[:, None]
        coef, _ = nnls(X, np.ones_like(L))
        t = np.array([np.log(max(coef[0], 1e-12)), np.log(max(coef[1], 1e-12)), alpha])
        f = obj(t)
        if best is None or f < best[1]:
            best = (t, f)
    r = minimize(obj, best[0], method="L-BFGS-B", bounds=[(-30, 10), (-30, 10), (0.0, 3.0)],
                 options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
    t = r.x if r.fun <= best[1] else best[0]
    return {"E": float(np.exp(t[0])), "A": float(np.exp(t[1] + t[2] * c0)), "alpha": float(t[2]),
            "objective": float(min(r.fun, best[1])), "n_points": int(len(C))}


def analyse(N, D, loss, bootstrap: int = 0, seed: int = 0, C=None, curve: str = "parabola") -> dict:
    """Approach 2 on one group's points (see the module doc). C defaults to 6 N D."""
    if curve not in CURVES:
        raise MmlmError(f"--isoflop-curve must be one of {', '.join(CURVES)}, got {curve!r}")
    N, D, loss = (np.asarray(x, dtype=float) for x in (N, D, loss))
    C = 6 * N * D if C is None else np.asarray(C, dtype=float)
    log_n = np.log(N)
    labels = budgets(C)
    got, skipped = _optima(log_n, loss, C, labels, curve=curve)
    out = {"optima": [{"C": c, "N": float(np.exp(x)), "D": float(c / (6 * np.exp(x))), "loss": float(lo)}
                      for c, x, lo in got],
           "skipped": [{"C": c, "why": why} for c, why in skipped],
           "a": None, "b": None, "ci": {}, "loss_law": None, "curve": curve}
    if len(got) < MIN_BUDGETS:
        out["warning"] = (f"{len(got)} budget(s) with a bracketed optimum (of {len(got) + len(skipped)}); "
                          f"the exponents need {MIN_BUDGETS}")
        return out
    lc = np.log([g[0] for g in got])
    ln = np.array([g[1] for g in got])
    out["a"], out["n_coef"] = _slope(lc, ln)
    out["b"], out["d_coef"] = _slope(lc, lc - np.log(6) - ln)
    out["loss_law"] = fit_loss_law([g[0] for g in got], [g[2] for g in got])
    if bootstrap:
        rng = np.random.default_rng(seed)
        groups = [np.flatnonzero(labels == lab) for lab in np.unique(labels)]
        a_s, b_s = [], []
        for _ in range(bootstrap):
            w = np.zeros(len(N))
            for idx in groups:
                np.add.at(w, rng.choice(idx, len(idx)), 1.0)
            g, _ = _optima(log_n, loss, C, labels, w, curve)
            if len(g) < MIN_BUDGETS:
                continue
            lcb = np.log([x[0] for x in g])
            lnb = np.array([x[1] for x in g])
            a_s.append(_slope(lcb, lnb)[0])
            b_s.append(_slope(lcb, lcb - np.log(6) - lnb)[0])
        if a_s:
            q = 100 * (1 - CI_LEVEL) / 2
            out["ci"] = {k: [float(np.percentile(v, q)), float(np.percentile(v, 100 - q))]
                         for k, v in (("a", a_s), ("b", b_s))}
            out["bootstrap_fits"] = len(a_s)
    return out


def analyse_table(table, bootstrap: int = 0, seed: int = 0, curve: str = "parabola") -> dict:
    """analyse() of every group of the table (Table.groups: the --group-col values, per dataset)."""
    out = {}
    for key, recs in table.groups().items():
        N = np.array([r.n for r in recs])
        D = np.array([r.tokens[r.dataset] for r in recs])
        L = np.array([r.loss for r in recs])
        out[key or "default"] = analyse(N, D, L, bootstrap, seed, curve=curve)
    if not out:
        raise MmlmError(f"{table.path}: --isoflop found no runs trained on a single dataset")
    return out
