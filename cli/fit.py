"""Fit scaling laws to a results table: uni-modal per dataset, bi-modal per pair; writes laws.json, plots, report.md."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from .common import console, print_json, progress_bar


def fit(
    results: Path = typer.Argument(..., help="results.csv of `mmlm sweep`, or any CSV with N, D (or FLOPs) and loss columns."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for laws.json, the PNG plots and report.md."),
    n_col: Optional[str] = typer.Option(None, "--n-col", help="Column of N, model parameters (sweep table: n_params)."),
    d_col: Optional[str] = typer.Option(None, "--d-col", help="Column of D, training tokens."),
    flops_col: Optional[str] = typer.Option(None, "--flops-col", help="Column of training FLOPs C; then D = C / (6N)."),
    loss_col: Optional[str] = typer.Option(None, "--loss-col", help="Column of the loss (default: loss)."),
    dataset_col: Optional[str] = typer.Option(None, "--dataset-col", help="Column naming the dataset each loss is on (none: one dataset)."),
    mixture_col: Optional[str] = typer.Option(None, "--mixture-col", help="Column naming what each run trained on: 'a', or 'a+b' for a pair."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Resamples for 90% intervals of every parameter (0: none for uni-modal laws; a pair always gets 200, its identifiability needs them)."),
    exclude_top_loss: int = typer.Option(0, "--exclude-top-loss", min=0, help="Drop the K highest-loss points of each law (Epoch: 5 for Chinchilla)."),
    holdout: str = typer.Option("none", "--holdout", help="largest: refit without the largest model size and report the error predicting it; none."),
    method: str = typer.Option("fast", "--method", help="fast (variable projection + compiled polish) or reference (L-BFGS-B from Epoch's 4,500-start grid)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Processes for the bootstrap (0: one per CPU core)."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Write laws.json and report.md only."),
    as_json: bool = typer.Option(False, "--json", help="Print laws.json to stdout instead of tables."),
) -> None:
    """Fit scaling laws to a results table: uni-modal per dataset, bi-modal per pair; writes laws.json, plots, report.md."""
    from mmlm.errors import MmlmError
    from mmlm.laws.forms import METHODS
    from mmlm.laws.report import write_outputs
    from mmlm.laws.results import HOLDOUTS, fit_table
    from mmlm.laws.table import read_table

    # (SciPy, Numba and matplotlib are imported only once the fitting and plotting start, so bad
    # input is reported at once.)
    if method not in METHODS:
        raise MmlmError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if holdout not in HOLDOUTS:
        raise MmlmError(f"--holdout must be one of {', '.join(HOLDOUTS)}, got {holdout!r}")
    table = read_table(results, n_col, d_col, flops_col, loss_col, dataset_col, mixture_col)
    options = dict(method=method, bootstrap=bootstrap, exclude_top_loss=exclude_top_loss, holdout=holdout,
                   seed=seed, jobs=jobs or os.cpu_count() or 1)
    if bootstrap or method == "reference":
        with progress_bar() as bar:
            tasks: dict[str, int] = {}

            def on_progress(label: str, advance: int, total: int) -> None:
                if label not in tasks:
                    tasks[label] = bar.add_task(f"fit {label}", total=total)
                bar.advance(tasks[label], advance)

            fitted = fit_table(table, on_progress=on_progress, **options)
    else:
        fitted = fit_table(table, **options)
    write_outputs(fitted, out, plots=not no_plots)
    laws = fitted.laws()
    if as_json:
        print_json(laws)
        return
    _show(laws)
    for kind in ("unimodal", "bimodal"):
        for name, d in laws[kind].items():
            for w in d["warnings"]:
                console.print(f"[yellow]warning (!):[/] {name}: {w}")
    _show_identifiability(laws)
    console.print(f"wrote [bold]{out / 'laws.json'}[/] and [bold]{out / 'report.md'}[/]"
                  + ("" if no_plots else " with the plots"))


def _num(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _show_identifiability(laws: dict) -> None:
    """The loss noise, and one loud warning per law its data do not identify."""
    noise = laws.get("noise") or {}
    if noise.get("sigma") is not None:
        how = {"repeats": f"from repeated runs, {noise.get('dof')} dof",
               "residuals": "from the uni-modal laws' residuals: an upper estimate"}[noise["method"]]
        console.print(f"loss noise: {100 * noise['sigma']:.3g}% ({how})")
    for kind, what in (("unimodal", "uni-modal law"), ("bimodal", "pair law")):
        for name, d in laws[kind].items():
            if d.get("identifiable") is False:
                console.print(f"[bold red]warning: the {what} {name} is NOT IDENTIFIABLE from these runs[/] "
                              f"(do not plan from it): " + "; ".join(d.get("why") or []))


def _show(laws: dict) -> None:
    """One table of coefficients per law kind, then one of bootstrap intervals when there are any."""
    from rich.table import Table

    for kind, title, params, extra in (
        ("unimodal", "uni-modal laws  L = E + A/N^alpha + B/D^beta", ("E", "A", "B", "alpha", "beta"), True),
        ("bimodal", "bi-modal laws  L = (Li + Lj)/2 - C + A/N^alpha + B/(Di+Dj)^beta", ("C", "A", "B", "alpha", "beta"), False),
    ):
        if not laws[kind]:
            continue
        t = Table(title=title)
        t.add_column("dataset" if extra else "pair")
        for c in (*params, "objective", "points") + (("holdout err",) if extra else ()):
            t.add_column(c, justify="right")
        for name, d in laws[kind].items():
            flag = " [yellow]![/]" if d["warnings"] else ""
            t.add_row(name + flag, *(_num(d[k]) for k in params), _num(d["objective"]), str(d["n_points"]),
                      *((_num(d["holdout_error"]),) if extra else ()))
        console.print(t)
        if any(d["ci"] for d in laws[kind].values()):
            level = next((d.get("ci_level") for d in laws["bimodal"].values()), None) or 0.9
            t = Table(title=f"{100 * level:g}% bootstrap intervals")
            t.add_column("dataset" if extra else "pair")
            for c in params:
                t.add_column(c, justify="right")
            for name, d in laws[kind].items():
                t.add_row(name, *(f"{_num(d['ci'][k][0])} - {_num(d['ci'][k][1])}" if k in d["ci"] else "-"
                                  for k in params))
            console.print(t)
