"""Train one model on a mixture of tokenized datasets (per-dataset losses, exact resume, --nproc DDP)."""
from __future__ import annotations

import inspect
import json
import threading
from pathlib import Path
from typing import Optional

import typer

from mmlm.errors import MmlmError

from .common import console, err_console, escape, print_json, progress_bar

EXIT_STOPPED = 3  # training stopped early (status says why); the last good checkpoint is intact


def train(**options) -> None:
    """Train one model on a mixture of tokenized datasets (per-dataset losses, exact resume, --nproc DDP)."""
    dry_run, list_sizes, json_out = options.pop("dry_run"), options.pop("list_sizes"), options.pop("json_out")
    if list_sizes:
        _list_sizes(options["data"], json_out)
        return
    from mmlm.train import config_from_options

    if options["size"] is None and None not in (options["n_layer"], options["d_model"], options["n_head"]):
        from mmlm.model import shape_name

        # a custom shape is named after itself unless --size names it
        options["size"] = shape_name(options["n_layer"], options["d_model"], options["n_head"])
    for name, value in options.items():  # flags not given are None (the config's default); paths as text
        options[name] = None if value is False else str(value) if isinstance(value, Path) else value
    if dry_run:
        from mmlm.speed import dry_run as estimate

        report = estimate(config_from_options(options))
        print_json(report) if json_out else console.print(_dry_run_table(report))
        return
    cfg = config_from_options(options)
    with _Progress() as progress:
        summary = _run_multi(cfg, progress) if cfg.nproc > 1 else _run_single(cfg, progress)
    _show_summary(summary, json_out)
    if summary["status"] != "done":
        err_console.print(summary["status"], style="bold yellow", highlight=False)
        raise typer.Exit(EXIT_STOPPED)


def _options() -> list[inspect.Parameter]:
    """The typer options of `mmlm train`: one per TrainConfig field declared for the command line (its
    type, help and default come from the dataclass), then the command's own."""
    from mmlm.train.config import cli_fields, help_of, option_kinds

    kinds, params = option_kinds(), []

    def add(name: str, annotation, default, help: str, flag: str | None = None) -> None:
        flag = flag or "--" + name.replace("_", "-")
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                        default=typer.Option(default, flag, help=help)))

    for f in cli_fields():
        kind = kinds[f.name][0]
        if kind is bool:
            add(f.name, bool, False, help_of(f))
        elif f.name == "nproc":
            add(f.name, int, f.default, f.metadata["help"])
        else:  # None: not given, the config's default
            add(f.name, Optional[Path] if f.metadata["path"] else Optional[kind], None, help_of(f))
    add("dry_run", bool, False, "Show parameters, memory per device, steps, FLOPs and the estimated wall time; "
        "allocate and write nothing.")
    add("list_sizes", bool, False, "List the model sizes with their parameter counts and exit.")
    add("json_out", bool, False, "Print plain JSON on stdout.", "--json")
    return params


train.__signature__ = inspect.Signature(_options(), return_annotation=None)
train.__annotations__ = {p.name: p.annotation for p in train.__signature__.parameters.values()}


def _list_sizes(data: Optional[Path], json_out: bool) -> None:
    from mmlm.model import DEFAULT_VOCAB_SIZE, size_table

    vocab_size = DEFAULT_VOCAB_SIZE
    if data is not None:
        from mmlm.data import open_root

        vocab_size = open_root(data)[1].size
    table = size_table(vocab_size)
    if json_out:
        print_json(table)
        return
    from rich.table import Table

    t = Table(title=f"model sizes (parameters for a vocabulary of {vocab_size})")
    for col in ("size", "params", "non-embedding", "layers", "d_model", "heads", "context"):
        t.add_column(col, justify="left" if col == "size" else "right")
    for name, row in table.items():
        t.add_row(name, f"{row['n_params']:,}", f"{row['n_params_nonembed']:,}", str(row["layers"]),
                  str(row["d_model"]), str(row["heads"]), str(row["seq_len"]))
    console.print(t)


class _Progress:
    """A progress bar of updates with the latest loss and tokens/s; renders `train`'s events.
    The bar appears with the first event, so a configuration error shows alone."""

    def __enter__(self):
        self._ctx = self.bar = None
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc) if self._ctx is not None else False

    def _start(self) -> None:
        from rich.progress import TextColumn

        self._ctx = progress_bar(TextColumn("{task.fields[info]}", markup=False))
        self.bar = self._ctx.__enter__()
        self.task = self.bar.add_task("train", total=None, info="")

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if self.bar is None:
            self._start()
        if kind == "start":
            self.bar.update(self.task, total=event["steps"], completed=event["step"],
                            info=f"{event['n_params']:,} params" + (" (resumed)" if event.get("resumed") else ""))
        elif kind == "step":
            evals = " ".join(f"{k[5:]} {v:.3f}" for k, v in event.items() if k.startswith("eval/") and v is not None)
            mfu = event.get("speed/mfu")
            info = (f"loss {event['loss']:.4f}  {event['tokens_per_s']:,.0f} tok/s"
                    + (f"  {event['speed/model_flops_per_s'] / 1e9:,.1f} GFLOP/s  MFU {mfu:.1%}" if mfu is not None else "")
                    + (f"  eval {evals}" if evals else ""))
            self.bar.update(self.task, completed=event["step"], info=info)
        elif kind == "restart":
            self.bar.console.print(f"[yellow]restart {event['restarts']}:[/] {escape(event['reason'])}; back to step "
                                   f"{event['step']}, learning rate x{event['lr_scale']:.3f}", highlight=False, markup=True)


def _run_single(cfg, progress) -> dict:
    from mmlm.train import train as run_training

    return run_training(cfg, on_log=progress)


def _run_multi(cfg, progress) -> dict:
    """Validate here, then run torchrun and render rank 0's JSON events."""
    from mmlm import distributed
    from mmlm.train import check, config_to_argv

    check(cfg)
    proc = distributed.launch(cfg.nproc, config_to_argv(cfg))
    errors: list[str] = []
    drain = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    drain.start()
    summary = None
    try:
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "summary":
                summary = event["summary"]
            else:
                progress(event)
        rc = proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    drain.join(timeout=10)
    if summary is None:
        from mmlm.errors import last_error_line

        reasons = [e.strip()[len("error: "):] for e in errors if e.startswith("error: ")]
        why = last_error_line("".join(errors)) or "no error message"
        raise MmlmError(reasons[0] if reasons else f"training processes failed (exit code {rc}): {why}")
    return summary


def _show_summary(summary: dict, json_out: bool) -> None:
    if json_out:
        print_json(summary)
        return
    from rich.table import Table

    t = Table(title=f"run summary: {summary['status']}", show_header=False)
    t.add_column(justify="left")
    t.add_column(justify="right")
    t.add_row("parameters", f"{summary['n_params']:,} ({summary['n_params_nonembed']:,} non-embedding)")
    t.add_row("updates / tokens", f"{summary['steps']:,} / {summary['tokens']:,}")
    t.add_row("FLOPs (6ND)", f"{summary['flops']:.3g}")
    for name, v in summary["eval_loss"].items():
        t.add_row(f"eval loss {name}", "-" if v is None else f"{v:.4f}")
    t.add_row("spikes / restarts", f"{summary['spikes']} / {summary['restarts']}")
    if summary.get("tokens_per_second"):
        t.add_row("wall / training seconds", f"{summary['wall_seconds']:.1f} / {summary['train_seconds']:.1f}")
        t.add_row("tokens/s, model FLOP/s", f"{summary['tokens_per_second']:,.0f}, {summary['model_flops_per_second']:.3g}")
        t.add_row("MFU", f"{summary['mfu']:.1%} of {summary['peak_flops']:.3g} FLOP/s" + (" (peak exceeded: check it)" if summary.get("peak_exceeded") else ""))
        t.add_row("peak", summary["peak_source"])
    console.print(t)


def _gb(x: float) -> str:
    return f"{x / 2**30:.2f} GiB"


def _dry_run_table(r: dict):
    from rich.table import Table

    t = Table(title=f"dry run: {r['size']} on {r['devices']} {r['device']} device(s)" + (" with FSDP" if r["fsdp"] else ""),
              show_header=False)
    t.add_column(justify="left")
    t.add_column(justify="right")
    t.add_row("parameters", f"{r['n_params']:,} ({r['n_params_nonembed']:,} non-embedding)")
    t.add_row("updates x batch tokens", f"{r['steps']:,} x {r['batch_tokens']:,} = {r['tokens']:,} tokens")
    t.add_row("FLOPs (per token)", f"{r['flops']:.3g} ({r['flops_per_token']:,})")
    t.add_row("memory per device: weights", _gb(r["bytes_weights"]))
    t.add_row("  gradients", _gb(r["bytes_grads"]))
    t.add_row("  AdamW states", _gb(r["bytes_adam"]))
    t.add_row(f"  activations ({r['micro_rows']} rows per micro-batch, checkpointing {r['activation_checkpointing']})",
              _gb(r["bytes_activations"]))
    t.add_row("  total", _gb(r["bytes_total"]))
    if r["seconds"] is not None:
        t.add_row(f"estimated wall time (MFU {r['assumed_mfu']:.0%})", f"{r['seconds'] / 3600:.3g} h ({r['device_hours']:.3g} device-hours)")
    t.add_row("peak", f"{r['peak_flops']:.3g} FLOP/s: {r['peak_source']}" if r["peak_flops"] else r["peak_source"])
    return t
