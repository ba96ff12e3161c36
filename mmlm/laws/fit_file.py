"""`mmlm fit` in one call (`fit_results`): check the options, read a results table, fit every law, write laws.json,
the plots and report.md.

Every option is checked before the table is read, and the table before any fitting: SciPy, Numba
and matplotlib are imported only once the fitting and plotting start, so bad input is reported at once.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import MmlmError

CHECKED = ("method", "holdout", "objective", "law", "isoflop", "isoflop_curve")  # the options check_options takes


def check_options(out: str | Path | None, *, method: str = "fast", holdout: str = "none", objective: str = "huber-log",
                  law: str = "chinchilla", unique_col: str | None = None, isoflop: bool = False,
                  isoflop_curve: str = "parabola", group_col: str | None = None) -> None:
    """One-line errors for options that cannot work together, before the fit (which may take minutes)."""
    from . import holdout as holdouts
    from .forms import METHODS, OBJECTIVES
    from .isoflop import CURVES
    from .fitted import LAWS

    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise MmlmError(f"--out {out}: exists and is not a folder")
    if method not in METHODS:
        raise MmlmError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    holdouts.parse(holdout)
    if objective not in OBJECTIVES:
        raise MmlmError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if law not in LAWS:
        raise MmlmError(f"--law must be one of {', '.join(LAWS)}, got {law!r}")
    if law == "data-constrained" and not unique_col:
        raise MmlmError("--law data-constrained needs --unique-col (the unique tokens of each run)")
    if law == "data-constrained" and (method != "fast" or objective != "huber-log"):
        raise MmlmError("--law data-constrained is fitted by its own method on the huber-log objective; "
                        "leave --method and --objective at their defaults")
    if isoflop_curve not in CURVES:
        raise MmlmError(f"--isoflop-curve must be one of {', '.join(CURVES)}, got {isoflop_curve!r}")
    if group_col and not isoflop:
        raise MmlmError("--group-col only splits the --isoflop analysis; add --isoflop")


def fit_results(csv_path: str | Path, out: str | Path | None = None, *, n_col=None, d_col=None, flops_col=None,
                loss_col=None, dataset_col=None, mixture_col=None, unique_col=None, group_col=None,
                datasets: list[str] | None = None, plots: bool = True,
                on_warning: Callable[[str], None] | None = None, **fit_options) -> dict:
    """Read a results CSV, fit every law, and (given `out`) write laws.json, plots and report.md there.
    Returns the laws.json dict.

    The columns are read_table's; fit_options are fit_table's (method, bootstrap, exclude_top_loss,
    holdout, seed, jobs (0: one per CPU core), objective, tie_exponents, law, isoflop, isoflop_curve,
    on_progress). `datasets` keeps only the runs trained and evaluated on those. on_warning(line) hears
    of duplicated rows.
    """
    from .report import write_outputs
    from .fitted import fit_table
    from .table import read_table

    check_options(out, unique_col=unique_col, group_col=group_col,
                  **{k: fit_options[k] for k in CHECKED if k in fit_options})
    table = read_table(csv_path, n_col, d_col, flops_col, loss_col, dataset_col, mixture_col,
                       unique_col=unique_col, group_col=group_col)
    if datasets is not None:
        table = table.only(datasets)
    if table.duplicates and on_warning:
        on_warning(f"{csv_path}: {table.duplicates} duplicated row(s) (identical to an earlier row); "
                   f"each is fitted as a separate point")
    if fit_options.get("jobs") == 0:
        fit_options["jobs"] = os.cpu_count() or 1
    fitted = fit_table(table, **fit_options)
    if out is not None:
        write_outputs(fitted, out, plots=plots)
    return fitted.laws()
