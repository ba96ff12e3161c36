"""Scaling laws: uni-modal and bi-modal fits, predictions and planning.

    from mmlm.laws import UnimodalLaw, fit_results
    law = UnimodalLaw().fit(N, D, loss)            # L = E + A/N^alpha + B/D^beta
    law.predict(N, D); law.alpha_; law.ci_
    laws = fit_results("results.csv", out="fit/")  # every law of a results table -> laws.json, plots, report.md

Modules: forms (formulas, objective), fitting (reference and fast methods, bootstrap), unimodal,
bimodal, table (reading results CSVs), fitted (fitting a table, laws.json), planning (optimal size,
barrier, mixed vs separate), fit_file (fit_results: a CSV in, laws.json, plots and report.md out),
report (plots, report.md), synthetic (tables from known laws).
Names are imported lazily, so reading a table does not pull in SciPy and Numba.
"""
import importlib

_WHERE = {
    "UnimodalLaw": "unimodal", "BimodalLaw": "bimodal", "fit_results": "fit_file", "fit_table": "fitted",
    "load_laws": "fitted", "read_table": "table", "optimal": "planning", "barrier": "planning", "plan": "planning",
}
__all__ = list(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
