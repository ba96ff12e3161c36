"""Several processes training one model: DDP (gloo on CPU, nccl on GPU) and FSDP for big sizes.

Processes are started by torchrun (`mmlm train --nproc K` runs it for you), which sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous address. Every rank builds the same interleaver and
draws the same global batch, then trains on its own contiguous slice of the rows: the global
batch, and so the result, is the one a single process would train on.

State dicts go through torch.distributed.checkpoint's helpers, which give full, unwrapped
tensors (no "module." prefixes; FSDP shards gathered to rank 0) for plain, DDP and FSDP models alike.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from .errors import MmlmError
from .subprocs import SAFE_ENV


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def rows(self, n_rows: int) -> slice:
        """This rank's contiguous share of a global batch of n_rows rows."""
        return slice(self.rank * n_rows // self.world, (self.rank + 1) * n_rows // self.world)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()


def init(device_type: str) -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch_dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        torch_dist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local_rank)


def shutdown(dist: Dist) -> None:
    if dist.active and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def wrap(model: torch.nn.Module, dist: Dist, device: torch.device, fsdp: bool) -> torch.nn.Module:
    """DDP, or FSDP (each block sharded, then the root) when `fsdp`; the model itself when alone."""
    if not dist.active and not fsdp:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        if not torch_dist.is_initialized():
            raise MmlmError("--fsdp: needs a process group (run with --nproc K or torchrun)")
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full weights on CPU (on rank 0; other ranks may get an empty dict under FSDP)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Optimizer state keyed by parameter name: {"state": {name: {...}}, "param_groups": [...]}."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options())


def load_states(model: torch.nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optim: dict) -> None:
    """Load full states (every rank passes what it read from the checkpoint)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    opts = _options()
    set_model_state_dict(model, weights, options=opts)
    set_optimizer_state_dict(model, optimizer, optim, options=opts)


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The command that runs `python -m mmlm.train ARGV` in `nproc` processes on this machine."""
    return [sys.executable, "-P", "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "mmlm.train", *argv]


def launch(nproc: int, argv: list[str], env: dict | None = None) -> subprocess.Popen:
    """Start the processes; rank 0 writes one JSON event per line on stdout (see `mmlm.train.__main__`)."""
    if nproc < 1:
        raise MmlmError(f"--nproc {nproc}: must be at least 1")
    env = {**os.environ, **SAFE_ENV, **(env or {})}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.Popen(torchrun_command(nproc, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, bufsize=1)


# ---- per-block options: activation checkpointing and torch.compile --------------------------------

AC_MODES = ("none", "selective", "full")


def check_options(activation_checkpointing: str, peak_flops: float | None) -> None:
    if activation_checkpointing not in AC_MODES:
        raise MmlmError(f"--activation-checkpointing {activation_checkpointing!r}: choose from {', '.join(AC_MODES)}")
    if peak_flops is not None and not (math.isfinite(peak_flops) and peak_flops > 0):
        raise MmlmError(f"--peak-flops {peak_flops}: must be a positive number of FLOP/s (e.g. 989e12)")


def apply_block_options(model: torch.nn.Module, activation_checkpointing: str = "none", compile: bool = False) -> None:
    """In place, before wrapping (the order of torchtitan: checkpointing, compile, then FSDP):
    recompute the activations of every block (full) or every second block (selective, torchtitan's
    per-layer selective checkpointing) in the backward pass, and torch.compile each block.

    Both keep parameter names and the state dict unchanged, so checkpoints stay interchangeable."""
    from torch.utils.checkpoint import checkpoint

    for i, block in enumerate(model.blocks):
        if activation_checkpointing == "full" or (activation_checkpointing == "selective" and i % 2 == 0):
            inner = block.forward

            def forward(x, cache=None, layer=0, _inner=inner):
                if cache is not None or not torch.is_grad_enabled():  # decoding and evaluation: nothing to save
                    return _inner(x, cache, layer)
                return checkpoint(_inner, x, cache, layer, use_reentrant=False)

            block.forward = forward
        if compile:
            block.compile(dynamic=False)
