"""Use fitted laws (laws.json of `mmlm fit`): predict a loss, the compute-optimal size, the competition barrier, a plan."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, escape, print_json

app = typer.Typer(help=__doc__, no_args_is_help=True)

LAWS = typer.Argument(..., help="laws.json written by `mmlm fit`.")
JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


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
    from mmlm.laws.results import any_law, load_laws

    _positive("--n", n)
    _positive("--d", d)
    name, law = any_law(load_laws(laws_path), dataset)
    loss = float(law.predict(n, d / 2, d / 2) if isinstance(law, BimodalLaw) else law.predict(n, d))
    out = {"dataset": name, "n": n, "d": d, "loss": loss}
    if as_json:
        print_json(out)
    else:
        _kv_table(f"predicted loss ({name})", out)


@app.command("optimal")
def optimal(
    laws_path: Path = LAWS,
    flops: float = typer.Option(..., "--flops", help="Compute budget C in FLOPs (C = 6 N D)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Law to use: a dataset, or a pair a,b (tokens split evenly)."),
    as_json: bool = JSON,
) -> None:
    """Compute-optimal model size N, tokens D and loss for a FLOP budget."""
    from mmlm.laws.planning import optimal as optimal_point
    from mmlm.laws.results import any_law, load_laws

    name, law = any_law(load_laws(laws_path), dataset)
    res = optimal_point(law, flops)
    out = {"dataset": name, "flops": res["flops"], "n": res["n"], "d": res["d"], "loss": res["loss"]}
    if as_json:
        print_json(out)
    else:
        _kv_table(f"compute-optimal point ({name})", out)


@app.command("barrier")
def barrier(
    laws_path: Path = LAWS,
    pair: str = typer.Option(..., "--pair", help="Two datasets trained together, a,b."),
    n: Optional[float] = typer.Option(None, "--n", help="With --d: which side of the barrier this N lies on."),
    d: Optional[float] = typer.Option(None, "--d", help="Total tokens Di + Dj of the point to place."),
    points: int = typer.Option(13, "--points", min=2, help="Points of the barrier curve to list."),
    as_json: bool = JSON,
) -> None:
    """The competition barrier of a pair: where synergy C equals A/N^alpha + B/(Di+Dj)^beta."""
    from rich.table import Table

    from mmlm.laws.planning import barrier as barrier_of
    from mmlm.laws.results import bimodal_law, load_laws

    key, law = bimodal_law(load_laws(laws_path), pair)
    res = barrier_of(law, n, d, points)
    res = {"pair": key, **res}
    if as_json:
        print_json(res)
        return
    console.print(f"[bold]{escape(key)}[/]: synergy C = {_num(res['C'])}; competition A/N^alpha + B/D^beta with "
                  f"A = {_num(res['A'])}, alpha = {_num(res['alpha'])}, B = {_num(res['B'])}, beta = {_num(res['beta'])}",
                  markup=True)
    if res["n_min"] is None:
        console.print("synergy is never reached: C is not above A/N^alpha at any N")
    else:
        console.print(f"smallest N at which synergy is possible at all (D -> infinity): [bold]{_num(res['n_min'])}[/]",
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
    as_json: bool = JSON,
) -> None:
    """One mixed model or two separate models for a FLOP budget: which reaches the lower loss, and the best split."""
    from rich.table import Table

    from mmlm.laws.planning import plan as plan_of
    from mmlm.laws.results import bimodal_law, load_laws

    key, law = bimodal_law(load_laws(laws_path), datasets)
    res = {"pair": key, **plan_of(law, flops)}
    if as_json:
        print_json(res)
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
    console.print(f"winner at equal per-dataset tokens: [bold]{escape(str(res['winner']))}[/] "
                  f"(by {_num(res['advantage'])} in mean loss)", markup=True)
