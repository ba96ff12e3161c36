"""BimodalLaw: the mixed-modal law of a pair (i, j) trained together (Aghajanyan et al. 2023).

    L(N, Di, Dj) = [Li(N, Di) + Lj(N, Dj)] / 2 - C + A / N^alpha + B / (Di + Dj)^beta

Li, Lj are the fitted uni-modal laws; the left side is the mean of the run's two per-dataset losses.
C is the maximum synergy; A / N^alpha (capacity) and B / (Di + Dj)^beta (optimisation) are the
competition terms. `fit(..., base=...)` takes the separate losses [Li + Lj] / 2 measured on matched
uni-modal runs instead of the laws' (pair.py does that and bootstraps the whole pipeline); the
`bootstrap` option here resamples the mixed runs only and holds Li and Lj fixed.
"""
from __future__ import annotations

import numpy as np

from mmlm.errors import MmlmError
from mmlm.progress import Progress

from . import forms
from .forms import make_problem, predict
from .unimodal import UnimodalLaw

PARAMS = ("C", "A", "B", "alpha", "beta")
# laws.json fields of a pair beyond its parameters (written by pair.py; see docs/laws.md)
EXTRA = ("identifiable", "why", "ci_level", "ci_barrier", "matched", "n_matched", "sigma", "design")


class BimodalLaw(forms.FittedParams):
    """>>> BimodalLaw(law_i, law_j).fit(N, Di, Dj, mean_loss).predict(N, Di, Dj)"""

    PARAMS = PARAMS

    def __init__(self, law_i: UnimodalLaw, law_j: UnimodalLaw, method: str = "fast", bootstrap: int = 0,
                 seed: int = 0, jobs: int = 1, on_progress: Progress | None = None):
        if method not in forms.METHODS:
            raise MmlmError(f"unknown method {method!r}; choose one of {', '.join(forms.METHODS)}")
        self.law_i, self.law_j = law_i, law_j
        self.method = method
        self.bootstrap = bootstrap
        self.seed = seed
        self.jobs = jobs
        self.on_progress = on_progress

    def separate(self, N, Di, Dj) -> np.ndarray:
        """[Li(N, Di) + Lj(N, Dj)] / 2: what the two uni-modal laws give at the same N and tokens."""
        return 0.5 * (self.law_i.predict(N, Di) + self.law_j.predict(N, Dj))

    def fit(self, N, Di, Dj, loss, base=None, extra_starts=()) -> "BimodalLaw":
        """base: the separate loss [Li + Lj] / 2 of each point (default: the uni-modal laws')."""
        N, Di, Dj, loss = forms.check_points(N=N, Di=Di, Dj=Dj, loss=loss)
        from . import fitting  # SciPy and Numba: only when fitting

        base = self.separate(N, Di, Dj) if base is None else np.asarray(base, dtype=float)
        p = make_problem(N, Di + Dj, loss, base=base, sign=-1.0)
        self.problem_ = p
        best = fitting.fit(p, self.method, fitting.REFERENCE_GRID_BIMODAL, extra_starts=extra_starts)
        self._set(best.theta, best.objective, len(loss))
        self.ci_ = {}
        if self.bootstrap:
            thetas = fitting.bootstrap(
                p, best.theta, self.bootstrap, self.method, fitting.REFERENCE_GRID_BIMODAL,
                seed=self.seed, jobs=self.jobs, on_progress=self.on_progress,
            )
            self.ci_ = fitting.percentile_ci(thetas, PARAMS)
        self.warnings_ = forms.bound_warnings(best.theta, PARAMS, p.log_n, p.log_d, d_label="Di + Dj")
        return self

    def interaction(self, N, D) -> np.ndarray:
        """-C + A / N^alpha + B / D^beta at total tokens D = Di + Dj: negative where synergy wins."""
        self._check_fitted()
        N, D = np.broadcast_arrays(np.asarray(N, dtype=float), np.asarray(D, dtype=float))
        return predict(self.theta_, np.log(N), np.log(D), base=0.0, sign=-1.0)

    def predict(self, N, Di, Dj) -> np.ndarray:
        """Predicted mean of the two per-dataset losses of one model trained on both."""
        self._check_fitted()
        N, Di, Dj = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (N, Di, Dj)))
        return self.separate(N, Di, Dj) + self.interaction(N, Di + Dj)

    def to_dict(self) -> dict:
        self._check_fitted()
        return {
            "C": self.C_, "A": self.A_, "B": self.B_, "alpha": self.alpha_, "beta": self.beta_,
            "objective": self.objective_, "n_points": self.n_points_, "ci": self.ci_,
            "holdout": getattr(self, "holdout_", None),
            "warnings": list(self.warnings_), **getattr(self, "extra_", {}),
        }

    @classmethod
    def from_dict(cls, d: dict, law_i: UnimodalLaw, law_j: UnimodalLaw, where: str = "law") -> "BimodalLaw":
        try:
            vals = [float(d[k]) for k in PARAMS]
        except (KeyError, TypeError, ValueError) as e:
            raise MmlmError(f"{where}: needs numbers C, A, B, alpha, beta ({e})") from None
        if not all(np.isfinite(vals)) or min(vals[:3]) < 0 or min(vals[3:]) < 0:
            raise MmlmError(f"{where}: C, A, B, alpha, beta must be finite and non-negative")
        law = cls(law_i, law_j)
        C, A, B, alpha, beta = vals
        with np.errstate(divide="ignore"):
            law._set([np.log(C), np.log(A), np.log(B), alpha, beta], d.get("objective", float("nan")), d.get("n_points", 0))
        law.ci_ = d.get("ci") or {}
        law.warnings_ = list(d.get("warnings") or [])
        law.extra_ = {k: d[k] for k in EXTRA if k in d}
        return law

    def __repr__(self) -> str:
        if not hasattr(self, "theta_"):
            return f"BimodalLaw(method={self.method!r})"
        return (f"BimodalLaw(C={self.C_:.4g}, A={self.A_:.4g}, B={self.B_:.4g}, "
                f"alpha={self.alpha_:.4g}, beta={self.beta_:.4g})")
