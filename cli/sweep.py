"""Run a grid of model sizes x token (or FLOP) budgets x mixtures; resumable; writes DIR/results.csv."""
from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Optional

import typer

from .common import console, err_console, print_error, print_json, progress_bar


def sweep(
    grid: Optional[Path] = typer.Argument(None, help="Grid file (TOML): data, sizes, tokens or flops, \\[mixtures.*], \\[train], \\[slurm]."),
    out: Path = typer.Option(..., "--out", help="Sweep folder: runs/<id>/ and results.csv go here."),
    preset: Optional[str] = typer.Option(None, "--preset", help="A built-in study instead of GRID: 'demo' (make demo, minutes) or 'cpu-study' (about an hour on 2 cores)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data root (overrides the grid's; the demo preset's default is data/demo)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Runs at a time (default: 1; the demo preset: one per core; slurm: all at once)."),
    launcher: str = typer.Option("local", "--launcher", help="local | submitit-local | slurm."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and what would happen to each; run nothing."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed runs again (resuming from their checkpoint)."),
    partition: Optional[str] = typer.Option(None, "--partition", help="SLURM partition (overrides the grid's \\[slurm] partition)."),
    gpus_per_run: Optional[int] = typer.Option(None, "--gpus-per-run", help="SLURM GPUs per run."),
    time_limit: Optional[str] = typer.Option(None, "--time-limit", help="SLURM time limit per run: minutes or H:MM:SS."),
    cpus_per_task: Optional[int] = typer.Option(None, "--cpus-per-task", help="SLURM CPUs per run (also its torch threads)."),
    mem: Optional[str] = typer.Option(None, "--mem", help="SLURM memory per run: GB or e.g. 16G."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Run a grid of model sizes x token (or FLOP) budgets x mixtures; resumable; writes DIR/results.csv."""
    # (long only by its option declarations: the work is mmlm.sweep's sweep_grid and run_sweep)
    from mmlm.sweep import GridError, run_sweep
    from mmlm.sweep.grid_source import sweep_grid

    try:
        with _demo_data_bar() as on_progress:
            the_grid, jobs = sweep_grid(grid, preset, out=out, data=data, jobs=jobs, launcher=launcher,
                                        dry_run=dry_run, on_data_progress=on_progress)
    except GridError as e:
        for problem in e.problems:
            print_error(problem)
        raise typer.Exit(1)

    slurm = {"partition": partition, "gpus_per_run": gpus_per_run, "cpus_per_task": cpus_per_task,
             "time_limit": time_limit, "mem": mem}
    view = SweepView(dry_run)
    try:
        with view.live():
            report = run_sweep(the_grid, out, jobs=jobs, launcher=launcher, retry_failed=retry_failed,
                               dry_run=dry_run, slurm=slurm, on_event=view.on_event)
    except KeyboardInterrupt:
        err_console.print(f"[yellow]stopped[/]: run the same command again to continue ({view.counts_line()})", markup=True)
        raise typer.Exit(130)
    if json_out:
        print_json(report)
    elif dry_run:
        console.print(_plan_table(report["runs"]))
        _print_compute(report["compute"])
    else:
        _print_report(report)
    if not dry_run and any(r["state"] == "failed" for r in report["runs"]):
        raise typer.Exit(1)


@contextmanager
def _demo_data_bar():
    """on_progress(stage, done, total, tokens) of the demo data build: a bar, started at the first call."""
    with ExitStack() as stack:
        bar = task = None

        def on_progress(stage, done, total, tokens=0):
            nonlocal bar, task
            if bar is None:
                bar = stack.enter_context(progress_bar())
                task = bar.add_task("demo data", total=None)
            bar.update(task, description=f"demo data: {stage}", completed=done, total=total or None)

        yield on_progress


def _plan_table(runs):
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(runs)} runs", title_justify="left")
    for col in ("run", "size", "mixture", "tokens", "action", "detail"):
        table.add_column(col, justify="right" if col == "tokens" else "left")
    for r in runs:
        detail = r.get("detail", "")
        if r.get("branch_of"):  # a cooldown branch trains only its last tokens
            detail = (detail + "; " if detail else "") + f"branch of {r['branch_of']} from {r['start_tokens']:,} tokens"
        table.add_row(r["id"], r["size"], r["mixture"], f"{r['tokens']:,}",
                      Text.from_markup(_ACTION_STYLE.get(r["action"], escape(r["action"]))), Text(detail))
    return table


def _print_compute(c: dict) -> None:
    line = (f"training compute {c['flops']:.3g} FLOPs, {c['device_hours']:.3g} device-hours at {c['assumed_mfu']:.0%} MFU "
            f"of {c['peak_flops']:.3g} FLOP/s ({c['peak_source']})")
    if c["saved"] > 0:
        line += (f"; separate runs would need {c['flops_separate']:.3g} FLOPs ({c['device_hours_separate']:.3g} "
                 f"device-hours): branching saves {c['saved']:.0%}")
    console.print(line, highlight=False)


_ACTION_STYLE = {"skip": "[green]skip (done)[/]", "resume": "[cyan]resume[/]", "new": "new", "retry": "[yellow]retry[/]",
                 "failed": "[red]failed (not retried; --retry-failed)[/]", "busy": "[magenta]busy[/]"}


def _print_report(report) -> None:
    from rich.markup import escape

    counts = report["counts"]
    console.print(f"{counts['done']} done, {counts['failed']} failed, {counts['interrupted'] + counts['new']} not run, "
                  f"{counts['busy']} busy elsewhere · {report['rows']} rows in {report['results']}")
    for r in report["runs"]:
        if r["state"] == "failed":
            console.print(f"[red]failed[/] {escape(r['id'])}: {escape(r['detail'])}", highlight=False, markup=True)
        elif r["state"] == "busy":
            console.print(f"[magenta]busy[/] {escape(r['id'])}: {escape(r['detail'])}", highlight=False, markup=True)
    if counts["failed"]:
        console.print("rerun with --retry-failed to try the failed runs again; errors are in runs/<id>/error.txt")


class SweepView:
    """The live table on stderr: counts of queued / running / done / failed runs, each running run's
    progress, and an ETA from the FLOPs done so far (6 N D per run)."""

    MAX_ROWS = 16

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.runs: dict[str, dict] = {}
        self.t0 = time.monotonic()
        self.t_work = None  # when training was first seen making progress: the ETA's clock (start-up excluded)
        self._live = None

    def live(self):
        from contextlib import nullcontext

        from rich.live import Live

        if self.dry_run:
            return nullcontext()
        self._live = Live(console=err_console, refresh_per_second=2, transient=False, get_renderable=self.render)
        return self._live

    def on_event(self, e: dict) -> None:
        kind = e["event"]
        if kind == "plan":
            for r in e["runs"]:
                state = {"skip": "done", "failed": "failed", "busy": "busy"}.get(r["action"], "queued")
                self.runs[r["id"]] = {**r, "status": state, "tokens_done": 0, "tokens_start": None, "loss": None,
                                      "error": r["detail"] if state == "failed" else "", "session": state == "queued"}
        elif kind == "start":
            self.runs[e["id"]].update(status="running", started=time.monotonic())
        elif kind == "progress":
            self.t_work = self.t_work or time.monotonic()
            r = self.runs[e["id"]]
            if r["tokens_start"] is None:
                r["tokens_start"] = e["tokens"] if r["action"] in ("resume", "retry") else 0
            r.update(tokens_done=e["tokens"], loss=e.get("loss"))
        elif kind == "end":
            r = self.runs[e["id"]]
            r.update(status={"done": "done", "failed": "failed"}.get(e["status"], e["status"]), error=e.get("error", ""))
            if e["status"] == "done":
                r["tokens_done"] = r["tokens"]
                if r["tokens_start"] is None:
                    r["tokens_start"] = 0
        if self._live is not None:
            self._live.refresh()

    def counts(self) -> dict:
        out = {s: 0 for s in ("queued", "running", "done", "failed", "busy")}
        for r in self.runs.values():
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    def counts_line(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in self.counts().items() if n)

    def eta(self) -> str:
        done_work = left_work = 0.0
        for r in self.runs.values():
            if not r["session"]:
                continue
            six_n = 6.0 * r["n_params"]
            start = r["tokens_start"] or 0
            if r["status"] in ("queued", "running"):
                left_work += six_n * max(0, r["tokens"] - max(r["tokens_done"], start))
            done_work += six_n * max(0, r["tokens_done"] - start)
        elapsed = time.monotonic() - (self.t_work or time.monotonic())
        if left_work == 0:
            return "-"
        if done_work <= 0 or elapsed < 1:
            return "estimating"
        return _hms(left_work * elapsed / done_work)

    def render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        c = self.counts()
        head = Text.assemble(
            ("sweep ", "bold"), f"{c['queued']} queued · ", (f"{c['running']} running", "cyan"), " · ",
            (f"{c['done']} done", "green"), " · ", (f"{c['failed']} failed", "red" if c["failed"] else ""),
            f" · {c['busy']} busy" if c["busy"] else "", f" · elapsed {_hms(time.monotonic() - self.t0)} · ETA {self.eta()}",
        )
        table = Table(box=None, pad_edge=False)
        for col, just in (("run", "left"), ("status", "left"), ("tokens", "right"), ("loss", "right")):
            table.add_column(col, justify=just)
        order = {"running": 0, "failed": 1, "queued": 2, "busy": 3, "done": 4}
        rows = sorted(self.runs.values(), key=lambda r: (order.get(r["status"], 5), r["id"]))
        style = {"running": "cyan", "failed": "red", "done": "green", "busy": "magenta", "queued": "dim"}
        for r in rows[: self.MAX_ROWS]:
            status = r["status"] if r["status"] != "failed" else f"failed: {r['error']}"[:60]
            table.add_row(r["id"], Text(status, style=style.get(r["status"], "")),
                          f"{r['tokens_done']:,}/{r['tokens']:,}" if r["status"] == "running" else f"{r['tokens']:,}",
                          f"{r['loss']:.3f}" if isinstance(r["loss"], (int, float)) and r["status"] == "running" else "")
        parts = [head, table]
        if len(rows) > self.MAX_ROWS:
            parts.append(Text(f"... {len(rows) - self.MAX_ROWS} more", style="dim"))
        return Group(*parts)


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
