"""Fit scaling laws to a results table: uni-modal per dataset, bi-modal per pair; writes laws.json, plots, report.md."""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Optional

import typer

from .common import console, err_console, escape, print_json, progress_bar


def fit(
    results: Path = typer.Argument(..., help="results.csv of `mmlm sweep`, or any CSV with N, D (or FLOPs) and loss columns."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for laws.json, the PNG plots and report.md."),
    n_col: Optional[str] = typer.Option(None, "--n-col", help="Column of N, model parameters (sweep table: n_params)."),
    d_col: Optional[str] = typer.Option(None, "--d-col", help="Column of D, training tokens."),
    flops_col: Optional[str] = typer.Option(None, "--flops-col", help="Column of training FLOPs C; then D = C / (6N)."),
    loss_col: Optional[str] = typer.Option(None, "--loss-col", help="Column of the loss (default: loss)."),
    dataset_col: Optional[str] = typer.Option(None, "--dataset-col", help="Column naming the dataset each loss is on (none: one dataset)."),
    mixture_col: Optional[str] = typer.Option(None, "--mixture-col", help="Column naming what each run trained on: 'a', or 'a+b' for a pair."),
    datasets: Optional[str] = typer.Option(None, "--datasets", help="Fit only these datasets and their pairs, comma-separated (the runs trained on others are left out)."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Resamples for 90% intervals of every parameter (0: none for uni-modal laws; a pair always gets 200, its identifiability needs them)."),
    exclude_top_loss: int = typer.Option(0, "--exclude-top-loss", min=0, help="Drop the K highest-loss points of each law (Epoch: 5 for Chinchilla)."),
    holdout: str = typer.Option("none", "--holdout", help="Refit without these points and report the errors predicting them: largest, sizes:K (the K largest sizes), 'N>=1e10', 'D>3e11' (>=, >, <=, <), or none."),
    objective: str = typer.Option("huber-log", "--objective", help="huber-log (Huber, delta 1e-3, on log loss: Hoffmann, Epoch) or lsq (least squares on the loss: Gadre et al.)."),
    tie_exponents: bool = typer.Option(False, "--tie-exponents", help="One exponent for N and D: alpha = beta."),
    law: str = typer.Option("chinchilla", "--law", help="chinchilla (E + A/N^alpha + B/D^beta) or data-constrained (Muennighoff et al.: needs --unique-col)."),
    unique_col: Optional[str] = typer.Option(None, "--unique-col", help="Column of the unique tokens U_D of each run (repeated data; --law data-constrained)."),
    isoflop: bool = typer.Option(False, "--isoflop", help="Also Chinchilla's Approach 2: a parabola per compute budget, N*(C) ~ C^a, D*(C) ~ C^b, L*(C)."),
    isoflop_curve: str = typer.Option("parabola", "--isoflop-curve", help="The curve whose minimum is N*(C): parabola (Approach 2, through the lowest point and 2 neighbours each side) or akima (Porian et al.'s spline)."),
    group_col: Optional[str] = typer.Option(None, "--group-col", help="Column(s), comma-separated, splitting the table into separate IsoFLOP analyses (configurations)."),
    method: str = typer.Option("fast", "--method", help="fast (variable projection + compiled polish) or reference (L-BFGS-B from Epoch's 4,500-start grid)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Processes for the bootstrap (0: one per CPU core)."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Write laws.json and report.md only."),
    as_json: bool = typer.Option(False, "--json", help="Print laws.json to stdout instead of tables."),
) -> None:
    """Fit scaling laws to a results table: uni-modal per dataset, bi-modal per pair; writes laws.json, plots, report.md."""
    # (long only by its option declarations: the work is mmlm.laws.fit_file.fit_results)
    from mmlm.laws import fit_results

    with _bars() as on_progress:
        laws = fit_results(
            results, out, n_col=n_col, d_col=d_col, flops_col=flops_col, loss_col=loss_col, dataset_col=dataset_col,
            mixture_col=mixture_col, unique_col=unique_col, group_col=group_col, plots=not no_plots, on_warning=_warn,
            datasets=None if datasets is None else [d.strip() for d in datasets.split(",") if d.strip()],
            method=method, bootstrap=bootstrap, exclude_top_loss=exclude_top_loss, holdout=holdout, seed=seed,
            jobs=jobs, objective=objective, tie_exponents=tie_exponents, law=law, isoflop=isoflop,
            isoflop_curve=isoflop_curve, on_progress=on_progress if bootstrap or method == "reference" else None)
    if as_json:
        print_json(laws)
        return
    _render(laws, out, plots=not no_plots)


def _warn(line: str) -> None:
    err_console.print(f"warning: {line}", style="yellow", highlight=False, soft_wrap=True)


@contextmanager
def _bars():
    """on_progress(label, done, total, tokens): one bar per label, started at the first call (so that bad
    input, reported before any fitting, is not drawn over a bar)."""
    with ExitStack() as stack:
        bar, tasks = None, {}

        def on_progress(label: str, done: int, total: int, tokens: int = 0) -> None:
            nonlocal bar
            if bar is None:
                bar = stack.enter_context(progress_bar())
            if label not in tasks:
                tasks[label] = bar.add_task(f"fit {label}", total=total)
            bar.update(tasks[label], completed=done)

        yield on_progress


def _render(laws: dict, out: Path, plots: bool) -> None:
    from mmlm.laws.holdout import describe

    _show(laws)
    if laws.get("isoflop"):
        _show_isoflop(laws["isoflop"])
    for kind in ("unimodal", "bimodal"):
        for name, d in laws[kind].items():
            if d.get("law") == "data-constrained":
                console.print(f"data-constrained {name}: R_D* = {_num(d['R_D'])}, R_N* = {_num(d['R_N'])}")
            if d.get("holdout"):
                console.print(f"holdout {name}: {describe(d['holdout'])}")
    for kind in ("unimodal", "bimodal"):
        for name, d in laws[kind].items():
            for w in d["warnings"]:
                console.print(f"[yellow]warning (!):[/] {escape(name)}: {escape(w)}", markup=True)
    _show_identifiability(laws)
    console.print(f"wrote [bold]{escape(str(out / 'laws.json'))}[/] and [bold]{escape(str(out / 'report.md'))}[/]"
                  + ("" if not plots else " with the plots"), markup=True)


def _show_isoflop(iso: dict) -> None:
    from rich.table import Table

    t = Table(title="IsoFLOP analysis (Approach 2)  N* ~ C^a, D* ~ C^b, L*(C) = E + A C^-alpha")
    for c in ("group", "budgets", "a", "a interval", "b", "b interval", "L*: E", "A", "alpha"):
        t.add_column(c, justify="left" if c == "group" else "right")
    for key, g in iso.items():
        ci, ll = g.get("ci") or {}, g.get("loss_law") or {}
        iv = lambda k: f"{_num(ci[k][0])} - {_num(ci[k][1])}" if k in ci else "-"  # noqa: E731
        t.add_row(key, f"{len(g['optima'])}/{len(g['optima']) + len(g['skipped'])}", _num(g["a"]), iv("a"),
                  _num(g["b"]), iv("b"), _num(ll.get("E")), _num(ll.get("A")), _num(ll.get("alpha")))
    console.print(t)
    for key, g in iso.items():
        if g.get("warning"):
            console.print(f"[yellow]warning (!):[/] isoflop {escape(key)}: {escape(g['warning'])}", markup=True)


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
                console.print(f"[bold red]warning: the {what} {escape(name)} is NOT IDENTIFIABLE from these runs[/] "
                              f"(do not plan from it): " + escape("; ".join(d.get("why") or [])), markup=True)


def _show(laws: dict) -> None:
    """One table of coefficients per law kind, then one of bootstrap intervals when there are any."""
    from rich.table import Table
    from rich.text import Text

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
            t.add_row(Text.from_markup(escape(name) + flag), *(_num(d[k]) for k in params), _num(d["objective"]), str(d["n_points"]),
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
