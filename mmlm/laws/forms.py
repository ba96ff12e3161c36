"""The law formulas, their parameters and their Huber objective in log space (plain NumPy).

Both laws share one shape, "a base plus a constant plus two power terms":

    L_hat = base + sign * K + A / N^alpha + B / D^beta,   K = exp(k), A = exp(a), B = exp(b)

- uni-modal:  base = 0, sign = +1, K = E, D = tokens.  With base 0 this is exactly Hoffmann et al.'s
  log-sum-exp form log L_hat = LSE(a - alpha log N, b - beta log D, e).
- bi-modal:   base = [Li(N, Di) + Lj(N, Dj)] / 2, sign = -1, K = C (the synergy), D = Di + Dj.

theta = (k, a, b, alpha, beta). Two objectives (OBJECTIVES):
- "huber-log" (default): sum_i w_i Huber_delta(log L_hat_i - log L_i) with delta = 1e-3 (Hoffmann; Epoch);
- "lsq": sum_i w_i (L_hat_i - L_i)^2, least squares on the loss itself (Gadre et al. fit with curve_fit).
With `tie` the exponents are one parameter, alpha = beta (Gadre et al.; Muennighoff et al.).
Weights w_i are point counts: a bootstrap resample is a vector of counts, so no data is copied. The compiled objective with its exact gradient, and the optimisers,
are in fitting.py; this module stays free of SciPy and Numba so that using a fitted law is cheap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmlm.errors import MmlmError

HUBER_DELTA = 1e-3
# Exponents live in [0, MAX_EXPONENT]; a fit that ends on either edge gets a warning.
MAX_EXPONENT = 3.0
# log-coefficients stay in a finite box, so no optimiser runs off to infinity (and a coefficient
# that is really zero ends at the lower edge: exp(-30) ~ 1e-13).
LOG_COEF_BOUNDS = (-30.0, 80.0)
BOUNDS = [LOG_COEF_BOUNDS] * 3 + [(0.0, MAX_EXPONENT)] * 2
PARAMS = ("k", "a", "b", "alpha", "beta")
METHODS = ("fast", "reference")  # the two fitting methods (fitting.py)
OBJECTIVES = ("huber-log", "lsq")  # index = Problem.kind
# A bi-modal prediction can dip below zero when C is large; it is floored before the log.
PRED_FLOOR = 1e-12


@dataclass
class Problem:
    """The data of one fit, in the arrays the objective reads (all float64, one entry per point)."""

    log_n: np.ndarray
    log_d: np.ndarray
    log_loss: np.ndarray
    base: np.ndarray  # zeros for a uni-modal law
    sign: float  # +1: L = E + ..., -1: L = base - C + ...
    weights: np.ndarray  # point counts (ones unless resampled)
    kind: int = 0  # index into OBJECTIVES: 0 Huber on log loss, 1 least squares on the loss
    tie: bool = False  # alpha = beta

    @property
    def n_points(self) -> int:
        return int(np.count_nonzero(self.weights))

    def reweighted(self, weights: np.ndarray) -> "Problem":
        return Problem(self.log_n, self.log_d, self.log_loss, self.base, self.sign, weights, self.kind, self.tie)

    @property
    def n_params(self) -> int:
        return 4 if self.tie else 5


def objective_kind(objective: str) -> int:
    if objective not in OBJECTIVES:
        raise MmlmError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES.index(objective)


def make_problem(n, d, loss, base=None, sign: float = 1.0, objective: str = "huber-log", tie: bool = False) -> Problem:
    n, d, loss = (np.asarray(x, dtype=float) for x in (n, d, loss))
    base = np.zeros_like(loss) if base is None else np.asarray(base, dtype=float)
    return Problem(np.log(n), np.log(d), np.log(loss), base, float(sign), np.ones_like(loss),
                   objective_kind(objective), bool(tie))


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Huber loss, as scipy.special.huber: r^2/2 inside [-delta, delta], delta(|r| - delta/2) outside."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def predict(theta, log_n, log_d, base=0.0, sign: float = 1.0) -> np.ndarray:
    """L_hat for one theta (5,) -> shape of log_n, or many thetas (k, 5) -> (k, n)."""
    t = np.asarray(theta, dtype=float)
    k, a, b, alpha, beta = (t[..., i, None] for i in range(5)) if t.ndim == 2 else t
    out = base + sign * np.exp(k) + np.exp(a - alpha * log_n) + np.exp(b - beta * log_d)
    return out


def objective(theta, p: Problem, delta: float = HUBER_DELTA) -> np.ndarray:
    """Objective of one theta (a float) or of many thetas (k, 5) -> (k,), in plain NumPy."""
    pred = predict(theta, p.log_n, p.log_d, p.base, p.sign)
    if p.kind == 1:
        return (((pred - np.exp(p.log_loss)) ** 2) * p.weights).sum(-1)
    r = np.log(np.maximum(pred, PRED_FLOOR)) - p.log_loss
    return (huber(r, delta) * p.weights).sum(-1)


# ---- parameters and points, shared by UnimodalLaw and BimodalLaw ---------------------------------

def check_points(min_points: int = 5, **arrays) -> list[np.ndarray]:
    """The arrays as float64, after checking they are equally long, finite, positive, and enough."""
    out = [np.asarray(v, dtype=float).ravel() for v in arrays.values()]
    lengths = {len(v) for v in out}
    if len(lengths) != 1:
        raise MmlmError("the arrays " + ", ".join(arrays) + f" differ in length ({sorted(lengths)})")
    for name, v in zip(arrays, out):
        bad = np.flatnonzero(~np.isfinite(v) | (v <= 0))
        if len(bad):
            raise MmlmError(f"{name}[{bad[0]}] is {v[bad[0]]!r}: every value must be finite and positive")
    n = lengths.pop()
    if n < min_points:
        raise MmlmError(f"{n} points are fewer than the law's {min_points} parameters")
    return out


def natural(theta: np.ndarray, names) -> dict:
    """theta (k, a, b, alpha, beta) -> {names[0]: exp(k), names[1]: exp(a), names[2]: exp(b), alpha, beta}."""
    t = np.asarray(theta, dtype=float)
    vals = [np.exp(t[..., 0]), np.exp(t[..., 1]), np.exp(t[..., 2]), t[..., 3], t[..., 4]]
    return dict(zip(names, vals))


def bound_warnings(theta: np.ndarray, names, log_n, log_d, n_label="N", d_label="D") -> list[str]:
    """Human-readable warnings: parameters that ended on a bound, exponents the data cannot identify."""
    lo, hi = LOG_COEF_BOUNDS
    out = []
    for name, v in zip(names[:3], theta[:3]):
        if v <= lo + 1e-6:
            out.append(f"{name} at its lower bound (~0)")
        elif v >= hi - 1e-6:
            out.append(f"{name} at its upper bound (exp({hi:g}))")
    for name, v in zip(names[3:], theta[3:]):
        if v <= BOUNDS[3][0] + 1e-6:
            out.append(f"{name} at its bound 0")
        elif v >= BOUNDS[3][1] - 1e-6:
            out.append(f"{name} at its bound {BOUNDS[3][1]:g}")
    for label, x, exp_name in ((n_label, log_n, names[3]), (d_label, log_d, names[4])):
        if np.ptp(x) < 1e-9:
            out.append(f"only one distinct {label}: {exp_name} is not identified")
    return out


class FittedParams:
    """What both law estimators share: fitted parameters kept as `theta_` and as attributes ending in `_`."""

    PARAMS: tuple[str, ...] = ()

    def _set(self, theta, objective, n_points) -> None:
        self.theta_ = np.asarray(theta, dtype=float)
        for k, v in natural(self.theta_, self.PARAMS).items():
            setattr(self, k + "_", float(v))
        self.objective_ = float(objective)
        self.n_points_ = int(n_points)

    def _check_fitted(self) -> None:
        if not hasattr(self, "theta_"):
            raise MmlmError(f"this {type(self).__name__} is not fitted yet")
