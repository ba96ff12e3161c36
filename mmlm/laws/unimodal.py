"""UnimodalLaw: L(N, D) = E + A / N^alpha + B / D^beta, one per dataset (modality)."""
from __future__ import annotations

import numpy as np

from mmlm.errors import MmlmError
from mmlm.progress import Progress

from . import forms
from .forms import make_problem, predict

PARAMS = ("E", "A", "B", "alpha", "beta")


class UnimodalLaw(forms.FittedParams):
    """Chinchilla-form law, fitted as Hoffmann et al. / Epoch do (Huber on log loss; see fitting.py).

    >>> law = UnimodalLaw().fit(N, D, loss)
    >>> law.predict(N, D), law.alpha_, law.ci_
    """

    PARAMS = PARAMS

    def __init__(self, method: str = "fast", bootstrap: int = 0, seed: int = 0, jobs: int = 1,
                 on_progress: Progress | None = None, objective: str = "huber-log", tie_exponents: bool = False):
        if method not in forms.METHODS:
            raise MmlmError(f"unknown method {method!r}; choose one of {', '.join(forms.METHODS)}")
        forms.objective_kind(objective)
        self.method = method
        self.objective = objective  # "huber-log" or "lsq" (forms.OBJECTIVES)
        self.tie_exponents = bool(tie_exponents)  # alpha = beta
        self.bootstrap = bootstrap
        self.seed = seed
        self.jobs = jobs
        self.on_progress = on_progress  # mmlm.progress: ("bootstrap", fits done, fits in all)

    def fit(self, N, D, loss) -> "UnimodalLaw":
        N, D, loss = forms.check_points(4 if self.tie_exponents else 5, N=N, D=D, loss=loss)
        from . import fitting  # SciPy and Numba: only when fitting

        p = make_problem(N, D, loss, objective=self.objective, tie=self.tie_exponents)
        best = fitting.fit(p, self.method, fitting.REFERENCE_GRID_UNIMODAL)
        self._set(best.theta, best.objective, len(loss))
        self.ci_ = {}
        if self.bootstrap:
            thetas = fitting.bootstrap(
                p, best.theta, self.bootstrap, self.method, fitting.REFERENCE_GRID_UNIMODAL,
                seed=self.seed, jobs=self.jobs, on_progress=self.on_progress, warm_starts=best.ends[1:],
            )
            self.ci_ = fitting.percentile_ci(thetas, PARAMS)
        self.warnings_ = forms.bound_warnings(best.theta, PARAMS, p.log_n, p.log_d)
        self.holdout_error_ = None
        self.holdout_ = None
        return self

    @property
    def n_params(self) -> int:
        return 4 if self.tie_exponents else 5

    def refit(self, N, D, loss) -> "UnimodalLaw":
        """A new law of the same settings (no bootstrap) fitted to other points: for holdouts."""
        return UnimodalLaw(self.method, objective=self.objective, tie_exponents=self.tie_exponents).fit(N, D, loss)

    def predict(self, N, D) -> np.ndarray:
        """Predicted loss at model size N and tokens D (broadcast)."""
        self._check_fitted()
        N, D = np.broadcast_arrays(np.asarray(N, dtype=float), np.asarray(D, dtype=float))
        return predict(self.theta_, np.log(N), np.log(D))

    def to_dict(self) -> dict:
        self._check_fitted()
        return {
            "E": self.E_, "A": self.A_, "B": self.B_, "alpha": self.alpha_, "beta": self.beta_,
            "objective": self.objective_, "n_points": self.n_points_, "ci": self.ci_,
            "holdout_error": self.holdout_error_, "holdout": getattr(self, "holdout_", None),
            "fit_objective": getattr(self, "objective", "huber-log"), "tie_exponents": getattr(self, "tie_exponents", False),
            "warnings": list(self.warnings_),
            **getattr(self, "extra_", {}),  # identifiable, why, sigma (fitted.py)
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "law") -> "UnimodalLaw":
        try:
            vals = [float(d[k]) for k in PARAMS]
        except (KeyError, TypeError, ValueError) as e:
            raise MmlmError(f"{where}: needs numbers E, A, B, alpha, beta ({e})") from None
        if not all(np.isfinite(vals)) or min(vals[:3]) <= 0 or min(vals[3:]) < 0:
            raise MmlmError(f"{where}: E, A, B must be positive and alpha, beta non-negative")
        law = cls()
        E, A, B, alpha, beta = vals
        law._set([np.log(E), np.log(A), np.log(B), alpha, beta], d.get("objective", float("nan")), d.get("n_points", 0))
        law.ci_ = d.get("ci") or {}
        law.holdout_error_ = d.get("holdout_error")
        law.holdout_ = d.get("holdout")
        if d.get("fit_objective") in forms.OBJECTIVES:
            law.objective = d["fit_objective"]
        law.tie_exponents = bool(d.get("tie_exponents", False))
        law.warnings_ = list(d.get("warnings") or [])
        law.extra_ = {k: d[k] for k in ("identifiable", "why", "sigma") if k in d}
        return law

    def __repr__(self) -> str:
        if not hasattr(self, "theta_"):
            return f"UnimodalLaw(method={self.method!r})"
        return (f"UnimodalLaw(E={self.E_:.4g}, A={self.A_:.4g}, B={self.B_:.4g}, "
                f"alpha={self.alpha_:.4g}, beta={self.beta_:.4g})")
