"""Measure the paper's training phenomena on your runs, and test whether two datasets are distinct modalities.

mmlm analyze PATH --out DIR [--json]: plateaus, spikes, batch-size guideline, competition; PATH is a run folder (metrics.jsonl) or a sweep folder. `mmlm analyze PATH --help` lists its options.

mmlm analyze modality --data DIR --a NAME --b NAME --run RUN [--json]: the modality test.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from .common import console, err_console, escape, print_json, progress_bar

DEFAULT_COMMAND = "path"


class PathFirstGroup(TyperGroup):
    """`mmlm analyze PATH ...` runs the hidden `path` command: anything that is not a subcommand
    name (or --help) in first place is taken as the start of its arguments."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=PathFirstGroup, help=__doc__, no_args_is_help=True)


@contextmanager
def _progress():
    """A progress callback (mmlm.progress) drawing a bar on a terminal; silent otherwise, so that
    logs and errors stay clean."""
    if not err_console.is_terminal:
        yield None
        return
    with progress_bar() as bar:
        tasks = {}

        def report(stage: str, done: int, total: int, tokens: int = 0) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield report


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


@app.command(DEFAULT_COMMAND, hidden=True)
def analyze(
    path: Path = typer.Argument(..., help="A run folder holding metrics.jsonl, or a sweep folder (DIR/runs/<run>/)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for analysis.json and the plots. Default: PATH/analysis."),
    json_out: bool = typer.Option(False, "--json", help="Print the analysis as JSON instead of tables."),
    laws: Optional[Path] = typer.Option(None, "--laws", help="laws.json from `mmlm fit`: adds alpha_ij / beta_ij trends."),
    window: Optional[int] = typer.Option(None, "--window", help="Plateau rule: smoothing and comparison window in steps. Default: 5% of the run's steps, at least 3 logged points."),
    tol: float = typer.Option(0.01, "--tol", help="Plateau rule: relative loss drop over one window below which a dataset is flat (and above which the average is falling)."),
    min_len: Optional[int] = typer.Option(None, "--min-len", help="Plateau rule: shortest plateau kept, in steps. Default: 2 x window."),
    spike_k: float = typer.Option(5.0, "--spike-k", help="Spike rule: a gradient norm above k x the median of the previous window is a spike."),
    spike_window: int = typer.Option(100, "--spike-window", help="Spike rule: how many previous gradient norms the median looks at."),
    spike_min_history: int = typer.Option(20, "--spike-min-history", help="Spike rule: norms needed before spikes count."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Write analysis.json only."),
) -> None:
    """Plateaus, spikes, batch-size guideline and competition over training, for a run or a sweep."""
    from mmlm.analysis import PlateauRule, analyze_path
    from mmlm.stability import SpikeRule

    out = out if out is not None else path / "analysis"
    with _progress() as report:
        result = analyze_path(
            path, out,
            plateau_rule=PlateauRule(window=window, tol=tol, min_len=min_len),
            spike_rule=SpikeRule(k=spike_k, window=spike_window, min_history=spike_min_history),
            laws=laws, make_plots=not no_plots, on_progress=report,
        )
    if json_out:
        print_json(result)
        return
    _render(result, out)


def _render(result: dict, out: Path) -> None:
    from rich.table import Table

    t = Table(title="runs: plateaus and spikes")
    t.add_column("run", overflow="fold")
    for c in ("datasets", "size", "N", "spikes", "plateaus (start-end steps)", "plateau fraction"):
        t.add_column(c)
    for rid, info in result["runs"].items():
        ivals = result["plateaus"].get(rid)
        frac = result["plateau_fraction"].get(rid)
        t.add_row(
            rid, ", ".join(info["datasets"]), _fmt(info["size"]), _fmt(info["n_params"]), str(result["spikes"][rid]),
            "\n".join(f"{d}: " + (", ".join(f"{a}-{b}" for a, b in iv) or "none") for d, iv in ivals.items()) if ivals else "-",
            "\n".join(f"{d}: {f:.3f}" for d, f in frac.items()) if frac else "-",
        )
    console.print(t)

    sizes = result["by_size"]["sizes"]
    if len(sizes) > 1:
        t = Table(title="by model size (mixed runs)")
        for c in ("size", "N", "runs", "mean plateau fraction", "mean spikes"):
            t.add_column(c)
        for s in sizes:
            t.add_row(_fmt(s["size"]), str(s["n_params"]), str(s["runs"]), f"{s['plateau_fraction']:.3f}", f"{s['spikes']:.1f}")
        console.print(t)
    trends = {k: v for k, v in result["by_size"]["spearman"].items() if v is not None}
    for size, sp in result["batch_size"]["spearman"].items():
        trends.update({f"{k} (size {size})": v for k, v in sp.items() if k != "pairs" and v is not None})
    if trends:
        t = Table(title="trends (Spearman rank correlation)")
        t.add_column("relation")
        t.add_column("rho")
        for k, v in trends.items():
            t.add_row(k, f"{v:+.2f}")
        console.print(t)

    if result["batch_size"]["groups"]:
        t = Table(title="batch-size guideline: lowest final eval loss")
        for c in ("pair", "size", "batch sizes tried", "best batch", "alpha_ij", "beta_ij"):
            t.add_column(c)
        for g in result["batch_size"]["groups"]:
            t.add_row(g["pair"], _fmt(g["size"] or g["n_params"]), ", ".join(str(r["batch_tokens"]) for r in g["runs"]),
                      str(g["best_batch_tokens"]), _fmt(g["alpha_ij"]), _fmt(g["beta_ij"]))
        console.print(t)

    if result["competition"]:
        t = Table(title="competition: 0.5 (L_i + L_j) / L_ij  (> 1: mixed model better; barrier at 1)")
        for c in ("run", "pair", "uni-modal runs", "final ratio", "max ratio", "first step above 1"):
            t.add_column(c, overflow="fold")
        for rid, c in result["competition"].items():
            t.add_row(rid, "|".join(c["pair"]), ", ".join(f"{d}: {', '.join(ids)}" for d, ids in c["unimodal"].items()), f"{c['final_ratio']:.3f}",
                      f"{c['max_ratio']:.3f}", _fmt(c["first_step_above_barrier"]))
        console.print(t)
    for note in result["notes"]:
        err_console.print(f"note: {note}", style="dim", highlight=False)
    console.print(f"wrote {out / 'analysis.json'}" + (f" and {len(result['plots'])} plots" if result["plots"] else ""))


@app.command("modality")
def modality(
    data: Path = typer.Option(..., "--data", help="Data root (from `mmlm tokenize`) holding datasets A and B."),
    a: str = typer.Option(..., "--a", help="Dataset A: the one the model in --run was trained on."),
    b: str = typer.Option(..., "--b", help="Dataset B: the one tested against A."),
    run: Path = typer.Option(..., "--run", help="Run folder of a model trained on A (config.json + model.safetensors)."),
    sigma: float = typer.Option(3.0, "--sigma", help="B is a distinct modality when its mean perplexity exceeds sigma x A's."),
    max_docs: int = typer.Option(200, "--max-docs", help="Held-out documents scored per dataset."),
    device: str = typer.Option("cpu", "--device", help="Device for the model (cpu, cuda, ...)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """The paper's modality test: is B a distinct modality from A under a model trained on A?"""
    from mmlm.analysis import modality_test

    with _progress() as report:
        result = modality_test(run, data, a, b, sigma=sigma, max_docs=max_docs, device=device, on_progress=report)
    if json_out:
        print_json(result)
        return
    from rich.table import Table

    t = Table(title=f"modality test: model {result['run']} (trained on {a})")
    for c in ("dataset", "documents", "mean perplexity", "median perplexity"):
        t.add_column(c)
    for name in (a, b):
        d = result["datasets"][name]
        t.add_row(name, str(d["documents"]), f"{d['mean_ppl']:.4g}", f"{d['median_ppl']:.4g}")
    console.print(t)
    verdict = "a DISTINCT modality from" if result["distinct"] else "the SAME modality as"
    console.print(f"{b} is {verdict} {a}: mean perplexity ratio {result['ratio']:.3g} "
                  f"{'>' if result['distinct'] else '<='} sigma = {result['sigma']:g} "
                  f"({result['share_b_above']:.0%} of {b}'s documents exceed {result['threshold']:.4g})")


@app.command("digits")
def digits(
    run: Path = typer.Option(..., "--run", help="A run trained on captioned digits, or a sweep folder (its largest image-text run is used)."),
    data: Path = typer.Option(..., "--data", help="Data root holding the image-text dataset (the judge's real digits)."),
    out: Path = typer.Option(..., "--out", help="Folder for digits.json and digits.png."),
    per_digit: int = typer.Option(6, "--per-digit", help="Images drawn per digit (10 digits)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the samples and the judge's split."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature."),
    top_k: int = typer.Option(0, "--top-k", help="Sample among the k most likely codes (0: off)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Caption-conditioned generation, scored: draw digits from "a handwritten digit k", classify them."""
    from mmlm.digits import largest_run, score_digits

    run_dir = run if (run / "config.json").is_file() else largest_run(run)
    result = score_digits(run_dir, data, out=out, per_digit=per_digit, seed=seed, temperature=temperature, top_k=top_k)
    if json_out:
        print_json(result)
        return
    console.print(f"digits from captions ({run_dir.name}): accuracy {result['accuracy']:.1%} on {result['n']} images, "
                  f"chance {result['chance']:.0%} (judge: {result['classifier_accuracy']:.1%} on real digits) "
                  f"-> {out / 'digits.json'}, {out / 'digits.png'}", highlight=False)


@app.command("study")
def study(
    out: Path = typer.Argument(..., help="The sweep folder of a preset (after `mmlm fit ... --out OUT/laws`)."),
    data: Path = typer.Option(Path("data/demo"), "--data", help="Its data root."),
    preset: str = typer.Option("demo", "--preset", help="The preset the sweep ran: demo or cpu-study."),
    design: bool = typer.Option(True, "--design/--no-design", help="Simulate, with `mmlm law design`, what would identify each pair law that is not identified (about a minute)."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Processes for those simulations (0: one per CPU core)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """The preset study's report: unigram baselines, largest losses, standard errors, held-out-size errors, checks."""
    from mmlm.errors import MmlmError
    from mmlm.sweep.demo import PRESETS
    from mmlm.sweep.demo_report import study_summary, write_study_report

    if preset not in PRESETS:
        raise MmlmError(f"--preset {preset!r}: unknown preset (known: {', '.join(PRESETS)})")
    summary = study_summary(out, data, preset, design=design, jobs=jobs or os.cpu_count() or 1)
    path = write_study_report(out, summary)
    if json_out:
        print_json(summary)
        return
    from rich.table import Table

    t = Table(title=f"study {preset}: {summary['runs']} runs, fewest steps {summary['min_steps']}, "
                    f"max share error {_fmt(summary['max_share_error'])}")
    for c in ("dataset", "unigram H", "largest loss", "SE", "below H", "held-out err", "identifiable"):
        t.add_column(c)
    for d, r in summary["datasets"].items():
        t.add_row(d, _fmt(r["unigram_entropy"]), _fmt(r.get("largest_loss")), _fmt(r.get("largest_se"), 2),
                  _fmt(r.get("below_unigram")), _fmt(r.get("holdout_error")), str(r.get("identifiable", "-")))
    console.print(t)
    g = summary["digits"]
    if g:
        console.print(f"digits from captions: accuracy {g['accuracy']:.1%} on {g['n']} images (chance {g['chance']:.0%})")
    for c in summary["checks"]:
        console.print(f"[{'green' if c['ok'] else 'red'}]{'ok  ' if c['ok'] else 'MISS'}[/] {escape(c['check'])}", highlight=False,
                      markup=True)
    console.print(f"report: {path}")
