"""A run's resolved settings: TrainConfig's defaults filled in for its size, data and devices, and every number checked.

`resolve` probes the GPU's free memory for the automatic micro-batch (and whether the model needs FSDP).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import distributed, schedule
from ..errors import MmlmError
from ..model import SIZES, check_shape, count_params, model_config, resolve_attention
from ..objectives import OBJECTIVES
from .config import (CPU_BATCH_TOKENS, CPU_MICRO_TOKENS, CPU_PRESETS, DEFAULT_LR, MIN_LR_SHARE, PAPER_BATCH_TOKENS,
                     PAPER_WARMUP, SHARE_OF_RUN, STALL_BATCHES, STALL_SHARE, TrainConfig)


@dataclass
class Resolved:
    """The resolved settings of a run."""
    seq_len: int
    batch_rows: int
    batch_tokens: int
    steps: int
    lr: float
    warmup: int
    eval_every: int
    ckpt_every: int
    stall_tokens: int
    micro_rows: int
    device: str
    attention: str
    fsdp: bool


def lr_at(step: int, peak: float, warmup: int, steps: int) -> float:
    """Learning rate of update `step` (0-based): linear warm-up, then linear decay to 10% of peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (MIN_LR_SHARE + (1 - MIN_LR_SHARE) * (1 - progress))


def shape_of(cfg: TrainConfig) -> tuple[int, int, int] | None:
    """The run's custom shape (n_layer, d_model, n_head), or None for a named size."""
    return check_shape(cfg.n_layer, cfg.d_model, cfg.n_head, "--n-layer/--d-model/--n-head: ")


# the demo's peak-LR check (docs/demo.md): best of 1.5e-3, 3e-3, 6e-3, 1.2e-2 at d_model 24 and 64, 400 steps
# of 512 text tokens
SHAPE_LR_CHECK = ((24, 1.2e-2), (64, 6e-3))


def default_lr(cfg: TrainConfig) -> float:
    """Peak learning rate when --lr is not given: per named size; for a custom shape, interpolated in
    log-log against d_model through the peak-LR check and the micro and small presets (clamped at the ends)."""
    shape = shape_of(cfg)
    if shape is None:
        return DEFAULT_LR[cfg.size]
    pts = sorted([*SHAPE_LR_CHECK, *((SIZES[s].d_model, DEFAULT_LR[s]) for s in ("micro", "small"))])
    return float(np.exp(np.interp(np.log(shape[1]), [np.log(d) for d, _ in pts], [np.log(v) for _, v in pts])))


def model_config_of(cfg: TrainConfig, vocab_size: int):
    """The model a run of cfg trains: its named size, or its custom shape (--n-layer/--d-model/--n-head)."""
    return model_config(cfg.size, vocab_size, cfg.seq_len, shape=shape_of(cfg))


def resolve(cfg: TrainConfig, model_seq_len: int, vocab_size: int, world: int, device: torch.device) -> Resolved:
    """Fill in the defaults and check the numbers; one-line MmlmError on anything impossible."""
    seq_len = model_seq_len
    shape = shape_of(cfg)
    cpu_preset = cfg.size in CPU_PRESETS if shape is None else shape[1] <= SIZES["small"].d_model
    batch_tokens = cfg.batch_tokens or (CPU_BATCH_TOKENS if cpu_preset else PAPER_BATCH_TOKENS)
    if batch_tokens < seq_len:
        raise MmlmError(f"--batch-tokens {batch_tokens}: less than one row of --seq-len {seq_len}")
    batch_rows = batch_tokens // seq_len
    batch_tokens = batch_rows * seq_len
    if world > 1 and batch_rows % world:
        raise MmlmError(f"--batch-tokens: {batch_rows} rows of {seq_len} tokens do not split evenly over {world} processes")
    for name in ("tokens", "lr", "weight_decay", "stall_tokens"):  # inf / nan would pass the checks below
        v = getattr(cfg, name)
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise MmlmError(f"--{name.replace('_', '-')} {v}: must be a finite number")
    tokens = cfg.tokens
    if tokens < batch_tokens:
        raise MmlmError(f"--tokens {tokens:g}: too small for one step of {batch_tokens} tokens (--batch-tokens)")
    steps = math.ceil(int(tokens) / batch_tokens)
    lr = cfg.lr if cfg.lr is not None else default_lr(cfg)
    if not lr > 0:
        raise MmlmError(f"--lr {lr}: must be positive")
    warmup = cfg.warmup if cfg.warmup is not None else min(PAPER_WARMUP, math.ceil(steps / SHARE_OF_RUN))
    if warmup < 0:
        raise MmlmError(f"--warmup {warmup}: must not be negative")
    warmup = max(1, warmup)
    for name in ("eval_every", "ckpt_every", "micro_batch", "threads"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise MmlmError(f"--{name.replace('_', '-')} {v}: must be at least 1")
    if cfg.max_restarts < 0:
        raise MmlmError(f"--max-restarts {cfg.max_restarts}: must not be negative")
    if cfg.weight_decay < 0:
        raise MmlmError(f"--weight-decay {cfg.weight_decay}: must not be negative")
    eval_every = cfg.eval_every or max(1, steps // SHARE_OF_RUN)
    ckpt_every = cfg.ckpt_every or max(1, steps // SHARE_OF_RUN)
    # the paper restarts after 500M tokens without progress (0.5% of 100B); small runs need a longer view
    stall = cfg.stall_tokens if cfg.stall_tokens is not None else max(STALL_SHARE * steps, STALL_BATCHES) * batch_tokens
    if stall < 0:
        raise MmlmError(f"--stall-tokens {stall}: must not be negative (0 disables the stall rule)")
    micro = _micro_rows(cfg, seq_len, vocab_size, batch_rows // world, device)
    fsdp = bool(cfg.fsdp) or (device.type == "cuda" and world > 1 and _too_big_for_one_gpu(model_config_of(cfg, vocab_size), vocab_size, seq_len, device))
    if fsdp and world < 2:
        raise MmlmError("--fsdp: shards the model over several processes; use --nproc K (K >= 2) or torchrun")
    _check_recipe(cfg, steps, warmup)
    return Resolved(seq_len=seq_len, batch_rows=batch_rows, batch_tokens=batch_tokens, steps=steps, lr=float(lr),
                warmup=int(warmup), eval_every=int(eval_every), ckpt_every=int(ckpt_every),
                stall_tokens=int(stall), micro_rows=int(micro), device=str(device),
                attention=resolve_attention(cfg.attention, device), fsdp=fsdp)


def _cuda_micro_rows(c, seq_len: int, vocab: int, local_rows: int, device: torch.device) -> int:
    """Rows per forward that fit in about half the free memory (activations ~ 34 d L bytes/token in bf16, plus logits)."""
    per_token = 34 * c.d_model * c.n_layer * 2 + 10 * vocab
    free, _ = torch.cuda.mem_get_info(device)
    weights_and_adam = 16 * count_params(c)["n_params"]
    rows = int(max(0, free * 0.5 - weights_and_adam) // (per_token * seq_len))
    return max(1, min(local_rows, rows))


def _too_big_for_one_gpu(c, vocab: int, seq_len: int, device: torch.device) -> bool:
    """Weights, gradients and AdamW state (16 bytes per parameter) over 80% of the GPU: shard them."""
    n = count_params(c)["n_params"]
    return 16 * n > 0.8 * torch.cuda.get_device_properties(device).total_memory


def _micro_rows(cfg: TrainConfig, seq_len: int, vocab_size: int, local_rows: int, device: torch.device) -> int:
    """Rows per forward pass: --micro-batch, else what fits the GPU, else CPU_MICRO_TOKENS per forward."""
    if cfg.micro_batch:
        return min(cfg.micro_batch, local_rows)
    if device.type == "cuda":
        return _cuda_micro_rows(model_config_of(cfg, vocab_size), seq_len, vocab_size, local_rows, device)
    return max(1, min(local_rows, CPU_MICRO_TOKENS // seq_len))


def _check_recipe(cfg: TrainConfig, steps: int, warmup: int) -> None:
    """The objective, schedule, branch point, block options and TensorBoard (after the numbers)."""
    if cfg.objective not in OBJECTIVES:
        raise MmlmError(f"--objective {cfg.objective!r}: choose from {', '.join(OBJECTIVES)}")
    schedule.check(cfg.schedule, cfg.decay_frac, steps, max(1, warmup), cfg.keep_steps)
    if cfg.branch_from:
        schedule.check_branch_point(Path(cfg.branch_from), steps, cfg.decay_frac, cfg.schedule)
    distributed.check_options(cfg.activation_checkpointing, cfg.peak_flops)
    if cfg.tensorboard:
        from ..board import check_available

        check_available()
