"""Train one model on a mixture of tokenized datasets (per-dataset losses, exact resume, --nproc DDP)."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Optional

import typer

from mmlm.errors import MmlmError

from .common import console, err_console, escape, print_json, progress_bar

EXIT_STOPPED = 3  # training stopped early (status says why); the last good checkpoint is intact


def train(
    data: Optional[Path] = typer.Option(None, "--data", help="Data root made by `mmlm tokenize` (vocab.json + datasets)."),
    size: Optional[str] = typer.Option(None, "--size", help="Model size by name (see --list-sizes). Default: pico."),
    mix: Optional[str] = typer.Option(None, "--mix", help="Datasets and token shares, e.g. text=0.5,code=0.5."),
    tokens: Optional[float] = typer.Option(None, "--tokens", help="Training tokens, e.g. 2e6. Default 2e6."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder to write (config, weights, metrics, summary)."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Context length. Default: the size's (256 for CPU presets, 2048 for the paper grid)."),
    batch_tokens: Optional[int] = typer.Option(None, "--batch-tokens", help="Tokens per update. Default: 8192 for CPU presets, 2^20 for the paper grid."),
    micro_batch: Optional[int] = typer.Option(None, "--micro-batch", help="Rows per forward pass (gradient accumulation fills the batch). Default: automatic."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate. Default: per size (GPT-3/OPT values for the paper grid)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Warm-up updates. Default: min(500, 10% of the updates)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay on matrices and embeddings. Default 0.1."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the initialisation, data order and CM3 masks. Default 0."),
    objective: Optional[str] = typer.Option(None, "--objective", help="clm (causal LM, default) or cm3 (causal-masked, the paper's)."),
    attention: Optional[str] = typer.Option(None, "--attention", help="auto (xformers on CUDA when installed, else sdpa), sdpa or xformers."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads per process. Default: torch's."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Held-out evaluation every N updates (and at the end). Default: 10% of the run."),
    eval_tokens: Optional[int] = typer.Option(None, "--eval-tokens", help="Held-out tokens per dataset. Default 16384."),
    ckpt_every: Optional[int] = typer.Option(None, "--ckpt-every", help="Checkpoint every N updates (and at the end). Default: 10% of the run."),
    stall_tokens: Optional[float] = typer.Option(None, "--stall-tokens", help="Restart when the smoothed loss has not improved for this many tokens (0: never). Default: max(25% of the run, 20 batches)."),
    max_restarts: Optional[int] = typer.Option(None, "--max-restarts", help="Restarts (lr x0.8 each) before giving up. Default 3."),
    split_seed: Optional[int] = typer.Option(None, "--split-seed", help="Seed of the held-out split (independent of --seed). Default 0."),
    fsdp: bool = typer.Option(False, "--fsdp", help="Shard weights and optimizer state over the processes (FSDP) instead of DDP (automatic on CUDA when they do not fit one GPU)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint (settings come from its config.json)."),
    nproc: int = typer.Option(1, "--nproc", help="Processes to train with (torchrun; DDP over gloo on CPU, nccl on GPU)."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="linear (warm-up, linear decay to 10%; default) or wsd (warm-up, stable, decay)."),
    decay_frac: Optional[float] = typer.Option(None, "--decay-frac", help="wsd: share of the updates in the final decay. Default 0.2."),
    peak_flops: Optional[float] = typer.Option(None, "--peak-flops", help="FLOP/s that MFU is measured against (default: the device's dense bf16 datasheet peak, else a measured matmul, cached)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile each block (off by default: no gain at the CPU sizes, seconds of compile time)."),
    activation_checkpointing: Optional[str] = typer.Option(None, "--activation-checkpointing", help="none (default), selective (every second block) or full: recompute activations in the backward pass."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log the metrics to TensorBoard in RUN/tensorboard (needs the tensorboard extra)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show parameters, memory per device, steps, FLOPs and the estimated wall time; allocate and write nothing."),
    list_sizes: bool = typer.Option(False, "--list-sizes", help="List the model sizes with their parameter counts and exit."),
    json_out: bool = typer.Option(False, "--json", help="Print plain JSON on stdout."),
) -> None:
    """Train one model on a mixture of tokenized datasets (per-dataset losses, exact resume, --nproc DDP)."""
    if list_sizes:
        _list_sizes(data, json_out)
        return
    from mmlm.train import config_from_options

    options = dict(data=None if data is None else str(data), size=size, mix=mix, tokens=tokens,
                   out=None if out is None else str(out), seq_len=seq_len, batch_tokens=batch_tokens,
                   micro_batch=micro_batch, lr=lr, warmup=warmup, weight_decay=weight_decay, seed=seed,
                   objective=objective, attention=attention, device=device, threads=threads,
                   eval_every=eval_every, eval_tokens=eval_tokens, ckpt_every=ckpt_every,
                   stall_tokens=stall_tokens, max_restarts=max_restarts, split_seed=split_seed,
                   fsdp=fsdp or None, resume=resume or None, nproc=nproc, schedule=schedule, decay_frac=decay_frac,
                   peak_flops=peak_flops, compile=compile_model or None,
                   activation_checkpointing=activation_checkpointing, tensorboard=tensorboard or None)
    if dry_run:
        from mmlm.speed import dry_run as estimate

        report = estimate(config_from_options(options))
        print_json(report) if json_out else console.print(_dry_run_table(report))
        return
    cfg = config_from_options(options)
    with _Progress() as progress:
        summary = _run_multi(cfg, progress) if nproc > 1 else _run_single(cfg, progress)
    _show_summary(summary, json_out)
    if summary["status"] != "done":
        err_console.print(summary["status"], style="bold yellow", highlight=False)
        raise typer.Exit(EXIT_STOPPED)


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
