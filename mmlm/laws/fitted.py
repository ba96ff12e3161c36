"""From a results table to laws: fit every uni-modal and bi-modal law; read laws.json back.

laws.json (the schema is documented in docs/formats.md, section "DIR/laws.json"):
    {"unimodal": {name: {"E", "A", "B", "alpha", "beta", "objective", "n_points", "ci": {param: [lo, hi]},
                         "holdout_error", "warnings": [...]}},
     "bimodal":  {"i|j": {"C", "A", "B", "alpha", "beta", "objective", "n_points", "ci": {...}, "warnings": [...]}}}
plus, per law, "identifiable" and "why", per pair "ci_barrier", "matched", ..., and "noise" (docs/laws.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmlm.errors import MmlmError
from mmlm.jsonio import read_json
from mmlm.progress import Progress, relabelled

from . import holdout as holdouts
from .bimodal import BimodalLaw
from .table import Table
from .unimodal import UnimodalLaw

HOLDOUTS = ("none", "largest")  # the named rules; holdout.py parses the others (sizes:K, N>=x, D>x)
LAWS = ("chinchilla", "data-constrained")
# Model sizes within this factor of each other count as one size (points read off a figure, or
# parameter counts that differ by a rounding, are not distinct sizes).
SAME_SIZE = 1.01


@dataclass
class Fitted:
    """Everything `mmlm fit` produces: the laws.json dict, the law objects and the points behind them."""

    source: str
    settings: dict
    unimodal: dict[str, UnimodalLaw] = field(default_factory=dict)
    bimodal: dict[str, BimodalLaw] = field(default_factory=dict)
    points: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    isoflop: dict[str, dict] = field(default_factory=dict)  # --isoflop: group -> isoflop.analyse(...)
    noise: dict = field(default_factory=dict)  # identify.noise_estimate

    def laws(self) -> dict:
        out = {
            "unimodal": {k: v.to_dict() for k, v in self.unimodal.items()},
            "bimodal": {k: v.to_dict() for k, v in self.bimodal.items()},
            "noise": self.noise,
        }
        if self.isoflop:
            out["isoflop"] = self.isoflop
        return out


def pair_key(i: str, j: str) -> str:
    return f"{i}|{j}"


def _drop_top_loss(arrays: list[np.ndarray], lines: list[int], loss: np.ndarray, k: int):
    if k <= 0:
        return arrays, lines
    keep = np.ones(len(loss), dtype=bool)
    keep[np.argsort(loss, kind="stable")[len(loss) - min(k, len(loss)):]] = False
    return [a[keep] for a in arrays], [ln for ln, kp in zip(lines, keep) if kp]


def _enough(where: str, n: int, lines: list[int], params: int = 5) -> None:
    if n < params:
        shown = ", ".join(map(str, lines[:8])) + (", ..." if len(lines) > 8 else "")
        at = f" (lines {shown})" if lines else ""
        raise MmlmError(f"{where}: {n} points{at}, fewer than the law's {params} parameters "
                        "(--datasets fits the others without it)")


def fit_table(
    table: Table, method: str = "fast", bootstrap: int = 0, exclude_top_loss: int = 0, holdout: str = "none",
    seed: int = 0, jobs: int = 1, on_progress: Progress | None = None, objective: str = "huber-log",
    tie_exponents: bool = False,
    law: str = "chinchilla", isoflop: bool = False, isoflop_curve: str = "parabola", level: float = 0.9,
) -> Fitted:
    """Fit the uni-modal law of every dataset trained alone, then the bi-modal law of every pair.

    on_progress(label, done, total) (mmlm.progress) is called as fits and bootstrap resamples finish, per law.
    law "data-constrained" fits Muennighoff et al.'s law (datacon.py; the table needs unique tokens);
    isoflop adds Chinchilla's Approach 2 per group of the table (isoflop.py).
    """
    rule = holdouts.parse(holdout)
    if bootstrap < 0 or exclude_top_loss < 0:
        raise MmlmError("--bootstrap and --exclude-top-loss must be >= 0")
    if law not in LAWS:
        raise MmlmError(f"--law must be one of {', '.join(LAWS)}, got {law!r}")
    if law == "data-constrained" and not table.has_unique:
        raise MmlmError(f"{table.path}: --law data-constrained needs the unique tokens of every run (--unique-col)")
    if not 0 < level < 1:
        raise MmlmError(f"the interval level must be between 0 and 1, got {level!r}")
    settings = {"method": method, "bootstrap": bootstrap, "exclude_top_loss": exclude_top_loss,
                "holdout": rule.text, "seed": seed, "objective": objective, "tie_exponents": tie_exponents,
                "law": law, "ci_level": level}
    out = Fitted(table.path, settings)
    names = table.unimodal_names()
    pairs = table.pairs()
    if not names:
        raise MmlmError(f"{table.path}: no runs trained on a single dataset and evaluated on it: nothing to fit")
    for i, j in pairs:
        for x in (i, j):
            if x not in names:
                raise MmlmError(f"{table.path}: pair {pair_key(i, j)} has no runs trained on {x} alone "
                                f"(its bi-modal law needs the uni-modal law of {x})")

    _collect_points(out, table, names, pairs, law, tie_exponents, exclude_top_loss)
    progress = _progress(on_progress, bootstrap)
    _fit_unimodal(out, names, law, rule, progress, method=method, bootstrap=bootstrap, seed=seed, jobs=jobs,
                  objective=objective, tie_exponents=tie_exponents, level=level)
    if isoflop:
        from .isoflop import analyse_table

        out.isoflop = analyse_table(table, bootstrap=bootstrap, seed=seed, curve=isoflop_curve)
    _fit_pairs(out, pairs, rule, progress, method=method, bootstrap=bootstrap, seed=seed, jobs=jobs, level=level)
    return out


def _collect_points(out: Fitted, table: Table, names: list[str], pairs: list, law: str, tie_exponents: bool,
                    exclude_top_loss: int) -> None:
    """Every law's points first, so that bad input is reported before any fitting starts."""
    for name in names:
        N, D, L, lines = table.unimodal_points(name)
        U = table.unique_tokens(name) if law == "data-constrained" else np.zeros(0)
        (N, D, L, *U), lines = _drop_top_loss([N, D, L] + ([U] if len(U) else []), lines, L, exclude_top_loss)
        _enough(f"{table.path}: dataset {name!r}", len(L), lines, 4 if tie_exponents else 5)
        out.points[name] = {"N": N, "D": D, "loss": L, **({"U": U[0]} if U else {})}
    for i, j in pairs:
        key = pair_key(i, j)
        N, Di, Dj, L, lines = table.bimodal_points(i, j)
        (N, Di, Dj, L), lines = _drop_top_loss([N, Di, Dj, L], lines, L, exclude_top_loss)
        _enough(f"{table.path}: pair {key}", len(L), lines)
        out.points[key] = {"N": N, "Di": Di, "Dj": Dj, "loss": L}


def _progress(on_progress, bootstrap: int):
    """progress(label, resamples) -> a Progress for one law's resamples, reported under `label` with its
    fit as one more unit (tick(k, k) when done), or None."""
    def progress(label, resamples=bootstrap):
        if not on_progress:
            return None
        on_progress(label, 0, resamples + 1)
        return relabelled(on_progress, label, resamples + 1)

    return progress


def _fit_unimodal(out: Fitted, names: list[str], law: str, rule, progress, *, method, bootstrap, seed, jobs,
                  objective, tie_exponents, level) -> None:
    from . import identify

    for name in names:
        pts = out.points[name]
        tick = progress(name)
        if law == "data-constrained":
            from .datacon import DataConstrainedLaw

            fitted = DataConstrainedLaw(bootstrap, seed, tie_exponents=tie_exponents, on_progress=tick).fit(
                pts["N"], pts["D"], pts["U"], pts["loss"])
        else:
            fitted = UnimodalLaw(method, bootstrap, seed, jobs, on_progress=tick, objective=objective,
                                 tie_exponents=tie_exponents).fit(pts["N"], pts["D"], pts["loss"])
        if tick:
            tick(name, bootstrap + 1, bootstrap + 1)
        if rule.active:
            _holdout(fitted, rule, pts)
        if isinstance(fitted, UnimodalLaw):
            identify.check_unimodal(fitted, pts, level)
        _dof_warning(fitted, len(pts["loss"]), getattr(fitted, "n_params", 5))
        out.unimodal[name] = fitted


def _fit_pairs(out: Fitted, pairs: list, rule, progress, *, method, bootstrap, seed, jobs, level) -> None:
    from . import identify, pair

    chinchilla = {k: v for k, v in out.unimodal.items() if isinstance(v, UnimodalLaw)}
    out.noise = identify.noise_estimate({k: out.points[k] for k in chinchilla}, chinchilla)
    resamples = bootstrap or pair.DEFAULT_RESAMPLES  # a pair's identifiability needs its intervals
    for i, j in pairs:
        key = pair_key(i, j)
        pts = out.points[key]
        tick = progress(key, resamples)
        if i in chinchilla and j in chinchilla:
            study = pair.Points(out.points[i], out.points[j], pts)
            measured = out.noise["sigma"] if out.noise.get("method") == "repeats" else None
            fitted = pair.fit_pair(study, out.unimodal[i], out.unimodal[j], method, resamples, level, seed,
                                   noise=measured, on_progress=tick)
        else:  # data-constrained uni-modal laws: the plain fit, no identifiability verdict
            fitted = BimodalLaw(out.unimodal[i], out.unimodal[j], method, bootstrap, seed, jobs, on_progress=tick)
            fitted = fitted.fit(pts["N"], pts["Di"], pts["Dj"], pts["loss"])
        _dof_warning(fitted, len(pts["loss"]))
        out.bimodal[key] = fitted
        if tick:
            tick(key, resamples + 1, resamples + 1)
        if rule.active:
            holdouts.apply_pair(out.bimodal[key], rule, pts)


def _dof_warning(law, n: int, params: int = 5) -> None:
    if n < 2 * params:
        law.warnings_.append(f"only {n} points for {params} parameters (fewer than twice as many): not identifiable")


def _holdout(law, rule, pts: dict) -> None:
    """Refit without the points of the rule; the relative errors predicting them (holdout.py)."""
    extra = [pts["U"]] if "U" in pts else []

    def refit(keep):
        sub = law.refit(pts["N"][keep], pts["D"][keep], *(x[keep] for x in extra), pts["loss"][keep])
        return lambda held: sub.predict(pts["N"][held], pts["D"][held], *(x[held] for x in extra))

    h, warning = holdouts.evaluate(rule, pts["N"], pts["D"], pts["loss"], refit, law.n_params)
    if warning:
        law.warnings_.append(warning)
    law.holdout_ = h
    law.holdout_error_ = h["mean_abs"] if h else None


# ---- reading laws.json back -------------------------------------------------------------------

def load_laws(path: str | Path) -> dict:
    path = Path(path)
    laws = read_json(path, "laws.json file")
    if not isinstance(laws, dict) or not isinstance(laws.get("unimodal"), dict):
        raise MmlmError(f"{path}: not a laws.json file (no \"unimodal\" object)")
    laws.setdefault("bimodal", {})
    laws["_path"] = str(path)
    return laws


def unimodal_law(laws: dict, name: str | None) -> tuple[str, UnimodalLaw]:
    uni, path = laws["unimodal"], laws.get("_path", "laws.json")
    if name is None:
        if len(uni) != 1:
            raise MmlmError(f"{path} has {len(uni)} uni-modal laws; pick one with --dataset "
                            f"({', '.join(uni) or 'none'})")
        name = next(iter(uni))
    if name not in uni:
        raise MmlmError(f"{path}: no uni-modal law {name!r} (have: {', '.join(uni) or 'none'})")
    return name, UnimodalLaw.from_dict(uni[name], where=f"{path}: unimodal.{name}")


def bimodal_law(laws: dict, pair: str) -> tuple[str, BimodalLaw]:
    """The law of a pair given as 'a,b' or 'a|b' (either order)."""
    path = laws.get("_path", "laws.json")
    parts = [p.strip() for p in pair.replace("|", ",").split(",") if p.strip()]
    if len(parts) != 2:
        raise MmlmError(f"--pair needs two dataset names like a,b; got {pair!r}")
    i, j = parts
    bi = laws["bimodal"]
    key = next((k for k in (pair_key(i, j), pair_key(j, i)) if k in bi), None)
    if key is None:
        raise MmlmError(f"{path}: no bi-modal law for {i}|{j} (have: {', '.join(bi) or 'none'})")
    i, j = key.split("|", 1)
    _, li = unimodal_law(laws, i)
    _, lj = unimodal_law(laws, j)
    return key, BimodalLaw.from_dict(bi[key], li, lj, where=f"{path}: bimodal.{key}")


def any_law(laws: dict, name: str | None):
    """A uni-modal law by name, or a bi-modal one when the name is a pair 'a|b' / 'a,b'."""
    if name is not None and ("|" in name or "," in name):
        return bimodal_law(laws, name)
    return unimodal_law(laws, name)
