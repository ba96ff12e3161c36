"""The options of a training run, declared once: TrainConfig's fields carry their type, default and help.

From them come the typer options of `mmlm train` (cli/train.py), the flags of `python -m mmlm.train`
(`config_to_argv` / `parser`) and the check of a grid's [train] table (`option_kinds`).

Recipe (paper defaults): AdamW(0.9, 0.98, eps 1e-8), weight decay on matrices and embeddings,
gradient clipping at 1.0, linear warm-up then linear (polynomial, power 1) decay to 10% of the peak
learning rate at the last step, bf16 autocast on CUDA, fp32 on CPU with denormals flushed.
"""
from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, dataclass, field, fields


CPU_PRESETS = ("pico", "nano", "micro", "mini", "small")
# Peak learning rates: GPT-3 / OPT for the paper grid; CPU presets tuned on the demo data.
DEFAULT_LR = {"pico": 3e-3, "nano": 2e-3, "micro": 2e-3, "mini": 1.5e-3, "small": 1e-3, "8M": 1e-3,
              "125M": 6e-4, "350M": 3e-4, "760M": 2.5e-4, "1.3B": 2e-4, "2.7B": 1.6e-4, "6.7B": 1.2e-4,
              "13B": 1e-4, "30B": 1e-4}
PAPER_BATCH_TOKENS = 1 << 20  # the paper's 1M-token batches
CPU_BATCH_TOKENS = 8192
PAPER_WARMUP = 500
MIN_LR_SHARE = 0.1  # decay to 10% of peak
LR_RESTART_FACTOR = 0.8  # the paper's restart rule
CLIP = 1.0
BETAS = (0.9, 0.98)
SMOOTHING = 0.9  # EMA of the training loss for the stall rule
CPU_MICRO_TOKENS = 8192  # automatic micro-batch on CPU: at most this many tokens per forward
STALL_SHARE, STALL_BATCHES = 0.25, 20  # default stall window: max(25% of the run, 20 batches)
SHARE_OF_RUN = 10  # default eval and checkpoint cadence: every 1/10 of the run
SWEEP_FILES = ("sweep.json", "error.txt")  # what a sweep puts in a run folder before training it


def opt(default, help: str, *, cli: bool = True, path: bool = False):
    """A TrainConfig field: `help` for --help (its default is appended from `default`), `cli` False for
    an option only sweeps set (not a flag of `mmlm train`), `path` for a file or folder."""
    return field(default=default, metadata={"help": help, "cli": cli, "path": path})


@dataclass
class TrainConfig:
    """Every `mmlm train` option. None means "the default for this size / run" (see `resolved.resolve`)."""
    data: str = opt("", "Data root made by `mmlm tokenize` (vocab.json + datasets).", path=True)
    out: str = opt("", "Run folder to write (config, weights, metrics, summary).", path=True)
    size: str = opt("pico", "Model size by name (see --list-sizes), or the name of a custom shape.")
    n_layer: int | None = opt(None, "Custom shape: transformer blocks (with --d-model and --n-head).")
    d_model: int | None = opt(None, "Custom shape: width (a multiple of --n-head).")
    n_head: int | None = opt(None, "Custom shape: attention heads.")
    mix: str = opt("", "Datasets and token shares, e.g. text=0.5,code=0.5.")
    tokens: float = opt(2e6, "Training tokens, e.g. 2e6.")
    seq_len: int | None = opt(None, "Context length. Default: the size's (256 for CPU presets, 2048 for the paper grid).")
    batch_tokens: int | None = opt(None, f"Tokens per update. Default: {CPU_BATCH_TOKENS} for CPU presets, "
                                         f"2^{PAPER_BATCH_TOKENS.bit_length() - 1} for the paper grid.")
    micro_batch: int | None = opt(None, "Rows per forward pass (gradient accumulation fills the batch). Default: automatic.")
    lr: float | None = opt(None, "Peak learning rate. Default: per size (GPT-3/OPT values for the paper grid).")
    warmup: int | None = opt(None, f"Warm-up updates. Default: min({PAPER_WARMUP}, {100 // SHARE_OF_RUN}% of the updates).")
    weight_decay: float = opt(0.1, "AdamW weight decay on matrices and embeddings.")
    seed: int = opt(0, "Seed of the initialisation, data order and CM3 masks.")
    objective: str = opt("clm", "clm (causal LM) or cm3 (causal-masked, the paper's).")
    attention: str = opt("auto", "auto (xformers on CUDA when installed, else sdpa), sdpa or xformers.")
    device: str = opt("auto", "auto, cpu or cuda.")
    threads: int | None = opt(None, "CPU threads per process. Default: torch's.")
    eval_every: int | None = opt(None, f"Held-out evaluation every N updates (and at the end). "
                                       f"Default: {100 // SHARE_OF_RUN}% of the run.")
    eval_tokens: int = opt(16384, "Held-out tokens per dataset.")
    ckpt_every: int | None = opt(None, f"Checkpoint every N updates (and at the end). Default: {100 // SHARE_OF_RUN}% of the run.")
    stall_tokens: float | None = opt(None, "Restart when the smoothed loss has not improved for this many tokens (0: never). "
                                           f"Default: max({STALL_SHARE:.0%} of the run, {STALL_BATCHES} batches).")
    max_restarts: int = opt(3, f"Restarts (lr x{LR_RESTART_FACTOR} each) before giving up.")
    split_seed: int = opt(0, "Seed of the held-out split (independent of --seed).")
    fsdp: bool = opt(False, "Shard weights and optimizer state over the processes (FSDP) instead of DDP "
                            "(automatic on CUDA when they do not fit one GPU).")
    resume: bool = opt(False, "Continue the run in --out from its last checkpoint (settings come from its config.json).")
    # processes `mmlm train --nproc` starts (inside them the world size comes from torchrun)
    nproc: int = opt(1, "Processes to train with (torchrun; DDP over gloo on CPU, nccl on GPU).")
    # cluster-scale training (docs/cluster.md)
    schedule: str = opt("linear", f"linear (warm-up, linear decay to {MIN_LR_SHARE:.0%}) or wsd (warm-up, stable, decay).")
    decay_frac: float = opt(0.2, "wsd: share of the updates in the final decay.")
    keep_steps: str | None = opt(None, "Updates whose checkpoints are kept as branch points (\"120,240\").", cli=False)
    branch_from: str | None = opt(None, "A branch point to start this (fresh) run from.", cli=False)
    peak_flops: float | None = opt(None, "FLOP/s that MFU is measured against (default: the device's dense bf16 "
                                         "datasheet peak, else a measured matmul, cached).")
    compile: bool = opt(False, "torch.compile each block (off by default: no gain at the CPU sizes, seconds of compile time).")
    activation_checkpointing: str = opt("none", "none, selective (every second block) or full: recompute activations "
                                                "in the backward pass.")
    tensorboard: bool = opt(False, "Also log the metrics to TensorBoard in RUN/tensorboard (needs the tensorboard extra).")
    tensorboard_dir: str | None = opt(None, "TensorBoard folder. Default: RUN/tensorboard.", cli=False)


# settings a resumed run must share with its start (with the mixture, the model and the resolved
# batch, schedule and stall rule); the others (device, threads, eval/checkpoint cadence, ...) may change
IDENTITY = ("size", "tokens", "weight_decay", "seed", "objective", "eval_tokens", "split_seed", "schedule", "decay_frac")


def option_kinds() -> dict[str, tuple[type, bool]]:
    """{option: (its type: int, float, str or bool; whether None is allowed)}, from the annotations."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for name, hint in hints.items():
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        out[name] = (args[0], type(None) in typing.get_args(hint))
    return out


def _shown(v) -> str:
    """A default as --help shows it (2e6, not 2e+06)."""
    return f"{v:g}".replace("e+0", "e").replace("e+", "e") if isinstance(v, float) else str(v)


def help_of(f) -> str:
    """An option's help with its default (taken from the dataclass, never restated by hand)."""
    text = f.metadata["help"]
    if f.default in (None, "", MISSING) or isinstance(f.default, bool) or "Default" in text:
        return text
    return f"{text} Default: {_shown(f.default)}."


def cli_fields():
    """The TrainConfig fields that are flags of `mmlm train`."""
    return [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]


def config_to_argv(cfg: TrainConfig) -> list[str]:
    """Command-line flags of `python -m mmlm.train` that rebuild cfg (None fields are left out)."""
    argv = []
    for f in fields(TrainConfig):
        v = getattr(cfg, f.name)
        if v is None or f.name == "nproc":
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            argv += [flag] if v else []
        else:
            argv += [flag, repr(v) if isinstance(v, float) else str(v)]
    return argv


def parser() -> argparse.ArgumentParser:
    """The flags of `python -m mmlm.train` (every option but --nproc; not given = None)."""
    p = argparse.ArgumentParser(prog="python -m mmlm.train", description="mmlm training (one process of torchrun, or alone)")
    for name, (kind, _) in option_kinds().items():
        if name == "nproc":
            continue
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            p.add_argument(flag, action="store_true", default=None)
        else:
            p.add_argument(flag, type=kind, default=None)
    return p
