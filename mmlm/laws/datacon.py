"""DataConstrainedLaw: Muennighoff et al. (2023)'s law for repeated data (and excess parameters).

    L(N, D, U_D) = E + A / N'^alpha + B / D'^beta
    D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)),   R_D = max(D / U_D - 1, 0)   (repeated epochs)
    N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)),   R_N = max(N / U_N - 1, 0),
    U_N = min(N, N_opt(U_D)),  N_opt(D) = G (G D)^(beta / alpha),  G = (alpha A / (beta B))^(1 / (alpha + beta))

(N_opt(D) is the Chinchilla compute-optimal size for D tokens under the same A, B, alpha, beta.)
R_D* (R_N*) is how many repetitions (excess-parameter ratios) are worth having: a repeated token is
worth (1 - exp(-R/R*)) R* / R of a fresh one. Objective: Huber(1e-3) on log loss, as upstream.

Fitting. Upstream fixed E, A, B, alpha = beta from a Chinchilla fit on other data and fitted only
R_D*, R_N*; here all seven (six with tie_exponents) are fitted on the table itself:
1. for every (R_D*, R_N*) of a log grid, alternate: the Chinchilla law by mmlm's fast fit on (N', D'),
   then N' again from that law (U_N depends on it), three rounds;
2. the best few, polished on all parameters at once (Powell, then Nelder-Mead, on the exact objective).
Bootstrap refits start from the full fit (stage 2 only).
"""
from __future__ import annotations

import numpy as np

from mmlm.errors import MmlmError
from mmlm.progress import Progress

from . import forms
from .forms import HUBER_DELTA, huber

PARAMS = ("E", "A", "B", "alpha", "beta", "R_D", "R_N")
R_GRID = (0.5, 3.0, 15.0, 80.0)
LOG_R_BOUNDS = (np.log(1e-3), np.log(1e6))


def effective(N, D, U, A, B, alpha, beta, R_D, R_N):
    """(N', D') of the law (see the module doc)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return _effective(N, D, U, A, B, alpha, beta, R_D, R_N)


def _effective(N, D, U, A, B, alpha, beta, R_D, R_N):
    rd = np.maximum(D / U - 1.0, 0.0)
    Dp = U + U * R_D * (1.0 - np.exp(-rd / R_D))
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    n_opt = G * (G * U) ** (beta / alpha)
    UN = np.minimum(N, np.where(np.isfinite(n_opt) & (n_opt > 0), n_opt, N))
    rn = np.maximum(N / UN - 1.0, 0.0)
    Np = UN + UN * R_N * (1.0 - np.exp(-rn / R_N))
    return Np, Dp


def _natural(t, tie: bool):
    """t = (log E, log A, log B, alpha, [beta,] log R_D*, log R_N*) -> the seven parameters."""
    t = np.asarray(t, dtype=float)
    if tie:
        t = np.insert(t, 4, t[3])
    return np.exp(t[0]), np.exp(t[1]), np.exp(t[2]), t[3], t[4], np.exp(t[5]), np.exp(t[6])


def predict_params(params, N, D, U):
    E, A, B, alpha, beta, R_D, R_N = params
    Np, Dp = effective(N, D, U, A, B, alpha, beta, R_D, R_N)
    with np.errstate(over="ignore"):
        return E + A / Np**alpha + B / Dp**beta


def objective(params, N, D, U, loss, weights=None) -> float:
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        pred = predict_params(params, N, D, U)
        r = np.log(np.maximum(pred, forms.PRED_FLOOR)) - np.log(loss)
    if not np.all(np.isfinite(r)):
        return 1e30
    h = huber(r, HUBER_DELTA)
    return float((h if weights is None else h * weights).sum())


class DataConstrainedLaw(forms.FittedParams):
    """>>> DataConstrainedLaw().fit(N, D, U, loss).predict(N, D, U); law.R_D_, law.R_N_"""

    PARAMS = PARAMS

    def __init__(self, bootstrap: int = 0, seed: int = 0, tie_exponents: bool = False,
                 on_progress: Progress | None = None):
        self.bootstrap = bootstrap
        self.seed = seed
        self.tie_exponents = bool(tie_exponents)
        self.on_progress = on_progress

    @property
    def n_params(self) -> int:
        return 6 if self.tie_exponents else 7

    def _t_bounds(self):
        lo, hi = forms.LOG_COEF_BOUNDS
        b = [(lo, hi)] * 3 + [(1e-4, forms.MAX_EXPONENT)] * (1 if self.tie_exponents else 2) + [LOG_R_BOUNDS] * 2
        return np.array([x[0] for x in b]), np.array([x[1] for x in b])

    def _objective_t(self, t, N, D, U, loss, w):
        lo, hi = self._t_bounds()
        if np.any(t < lo) or np.any(t > hi):
            return 1e30
        return objective(_natural(t, self.tie_exponents), N, D, U, loss, w)

    def _polish(self, t, N, D, U, loss, w):
        from scipy.optimize import minimize

        f = lambda x: self._objective_t(x, N, D, U, loss, w)  # noqa: E731
        best_t, best_f = np.asarray(t, dtype=float), f(t)
        for method, opts in (("Powell", {"xtol": 1e-10, "ftol": 1e-14, "maxfev": 20000}),
                             ("Nelder-Mead", {"xatol": 1e-10, "fatol": 1e-16, "maxfev": 20000}),
                             ("Powell", {"xtol": 1e-12, "ftol": 1e-15, "maxfev": 20000})):
            r = minimize(f, best_t, method=method, options=opts)
            if r.fun < best_f:
                best_t, best_f = r.x, float(r.fun)
        return best_t, best_f

    def _starts(self, N, D, U, loss):
        """Stage 1: (t, objective) for every (R_D*, R_N*) of the grid; a free-exponent fit also starts
        from the tied law's (on datablations the free fit alone ended in a worse local minimum)."""
        from .unimodal import UnimodalLaw

        out = []
        for tied in ((True,) if self.tie_exponents else (True, False)):
            for R_D in R_GRID:
                for R_N in R_GRID:
                    out.append(self._start(N, D, U, loss, R_D, R_N, tied, UnimodalLaw))
        return out

    def _start(self, N, D, U, loss, R_D, R_N, tied, UnimodalLaw):
        """One stage-1 start: the Chinchilla law on (N', D') and N' from it, three rounds."""
        Np = N.copy()  # first round: no excess parameters
        Dp = effective(N, D, U, 1.0, 1.0, 1.0, 1.0, R_D, R_N)[1]
        law = None
        for _ in range(3):
            law = UnimodalLaw(tie_exponents=tied).fit(Np, Dp, loss)
            if law.alpha_ <= 0 or law.beta_ <= 0:
                break
            Np, _ = effective(N, D, U, law.A_, law.B_, law.alpha_, law.beta_, R_D, R_N)
        t = [np.log(law.E_), np.log(law.A_), np.log(law.B_), max(law.alpha_, 1e-4)]
        t += [] if self.tie_exponents else [max(law.beta_, 1e-4)]
        t = np.array(t + [np.log(R_D), np.log(R_N)])
        return t, self._objective_t(t, N, D, U, loss, None)

    def fit(self, N, D, U, loss) -> "DataConstrainedLaw":
        N, D, U, loss = forms.check_points(self.n_params, N=N, D=D, U=U, loss=loss)
        bad = np.flatnonzero(U > D * (1 + 1e-9))
        if len(bad):
            raise MmlmError(f"point {bad[0]}: {U[bad[0]]:g} unique tokens, more than its {D[bad[0]]:g} tokens")
        starts = sorted(self._starts(N, D, U, loss), key=lambda s: s[1])[:2]
        best_t, best_f = None, np.inf
        for t, _ in starts:
            t, f = self._polish(t, N, D, U, loss, None)
            if f < best_f:
                best_t, best_f = t, f
        self._fit_t = best_t
        self._set_params(best_t, best_f, len(loss))
        self.ci_ = {}
        if self.bootstrap:
            from .fitting import resample_counts

            counts = resample_counts(len(loss), self.bootstrap, self.seed)
            nat = []
            for b, w in enumerate(counts, 1):
                t, _ = self._polish(best_t, N, D, U, loss, w)
                nat.append(_natural(t, self.tie_exponents))
                if self.on_progress:
                    self.on_progress("bootstrap", b, self.bootstrap)
            nat = np.array(nat)
            self.ci_ = {k: [float(np.percentile(nat[:, i], 2.5)), float(np.percentile(nat[:, i], 97.5))]
                        for i, k in enumerate(PARAMS)}
        self.warnings_ = self._warnings(best_t)
        self.holdout_error_ = None
        self.holdout_ = None
        return self

    def _set_params(self, t, f, n_points) -> None:
        vals = _natural(t, self.tie_exponents)
        self.params_ = tuple(float(v) for v in vals)
        for k, v in zip(PARAMS, vals):
            setattr(self, k + "_", float(v))
        self.objective_ = float(f)
        self.n_points_ = int(n_points)
        self.theta_ = np.array([np.log(vals[0]), np.log(vals[1]), np.log(vals[2]), vals[3], vals[4]])

    def _warnings(self, t) -> list[str]:
        lo, hi = self._t_bounds()
        out = []
        for name, i in (("R_D*", -2), ("R_N*", -1)):
            if t[i] <= lo[i] + 1e-6 or t[i] >= hi[i] - 1e-6:
                out.append(f"{name} at its bound ({np.exp(t[i]):.3g}): the data does not identify it")
        return out

    def refit(self, N, D, U, loss) -> "DataConstrainedLaw":
        return DataConstrainedLaw(tie_exponents=self.tie_exponents).fit(N, D, U, loss)

    def predict(self, N, D, U=None) -> np.ndarray:
        """Predicted loss of size N trained on D tokens of which U are unique (broadcast; U = D when
        not given: fresh data, as the plots and the planning draw it)."""
        self._check_fitted()
        N, D, U = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (N, D, D if U is None else U)))
        return predict_params(self.params_, N, D, U)

    def to_dict(self) -> dict:
        self._check_fitted()
        return {
            "law": "data-constrained", **{k: getattr(self, k + "_") for k in PARAMS},
            "objective": self.objective_, "n_points": self.n_points_, "ci": self.ci_,
            "holdout_error": self.holdout_error_, "holdout": self.holdout_,
            "fit_objective": "huber-log", "tie_exponents": self.tie_exponents, "warnings": list(self.warnings_),
        }

    def __repr__(self) -> str:
        if not hasattr(self, "params_"):
            return "DataConstrainedLaw()"
        return "DataConstrainedLaw(" + ", ".join(f"{k}={getattr(self, k + '_'):.4g}" for k in PARAMS) + ")"
