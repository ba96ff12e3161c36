"""Use fitted laws (laws.json of `mmlm fit`): predict a loss, the compute-optimal size, the competition barrier, a plan, a design."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, escape, print_json

app = typer.Typer(help=__doc__, no_args_is_help=True)

LAWS = typer.Argument(..., help="laws.json written by `mmlm fit`.")
JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
FORCE = typer.Option(False, "--force", help="Answer even from a pair law that `mmlm fit` marked not identifiable.")


def _identified(laws: dict, key: str, force: bool, uni: bool = False) -> str | None:
    """None, or (with --force) the line saying which laws are unidentified; without --force an error."""
    from mmlm.errors import MmlmError

    bad = []
    d = laws["bimodal"][key]
    if d.get("identifiable") is False:
        bad.append(f"the pair law {key} is not identifiable (" + "; ".join(d.get("why") or []) + ")")
    for name in key.split("|", 1) if uni else ():
        u = laws["unimodal"].get(name, {})
        if u.get("identifiable") is False:
            bad.append(f"the uni-modal law {name} is not identifiable (" + "; ".join(u.get("why") or []) + ")")
    if not bad:
        return None
    if not force:
        raise MmlmError(f"{laws.get('_path', 'laws.json')}: " + "; ".join(bad)
                        + ": no answer from it (more or more precise runs: see `mmlm law design`; --force answers anyway)")
    return "FORCED (--force): " + "; ".join(bad) + ": this answer is not determined by the data"


def _num(x) -> str:
    return "-" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))


def _kv_table(title: str, rows: dict) -> None:
    from rich.table import Table

    t = Table(title=title, show_header=False)
    t.add_column("", style="bold")
    t.add_column("", justify="right")
    for k, v in rows.items():
        t.add_row(k, _num(v))
    console.print(t)


def _show(out: dict, title: str, as_json: bool) -> None:
    """A one-law answer: JSON, or a table of its fields."""
    if as_json:
        print_json(out)
    else:
        _kv_table(title, out)


def _pair_law(laws_path: Path, pair: str, force: bool, uni: bool = False):
    """(laws, pair key, BimodalLaw, forced line or None) of the pair named `pair`; see `_identified`."""
    from mmlm.laws.fitted import bimodal_law, load_laws

    laws = load_laws(laws_path)
    key, law = bimodal_law(laws, pair)
    return laws, key, law, _identified(laws, key, force, uni=uni)


def _json_or_forced(res: dict, forced: str | None, as_json: bool) -> bool:
    """Record the --force line in `res`; print `res` as JSON (True: nothing else to show) or the line."""
    if forced:
        res["forced"] = forced
    if as_json:
        print_json(res)
        return True
    if forced:
        console.print(f"[bold red]{escape(forced)}[/]", markup=True)
    return False


def _positive(name: str, v: float) -> float:
    import math

    from mmlm.errors import MmlmError

    if not math.isfinite(v) or v <= 0:
        raise MmlmError(f"{name} must be a finite positive number, got {v!r}")
    return v


@app.command("predict")
def predict(
    laws_path: Path = LAWS,
    n: float = typer.Option(..., "--n", help="Model parameters N."),
    d: float = typer.Option(..., "--d", help="Training tokens D (for a pair: Di + Dj, split evenly)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Law to use: a dataset, or a pair a,b (needed when laws.json has several)."),
    as_json: bool = JSON,
) -> None:
    """Predicted loss at N parameters and D tokens."""
    from mmlm.laws.bimodal import BimodalLaw
    from mmlm.laws.fitted import any_law, load_laws

    _positive("--n", n)
    _positive("--d", d)
    name, law = any_law(load_laws(laws_path), dataset)
    loss = float(law.predict(n, d / 2, d / 2) if isinstance(law, BimodalLaw) else law.predict(n, d))
    _show({"dataset": name, "n": n, "d": d, "loss": loss}, f"predicted loss ({name})", as_json)


@app.command("optimal")
def optimal(
    laws_path: Path = LAWS,
    flops: float = typer.Option(..., "--flops", help="Compute budget C in FLOPs (C = 6 N D)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Law to use: a dataset, or a pair a,b (tokens split evenly)."),
    as_json: bool = JSON,
) -> None:
    """Compute-optimal model size N, tokens D and loss for a FLOP budget."""
    from mmlm.laws.planning import optimal as optimal_point
    from mmlm.laws.fitted import any_law, load_laws

    name, law = any_law(load_laws(laws_path), dataset)
    res = optimal_point(law, flops)
    _show({"dataset": name, "flops": res["flops"], "n": res["n"], "d": res["d"], "loss": res["loss"]},
          f"compute-optimal point ({name})", as_json)


@app.command("barrier")
def barrier(
    laws_path: Path = LAWS,
    pair: str = typer.Option(..., "--pair", help="Two datasets trained together, a,b."),
    n: Optional[float] = typer.Option(None, "--n", help="With --d: which side of the barrier this N lies on."),
    d: Optional[float] = typer.Option(None, "--d", help="Total tokens Di + Dj of the point to place."),
    points: int = typer.Option(13, "--points", min=2, help="Points of the barrier curve to list."),
    force: bool = FORCE,
    as_json: bool = JSON,
) -> None:
    """The competition barrier of a pair: where synergy C equals A/N^alpha + B/(Di+Dj)^beta."""
    from rich.table import Table

    from mmlm.laws.planning import barrier as barrier_of

    laws, key, law, forced = _pair_law(laws_path, pair, force)
    res = barrier_of(law, n, d, points)
    res = {"pair": key, **res, "ci_barrier": laws["bimodal"][key].get("ci_barrier"),
           "identifiable": laws["bimodal"][key].get("identifiable")}
    if _json_or_forced(res, forced, as_json):
        return
    console.print(f"[bold]{escape(key)}[/]: synergy C = {_num(res['C'])}; competition A/N^alpha + B/D^beta with "
                  f"A = {_num(res['A'])}, alpha = {_num(res['alpha'])}, B = {_num(res['B'])}, beta = {_num(res['beta'])}",
                  markup=True)
    if res["n_min"] is None:
        console.print("synergy is never reached: C is not above A/N^alpha at any N")
    else:
        ci = (res["ci_barrier"] or {}).get("n_min")
        within = f" (interval {_num(ci[0])} - {_num(ci[1]) if ci[1] is not None else 'unbounded'})" if ci else ""
        console.print(f"smallest N at which synergy is possible at all (D -> infinity): [bold]{_num(res['n_min'])}[/]{within}",
                      markup=True)
        t = Table(title="barrier: beyond D one mixed model beats two separate ones of the same size")
        t.add_column("N", justify="right")
        t.add_column("D = Di + Dj", justify="right")
        for row in res["curve"]:
            t.add_row(_num(row["n"]), _num(row["d"]))
        console.print(t)
    if "point" in res:
        p = res["point"]
        colour = "green" if p["side"] == "synergy" else "red"
        console.print(f"N = {_num(p['n'])}, D = {_num(p['d'])}: synergy {_num(p['synergy'])} vs competition "
                      f"{_num(p['competition'])} -> [{colour}]{p['side']}[/] side (margin {_num(p['margin'])})", markup=True)


@app.command("plan")
def plan(
    laws_path: Path = LAWS,
    flops: float = typer.Option(..., "--flops", help="Compute budget C in FLOPs for both datasets together."),
    datasets: str = typer.Option(..., "--datasets", help="The two datasets, a,b (their pair must have a bi-modal law)."),
    force: bool = FORCE,
    as_json: bool = JSON,
) -> None:
    """One mixed model or two separate models for a FLOP budget: which reaches the lower loss, and the best split."""
    from rich.table import Table

    from mmlm.laws.planning import plan as plan_of

    _, key, law, forced = _pair_law(laws_path, datasets, force, uni=True)
    res = {"pair": key, **plan_of(law, flops)}
    if _json_or_forced(res, forced, as_json):
        return
    i, j = key.split("|", 1)
    m, s = res["mixed"], res["separate"]
    t = Table(title=f"{key} at C = {_num(res['flops'])} FLOPs: mean loss of the two datasets")
    for c in ("plan", "model sizes", f"tokens {i} / {j}", "mean loss"):
        t.add_column(c, justify="right")
    t.add_row("one mixed model", _num(m["n"]), f"{_num(m['d_i'])} / {_num(m['d_j'])}", _num(m["loss"]))
    t.add_row(f"two separate (split {s['split']:.2f} : {1 - s['split']:.2f})", f"{_num(s['n_i'])} / {_num(s['n_j'])}",
              f"{_num(s['d_i'])} / {_num(s['d_j'])}", _num(s["loss"]))
    t.add_row("two separate, same size as mixed", _num(m["n"]), f"{_num(m['d_i'])} / {_num(m['d_j'])}",
              _num(s["even_split_loss"]))
    free = res["separate_free"]
    if free:
        t.add_row(f"two separate, each compute-optimal (split {free['split']:.2f})",
                  f"{_num(free['i']['n'])} / {_num(free['j']['n'])}",
                  f"{_num(free['i']['d'])} / {_num(free['j']['d'])}", _num(free["loss"]))
    console.print(t)
    against = ("the best free separate plan (each model compute-optimal)" if res["compared_with"] == "separate_free"
               else "separate models at the same per-dataset tokens")
    console.print(f"winner at C = {_num(res['flops'])}: [bold]{escape(str(res['winner']))}[/] "
                  f"(mixed vs {against}, by {_num(res['advantage'])} in mean loss)", markup=True)
    console.print(f"at equal per-dataset tokens (the paper's comparison): {res['winner_equal_tokens']} "
                  f"(by {_num(res['advantage_equal_tokens'])})")


def _numbers(option: str, text: Optional[str]):
    from mmlm.errors import MmlmError

    if text is None:
        return None
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MmlmError(f"{option} needs comma-separated numbers like 1e7,3e7,1e8; got {text!r}") from None
    if not vals:
        raise MmlmError(f"{option} is empty")
    return vals


@app.command("design")
def design(
    laws_path: Path = LAWS,
    pair: str = typer.Option(..., "--pair", help="The pair whose law to simulate, a,b."),
    noise: Optional[float] = typer.Option(None, "--noise", help="Loss noise (std of log loss; 0.003 = 0.3%). Default: the one `mmlm fit` estimated."),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="Model sizes N, comma-separated (default: the fitted study's)."),
    tokens: Optional[str] = typer.Option(None, "--tokens", help="Per-dataset budgets D, comma-separated: uni-modal runs at D, mixed at D + D (default: the study's)."),
    seeds: int = typer.Option(20, "--seeds", help="Simulated studies."),
    resamples: int = typer.Option(200, "--resamples", min=10, help="Bootstrap resamples per simulated study."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Processes (0: one per CPU core)."),
    as_json: bool = JSON,
) -> None:
    """How precisely would a paired grid of runs pin down a pair law? Simulate it from the laws and fit each study."""
    import os

    from mmlm.laws.design import design as design_of
    from mmlm.laws.design import setup
    from mmlm.laws.fitted import load_laws

    from .common import progress_bar

    laws = load_laws(laws_path)
    grid = dict(noise=noise, sizes=_numbers("--sizes", sizes), tokens=_numbers("--tokens", tokens), seeds=seeds)
    setup(laws, pair, **grid)  # bad input: one line, before any simulation starts
    kwargs = dict(grid, resamples=resamples, jobs=jobs or os.cpu_count() or 1)
    if as_json:
        print_json(design_of(laws, pair, **kwargs))
        return
    with progress_bar() as bar:
        task = bar.add_task("simulated studies", total=seeds)

        def on_progress(stage: str, done: int, total: int, tokens: int = 0) -> None:
            bar.update(task, completed=done)

        res = design_of(laws, pair, on_progress=on_progress, **kwargs)
    console.print(f"[bold]{escape(res['pair'])}[/]: {len(res['sizes'])} sizes x {len(res['tokens'])} budgets "
                  f"({res['runs']['unimodal_each']} uni-modal runs per dataset, {res['runs']['mixed']} mixed) "
                  f"at {100 * res['noise']:.3g}% noise, {res['seeds']} simulated studies", markup=True)
    if "warning" in res:
        console.print(f"[bold red]warning:[/] {escape(res['warning'])}", markup=True)
    level = f"{100 * res['level']:g}%"
    _kv_table("expected precision", {
        "P(pair law identifiable)": res["p_identifiable"],
        f"median {level} interval width of C": res["median_ci_width_C"],
        "  relative to C": res["median_ci_width_C_relative"],
        f"median {level} interval of the barrier N (decades)": res["median_ci_width_barrier_decades"],
        "median relative error of C": res["median_rel_error_C"],
        f"coverage of C's {level} interval": res["coverage_C"],
        f"coverage of the barrier's {level} interval": res["coverage_barrier"],
    })
