"""Training: one model on a mixture of datasets, with per-dataset losses, restarts and exact resume.

    summary = train(TrainConfig(data="data/demo", size="pico", mix="text=0.5,code=0.5", tokens=2e6, out="runs/a"))

The pieces: `data.Mixture` (datasets, held-out split, the interleaver), `objectives` (clm / cm3),
`model.GPT`, `checkpoint` (atomic safetensors checkpoints), `distributed` (DDP / FSDP), and the
spike rule of `stability`. `Trainer` composes them; `train` runs it. `python -m mmlm.train ...`
is the same with command-line flags, for torchrun.

Recipe (paper defaults): AdamW(0.9, 0.98, eps 1e-8), weight decay on matrices and embeddings,
gradient clipping at 1.0, linear warm-up then linear (polynomial, power 1) decay to 10% of the peak
learning rate at the last step, bf16 autocast on CUDA, fp32 on CPU with denormals flushed.
Each step's loss is the mean over every weighted target token of the global batch, however the
batch is split into micro-batches and processes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import atomic, checkpoint, distributed, schedule, speed
from .data import PAD_ID, Mixture, parse_mix
from .bounds import check_memory
from .errors import MmlmError
from .jsonio import lines, loads, read_json
from .model import GPT, SIZES, check_shape, count_params, model_config, resolve_attention
from .objectives import OBJECTIVES, Batch, CausalMasked, make_objective
from .stability import SpikeDetector

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
SWEEP_FILES = ("sweep.json", "error.txt")  # what a sweep puts in a run folder before training it


@dataclass
class TrainConfig:
    """Every `mmlm train` option. None means "the default for this size / run" (see `resolve`)."""
    data: str = ""
    out: str = ""
    size: str = "pico"  # a named size, or the name of the custom shape below
    n_layer: int | None = None  # custom shape: all three, or none
    d_model: int | None = None
    n_head: int | None = None
    mix: str = ""
    tokens: float = 2e6
    seq_len: int | None = None
    batch_tokens: int | None = None
    micro_batch: int | None = None  # rows per forward pass; gradient accumulation fills the batch
    lr: float | None = None
    warmup: int | None = None
    weight_decay: float = 0.1
    seed: int = 0
    objective: str = "clm"
    attention: str = "auto"
    device: str = "auto"
    threads: int | None = None
    eval_every: int | None = None
    eval_tokens: int = 16384
    ckpt_every: int | None = None
    stall_tokens: float | None = None
    max_restarts: int = 3
    split_seed: int = 0
    fsdp: bool = False
    resume: bool = False
    nproc: int = 1  # processes `mmlm train --nproc` starts (inside them the world size comes from torchrun)
    # cluster-scale training (docs/cluster.md)
    schedule: str = "linear"  # linear (warm-up, linear decay) or wsd (warm-up, stable, decay)
    decay_frac: float = 0.2  # wsd: share of the updates in the final decay
    keep_steps: str | None = None  # updates whose checkpoints are kept as branch points ("120,240")
    branch_from: str | None = None  # a branch point to start this (fresh) run from
    peak_flops: float | None = None  # FLOP/s that MFU is measured against (default: table or measured)
    compile: bool = False  # torch.compile each block
    activation_checkpointing: str = "none"  # none, selective (every second block) or full
    tensorboard: bool = False  # also log to TensorBoard (metrics.jsonl stays the source of truth)
    tensorboard_dir: str | None = None  # default RUN/tensorboard


# settings a resumed run must share with its start (with the mixture, the model and the resolved
# batch, schedule and stall rule); the others (device, threads, eval/checkpoint cadence, ...) may change
IDENTITY = ("size", "tokens", "weight_decay", "seed", "objective", "eval_tokens", "split_seed", "schedule", "decay_frac")


@dataclass
class Plan:
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise MmlmError(f"--device {name!r}: choose auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MmlmError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def shape_of(cfg: TrainConfig) -> tuple[int, int, int] | None:
    """The run's custom shape (n_layer, d_model, n_head), or None for a named size."""
    return check_shape(cfg.n_layer, cfg.d_model, cfg.n_head, "--n-layer/--d-model/--n-head: ")


# the demo's peak-LR check (docs/demo.md): best of 1e-3, 3e-3, 1e-2, 3e-2 at d_model 24 and 64, 100 steps
SHAPE_LR_CHECK = ((24, 1e-2), (64, 3e-3))


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


def resolve(cfg: TrainConfig, model_seq_len: int, vocab_size: int, world: int, device: torch.device) -> Plan:
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
    warmup = cfg.warmup if cfg.warmup is not None else min(PAPER_WARMUP, math.ceil(steps / 10))
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
    eval_every = cfg.eval_every or max(1, steps // 10)
    ckpt_every = cfg.ckpt_every or max(1, steps // 10)
    # the paper restarts after 500M tokens without progress (0.5% of 100B); small runs need a longer view
    stall = cfg.stall_tokens if cfg.stall_tokens is not None else max(0.25 * steps, 20) * batch_tokens
    if stall < 0:
        raise MmlmError(f"--stall-tokens {stall}: must not be negative (0 disables the stall rule)")
    local_rows = batch_rows // world
    if cfg.micro_batch:
        micro = min(cfg.micro_batch, local_rows)
    elif device.type == "cuda":
        micro = _cuda_micro_rows(model_config_of(cfg, vocab_size), seq_len, vocab_size, local_rows, device)
    else:
        micro = max(1, min(local_rows, CPU_MICRO_TOKENS // seq_len))
    fsdp = bool(cfg.fsdp) or (device.type == "cuda" and world > 1 and _too_big_for_one_gpu(model_config_of(cfg, vocab_size), vocab_size, seq_len, device))
    if fsdp and world < 2:
        raise MmlmError("--fsdp: shards the model over several processes; use --nproc K (K >= 2) or torchrun")
    if cfg.objective not in OBJECTIVES:
        raise MmlmError(f"--objective {cfg.objective!r}: choose from {', '.join(OBJECTIVES)}")
    schedule.check(cfg.schedule, cfg.decay_frac, steps, max(1, warmup), cfg.keep_steps)
    if cfg.branch_from:
        schedule.check_branch_point(Path(cfg.branch_from), steps, cfg.decay_frac, cfg.schedule)
    distributed.check_options(cfg.activation_checkpointing, cfg.peak_flops)
    if cfg.tensorboard:
        from .board import check_available

        check_available()
    return Plan(seq_len=seq_len, batch_rows=batch_rows, batch_tokens=batch_tokens, steps=steps, lr=float(lr),
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


def load_run_config(out: str | Path) -> TrainConfig:
    """The TrainConfig a run folder was started with (RUN/config.json)."""
    path = Path(out) / "config.json"
    try:
        stored = read_json(path, "run config")["train"]
        return TrainConfig(**{f.name: stored[f.name] for f in fields(TrainConfig) if f.name in stored})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MmlmError(f"{path}: not a readable run config ({e})") from None


def config_from_options(options: dict) -> TrainConfig:
    """The options given on a command line (None = not given) over the defaults; with resume and an
    existing run, over that run's stored settings instead."""
    given = {k: v for k, v in options.items() if v is not None}
    out = given.get("out")
    if given.get("resume") and out and (Path(out) / "config.json").is_file():
        return TrainConfig(**{**asdict(load_run_config(out)), **given})
    return TrainConfig(**given)


# ---- the run folder ---------------------------------------------------------------------------

class MetricsLog:
    """RUN/metrics.jsonl: one JSON object per step, appended and flushed as training goes."""

    def __init__(self, path: Path):
        self.path = path
        self.f = None

    def open(self, keep_until: int | None) -> None:
        """Start the file (keep_until None) or keep only the lines of steps <= keep_until (a resume)."""
        kept = []
        if keep_until is not None and self.path.exists():
            for _, line in lines(self.path.read_text(encoding="utf-8", errors="replace")):
                try:
                    obj = loads(line)
                except ValueError:
                    continue  # a line cut short by a kill
                if isinstance(obj, dict) and isinstance(obj.get("step"), int) and obj["step"] <= keep_until:
                    kept.append(line + "\n")
        self.close()
        atomic.write_text(self.path, "".join(kept))
        self.f = open(self.path, "a", encoding="utf-8")

    def write(self, line: dict) -> None:
        self.f.write(json.dumps(line) + "\n")
        self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def _copy_tokenizers(data_root: Path, run: Path) -> None:
    atomic.write_bytes(run / "vocab.json", (data_root / "vocab.json").read_bytes())
    src = data_root / "tokenizers"
    if src.is_dir():
        with atomic.atomic_dir(run / "tokenizers") as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)


def eval_se(s: float, w: float, ss: float, sw: float, ww: float, n: float) -> float | None:
    """Standard error of a held-out loss sum(s_i) / sum(w_i) over n chunks (eval rows of seq_len tokens;
    s_i: the summed token losses of chunk i, w_i: its target count), by the ratio estimator:
    SE^2 = n / (n - 1) * sum((s_i - m w_i)^2) / (sum w_i)^2 with m the loss. Chunks next to each other in
    a long document are correlated, so this is a slight underestimate there. None for a single chunk."""
    if n < 2 or w <= 0:
        return None
    m = s / w
    resid = max(0.0, ss - 2 * m * sw + m * m * ww)
    return math.sqrt(n / (n - 1) * resid) / w


def _finite_or_none(x: float):
    return x if math.isfinite(x) else None


# ---- the trainer -------------------------------------------------------------------------------

class Trainer:
    def __init__(self, cfg: TrainConfig, on_log: Callable[[dict], None] | None = None,
                 dist: distributed.Dist | None = None):
        """Validate everything and plan the run; writes nothing. `dist` overrides the process group
        (to check a multi-process configuration from the launching process)."""
        self.cfg, self.on_log = cfg, on_log or (lambda event: None)
        if not cfg.out:
            raise MmlmError("--out: a run folder is required")
        if not cfg.data:
            raise MmlmError("--data: a data root is required")
        self.run = Path(cfg.out)
        device = resolve_device(cfg.device)
        self.dist = dist or distributed.init(device.type)
        if device.type == "cuda" and self.dist.active:
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        self.mix = parse_mix(cfg.mix)
        self.data = Mixture.open(cfg.data, self.mix, eval_tokens=cfg.eval_tokens, split_seed=cfg.split_seed)
        self.vocab = self.data.vocab
        self.model_cfg = model_config_of(cfg, self.vocab.size)
        self.plan = resolve(cfg, self.model_cfg.seq_len, self.vocab.size, self.dist.world, device)
        if device.type == "cpu":  # weights, gradients and two AdamW moments, 4 bytes each
            check_memory(16 * count_params(self.model_cfg)["n_params"], f"--size {cfg.size}",
                         "weights, gradients and AdamW state")
        self.metrics = MetricsLog(self.run / "metrics.jsonl")  # opened by start(); close() works on a half-built trainer
        self.started = False
        self.resume_from = self._check_run_folder()

    # -- settings and the run folder

    def config_json(self) -> dict:
        total = sum(self.mix.values())
        return {
            "format": "mmlm-run/1",
            "train": asdict(self.cfg),
            "resolved": {**asdict(self.plan), "world_size": self.dist.world},
            "model": self.model_cfg.to_json(),
            **count_params(self.model_cfg),
            "mix": {k: v / total for k, v in self.mix.items()},
            "datasets": self.data.fingerprint(),
            "vocab_sha256": self.data.vocab_sha256,
            "vocab": self.vocab.to_json(),
            "tokenizers": "tokenizers" if (self.data.root / "tokenizers").is_dir() else None,
        }

    @staticmethod
    def _identity(conf: dict) -> dict:
        """What must agree between a run folder and a resumed invocation (resolved values, so an
        option given explicitly equals its default)."""
        train = {k: conf["train"].get(k, getattr(TrainConfig, k, None)) for k in IDENTITY}  # .get: runs from before a key existed
        plan = {k: conf["resolved"][k] for k in ("seq_len", "batch_rows", "steps", "lr", "warmup", "stall_tokens")}
        return {**train, **plan, "mix": conf["mix"], "model": conf["model"]}

    def _check_run_folder(self) -> Path | None:
        """The checkpoint to resume from (None: start fresh); MmlmError when the folder forbids it."""
        ckpt = checkpoint.latest(self.run)
        if ckpt is None:
            self._check_fresh_folder()
            return None
        if not self.cfg.resume:
            raise MmlmError(f"--out {self.run}: already holds a run with a checkpoint; use --resume to continue it, or another folder")
        stored = read_json(self.run / "config.json", "run config")
        why = self._differs(stored)
        if why:
            raise MmlmError(why)
        checkpoint.verify(ckpt)
        return ckpt

    def _check_fresh_folder(self) -> None:
        """A folder without a checkpoint may be started in only when it holds nothing but a sweep's
        files (and hidden lock/temporary names) or an unstarted attempt at this same run: never
        replace someone else's run or files (a finished run whose state/ was deleted, any folder
        with a model.safetensors...)."""
        if not self.run.is_dir():
            return
        found = sorted(p.name for p in self.run.iterdir() if not p.name.startswith(".") and p.name not in SWEEP_FILES)
        if not found:
            return
        stored = None
        if (self.run / "config.json").is_file():
            try:
                stored = read_json(self.run / "config.json", "run config")
            except MmlmError:
                pass
        if isinstance(stored, dict) and not self._differs(stored):
            return  # the same run, stopped before its first checkpoint: start it again
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise MmlmError(f"--out {self.run}: folder is not empty ({shown}) and holds no checkpoint of this run to "
                        f"resume; choose a new or empty folder (nothing was changed)")

    def _differs(self, stored: dict) -> str | None:
        """Why a run folder's stored config is not this run (None: it is)."""
        if not isinstance(stored, dict) or not {"train", "resolved"} <= set(stored):
            return f"{self.run / 'config.json'}: not a run config of mmlm train"
        if stored.get("vocab_sha256") != self.data.vocab_sha256:
            return f"--data {self.data.root}: vocab.json differs from the vocabulary {self.run} was trained with"
        if stored.get("datasets") != self.data.fingerprint():
            return f"--data {self.data.root}: the mixture's datasets changed since {self.run} started"
        try:
            mine, theirs = self._identity(self.config_json()), self._identity(stored)
        except (KeyError, TypeError):
            return f"{self.run / 'config.json'}: not a run config of this version"
        for key in mine:
            if mine[key] != theirs.get(key):
                return f"--resume: {key} is {mine[key]!r} but {self.run} was started with {theirs.get(key)!r}"
        return None

    # -- building

    def build(self) -> None:
        cfg, plan = self.cfg, self.plan
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormals made a 4M-parameter backward 50x slower
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
        else:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.seed)
        model = GPT(self.model_cfg, attention=plan.attention).to(self.device)
        self.raw_model = model
        distributed.apply_block_options(model, cfg.activation_checkpointing, cfg.compile)
        self.model = distributed.wrap(model, self.dist, self.device, plan.fsdp)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=plan.lr, betas=BETAS, eps=1e-8, fused=not plan.fsdp)  # one kernel per tensor, CPU and CUDA
        self.il = self.data.interleaver(plan.seq_len, cfg.seed)
        self.objective = make_objective(cfg.objective, self.vocab, cfg.seed)
        self.spikes = SpikeDetector()
        self.eval_batches = [self._eval_batch(d) for d in range(len(self.data.datasets))]
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                         else contextlib.nullcontext())
        self.step = self.tokens = self.restarts = 0
        self.lr_scale = 1.0
        self.smooth = self.best = None
        self.best_tokens = 0
        self.last_eval: dict = {}
        self.last_eval_se: dict = {}
        self.status = "running"
        self.speed = speed.SpeedMeter(speed.flops_per_token(self.model_cfg),
                                      speed.for_devices(speed.resolve_peak(self.device, cfg.peak_flops), self.dist.world))
        self.wall_seconds = 0.0
        self.keep_steps = set(schedule.parse_steps(cfg.keep_steps))
        self.board = None

    def _eval_batch(self, d: int) -> Batch:
        """Held-out rows of dataset d with the run's objective (cm3 with a fixed seed, so every eval
        sees the same rows), padded to a multiple of the world size with weight-0 rows."""
        tokens, ids = self.data.eval_rows(d, self.plan.seq_len)
        obj = CausalMasked(self.vocab, self.cfg.split_seed + d) if self.cfg.objective == "cm3" else make_objective("clm", self.vocab, 0)
        b = obj(tokens, ids)
        w = (b.weights if b.weights is not None else np.ones(b.targets.shape, np.float32)) * (b.ids != PAD_ID)
        extra = -len(b.inputs) % self.dist.world
        def pad(a, v):
            return np.concatenate([a, np.full((extra, a.shape[1]), v, a.dtype)]) if extra else a
        return Batch(pad(b.inputs, self.vocab.pad), pad(b.targets, self.vocab.pad), pad(b.ids, PAD_ID), pad(w, 0.0))

    # -- state

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"step": self.step, "tokens": self.tokens, "restarts": self.restarts, "lr_scale": self.lr_scale,
                "smooth": self.smooth, "best": self.best, "best_tokens": self.best_tokens,
                "last_eval": self.last_eval, "last_eval_se": self.last_eval_se, "spikes": self.spikes.state_dict(),
                "interleaver": self.il.state_dict(), "objective": self.objective.state_dict(), "rng": rng,
                "speed": {"seconds": self.speed.seconds, "tokens": self.speed.tokens, "wall": self.wall_seconds}}

    def load_state_dict(self, s: dict) -> None:
        self.step, self.tokens, self.restarts = int(s["step"]), int(s["tokens"]), int(s["restarts"])
        self.lr_scale, self.smooth, self.best = float(s["lr_scale"]), s["smooth"], s["best"]
        self.best_tokens, self.last_eval = int(s["best_tokens"]), dict(s["last_eval"])
        self.last_eval_se = dict(s.get("last_eval_se") or {})
        self.spikes.load_state_dict(s["spikes"])
        self.il.load_state_dict(s["interleaver"])
        self.objective.load_state_dict(s["objective"])
        timing = s.get("speed", {})  # absent in checkpoints from before it was recorded
        self.speed.seconds, self.speed.tokens = float(timing.get("seconds", 0.0)), int(timing.get("tokens", 0))
        self.wall_seconds = float(timing.get("wall", 0.0))
        torch.set_rng_state(s["rng"]["torch"])
        if "cuda" in s["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(s["rng"]["cuda"], self.device)

    def save(self) -> None:
        weights = distributed.model_state(self.model)
        optim = distributed.optimizer_state(self.model, self.opt)
        if self.dist.is_main:
            path = checkpoint.save(self.run, self.step, weights, optim, self.state_dict())
            if self.step in self.keep_steps:
                schedule.keep_branch_point(self.run, path, self.step)
        self.dist.barrier()
        self.on_log({"event": "checkpoint", "step": self.step})

    def restore(self, ckpt: Path) -> None:
        weights, optim, state = checkpoint.load(ckpt)
        distributed.load_states(self.model, self.opt, weights, optim)
        self.load_state_dict(state)

    # -- training

    def _micro_context(self, last: bool):
        m = self.model
        if self.plan.fsdp:
            m.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        if self.dist.active and not last:
            return m.no_sync()
        return contextlib.nullcontext()

    def train_step(self) -> tuple[float, float, dict, float] | str:
        """One update. Returns (loss, grad_norm, per-dataset losses, lr), or why it failed (non-finite)."""
        plan, dev, V = self.plan, self.device, self.vocab.size
        if self.cfg.schedule == "wsd":
            lr = schedule.wsd_lr(self.step, plan.lr, plan.warmup, plan.steps, self.cfg.decay_frac, MIN_LR_SHARE) * self.lr_scale
        else:
            lr = lr_at(self.step, plan.lr, plan.warmup, plan.steps) * self.lr_scale
        for g in self.opt.param_groups:
            g["lr"] = lr
        rows, ids = self.il.next_rows(plan.batch_rows)
        if rows.max() >= V:
            bad = self.data.names[int(ids.reshape(-1)[np.argmax(rows.reshape(-1) >= V)])]
            raise MmlmError(f"{self.data.root / bad}: token ids outside the vocabulary (size {V})")
        batch = self.objective(rows, ids)
        total_w = batch.n_targets
        sl = self.dist.rows(plan.batch_rows)
        x_all = torch.from_numpy(batch.inputs[sl])
        y_all = torch.from_numpy(batch.targets[sl])
        w_all = None if batch.weights is None else torch.from_numpy(batch.weights[sl])
        scale = self.dist.world / total_w  # the global mean, whatever the split
        loss_sum = torch.zeros((), dtype=torch.float32, device=dev)
        token_losses = []
        n = x_all.shape[0]
        starts = range(0, n, plan.micro_rows)
        for j, a in enumerate(starts):
            b = a + plan.micro_rows
            x, y = x_all[a:b].to(dev, non_blocking=True), y_all[a:b].to(dev, non_blocking=True)
            with self._micro_context(j == len(starts) - 1):
                with self.autocast:
                    logits, _ = self.model(x)
                losses = F.cross_entropy(logits.float().view(-1, V), y.view(-1), reduction="none")
                if w_all is not None:
                    s = (losses * w_all[a:b].to(dev).view(-1)).sum()
                else:
                    s = losses.sum()
                (s * scale).backward()
            loss_sum += s.detach()
            token_losses.append(losses.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        sums, counts = self._per_dataset(torch.cat(token_losses), batch.ids[sl], None if w_all is None else w_all)
        packed = torch.cat([loss_sum.double().view(1), sums.to(dev), counts.to(dev).double()])
        packed = self.dist.all_reduce_sum(packed).cpu()
        loss, gn = float(packed[0]) / total_w, float(grad_norm)
        if not (math.isfinite(loss) and math.isfinite(gn)):
            self.opt.zero_grad(set_to_none=True)
            return f"{'loss' if not math.isfinite(loss) else 'gradient norm'} was {loss if not math.isfinite(loss) else gn} at step {self.step + 1}"
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        k = len(self.data.names)
        per = {name: _finite_or_none(float(packed[1 + d]) / float(packed[1 + k + d])) if packed[1 + k + d] > 0 else None
               for d, name in enumerate(self.data.names)}
        self.step += 1
        self.tokens += plan.batch_tokens
        return loss, gn, per, lr

    def _per_dataset(self, losses: torch.Tensor, ids: np.ndarray, weights: torch.Tensor | None):
        """Per-dataset (sums, counts) of this rank's token losses: the Numba kernel on CPU, torch on GPU."""
        n = len(self.data.names)
        mask = None if weights is None else weights.reshape(-1)
        if losses.device.type == "cpu":
            from mmlm.kernels.aggregate import loss_by_dataset

            sums, counts = loss_by_dataset(losses, ids.reshape(-1), n, mask=mask)
            return torch.from_numpy(sums), torch.from_numpy(counts)
        from mmlm.kernels.aggregate import loss_by_dataset_torch

        ids_t = torch.from_numpy(ids.reshape(-1)).to(losses.device, non_blocking=True)
        return loss_by_dataset_torch(losses, ids_t, n, mask=None if mask is None else mask.to(losses.device))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out loss per dataset; its standard error goes to self.last_eval_se (see `eval_se`)."""
        self.model.eval()
        out, se = {}, {}
        dev, V = self.device, self.vocab.size
        for d, b in enumerate(self.eval_batches):
            sl = self.dist.rows(len(b.inputs))
            x_all, y_all, w_all = (torch.from_numpy(a[sl]) for a in (b.inputs, b.targets, b.weights))
            acc = torch.zeros(6, dtype=torch.float64, device=dev)  # sums over rows of s, w, s^2, s w, w^2, [w > 0]
            for a in range(0, len(x_all), self.plan.micro_rows):
                s = slice(a, a + self.plan.micro_rows)
                with self.autocast:
                    logits, _ = self.model(x_all[s].to(dev))
                losses = F.cross_entropy(logits.float().view(-1, V), y_all[s].to(dev).view(-1), reduction="none")
                w = w_all[s].to(dev).double()
                rs, rw = (losses.double().view(w.shape) * w).sum(1), w.sum(1)
                acc += torch.stack([rs.sum(), rw.sum(), (rs * rs).sum(), (rs * rw).sum(), (rw * rw).sum(),
                                    (rw > 0).double().sum()])
            acc = self.dist.all_reduce_sum(acc).cpu()
            name = self.data.names[d]
            out[name] = float(acc[0] / acc[1]) if acc[1] > 0 else None
            se[name] = eval_se(*acc.tolist()) if acc[1] > 0 else None
        self.last_eval_se = se
        self.model.train()
        return out

    def restart(self, reason: str) -> bool:
        """The paper's rule: back to the last checkpoint, learning rate x0.8. False when out of restarts."""
        restarts, scale = self.restarts + 1, self.lr_scale * LR_RESTART_FACTOR
        done = self.restarts  # the restore below may bring back an older count (a checkpoint from before them)
        self.restore(checkpoint.latest(self.run))
        if restarts > self.cfg.max_restarts:
            self.restarts = done
            self.status = f"stopped: {reason}; gave up after {self.cfg.max_restarts} restart(s), last good checkpoint is step {self.step}"
            return False
        self.restarts, self.lr_scale = restarts, scale
        self.best_tokens = self.tokens  # the stall clock starts again from the restored point
        if self.dist.is_main:
            self.metrics.open(keep_until=self.step)
        self.on_log({"event": "restart", "reason": reason, "step": self.step, "restarts": restarts, "lr_scale": scale})
        return True

    def run_loop(self) -> None:
        plan = self.plan
        t0, tokens0 = time.perf_counter(), self.tokens
        last = t0
        while self.step < plan.steps:
            t_step = time.perf_counter()
            result = self.train_step()
            step_seconds = time.perf_counter() - t_step
            if isinstance(result, str):
                if not self.restart(result):
                    return
                continue
            loss, gn, per, lr = result
            spike = self.spikes.update(gn)
            line = {"step": self.step, "tokens": self.tokens, "lr": lr, "loss": loss, "grad_norm": gn,
                    **{f"loss/{k}": v for k, v in per.items()},
                    **{f"tokens/{k}": int(c) for k, c in zip(self.data.names, self.il.tokens_by_dataset)}}
            line.update(self.speed.step(plan.batch_tokens, step_seconds))
            if self.restarts:
                line["restarts"] = self.restarts
            if spike:
                line["spike"] = True
            if self.step % plan.eval_every == 0 or self.step == plan.steps:
                self.last_eval = self.evaluate()
                line.update({f"eval/{k}": v for k, v in self.last_eval.items()})
                line.update({f"eval_se/{k}": v for k, v in self.last_eval_se.items()})
            if self.dist.is_main:
                self.metrics.write(line)
                if self.board is not None:
                    self.board.write(line)
            now = time.perf_counter()
            self.wall_seconds, last = self.wall_seconds + (now - last), now
            dt = now - t0
            self.on_log({"event": "step", **line, "steps": plan.steps, "tokens_per_s": (self.tokens - tokens0) / max(dt, 1e-9)})
            # the stall rule, on an EMA of the training loss
            self.smooth = loss if self.smooth is None else SMOOTHING * self.smooth + (1 - SMOOTHING) * loss
            if self.best is None or self.smooth < self.best:
                self.best, self.best_tokens = self.smooth, self.tokens
            if self.step % plan.ckpt_every == 0 or self.step == plan.steps:
                self.save()
            if plan.stall_tokens and self.tokens - self.best_tokens >= plan.stall_tokens and self.step < plan.steps:
                if not self.restart(f"training loss stalled for {self.tokens - self.best_tokens} tokens at step {self.step}"):
                    return
                t0, tokens0 = time.perf_counter(), self.tokens
        self.status = "done"

    def summary(self) -> dict:
        counts = self.il.tokens_by_dataset
        n = count_params(self.model_cfg)
        total = sum(self.mix.values())
        return {
            **n,
            "tokens": self.tokens,
            "tokens_by_dataset": {name: int(counts[d]) for d, name in enumerate(self.data.names)},
            "flops": 6 * n["n_params"] * self.tokens,
            "eval_loss": self.last_eval,
            "eval_loss_se": self.last_eval_se,
            "steps": self.step,
            "spikes": self.spikes.count,
            "restarts": self.restarts,
            "status": self.status,
            "size": self.cfg.size,
            "mix": {k: v / total for k, v in self.mix.items()},
            "objective": self.cfg.objective,
            "seq_len": self.plan.seq_len,
            "batch_tokens": self.plan.batch_tokens,
            **self.speed.summary(self.wall_seconds),
        }

    def start(self) -> None:
        """Set up the run folder (fresh) or load the checkpoint (resume)."""
        self.started = True
        if self.dist.is_main:
            self.run.mkdir(parents=True, exist_ok=True)
            checkpoint.remove_temporaries(self.run)
            if self.resume_from is None:
                atomic.write_json(self.run / "config.json", self.config_json())
                _copy_tokenizers(self.data.root, self.run)
            else:
                checkpoint.republish(self.run, self.resume_from)
        self.dist.barrier()
        if self.resume_from is not None:
            self.restore(self.resume_from)
            if self.dist.is_main:
                self.metrics.open(keep_until=self.step)
        elif self.cfg.branch_from:  # a cooldown branch: the trunk's state and metrics up to the branch point
            self.restore(Path(self.cfg.branch_from))  # checked by resolve
            if self.dist.is_main:
                schedule.copy_trunk_metrics(Path(self.cfg.branch_from).parents[1] / "metrics.jsonl",
                                            self.run / "metrics.jsonl", self.step)
                self.metrics.open(keep_until=self.step)
            self.save()
        else:
            if self.dist.is_main:
                self.metrics.open(keep_until=None)
            self.save()  # step 0: a restart always has somewhere to go back to
        if self.cfg.tensorboard and self.dist.is_main:
            from .board import Board

            self.board = Board(self.cfg.tensorboard_dir or str(self.run / "tensorboard"))
        self.on_log({"event": "start", "step": self.step, "steps": self.plan.steps, "resumed": self.resume_from is not None,
                     **count_params(self.model_cfg), "plan": asdict(self.plan),
                     "peak_flops": self.speed.peak.flops, "peak_source": self.speed.peak.source})

    def close(self) -> None:
        self.metrics.close()
        if getattr(self, "board", None) is not None:
            self.board.close()

    def discard_untrained(self) -> None:
        """After a failure before the first update of a fresh run: remove what start() wrote (config,
        tokenizers, metrics, the step-0 checkpoint), so nothing that looks resumable is left behind."""
        if not (self.started and self.resume_from is None and getattr(self, "step", 0) == 0 and self.dist.is_main):
            return
        self.metrics.close()
        for name in (checkpoint.STATE_DIR, "tokenizers"):
            shutil.rmtree(self.run / name, ignore_errors=True)
        for name in ("config.json", "vocab.json", "metrics.jsonl", checkpoint.WEIGHTS):
            (self.run / name).unlink(missing_ok=True)


def train(cfg: TrainConfig, on_log: Callable[[dict], None] | None = None) -> dict:
    """Train (or with cfg.resume, continue) one run; returns the summary also written to RUN/summary.json.

    on_log receives events: {"event": "start" | "step" | "checkpoint" | "restart", ...}; "step"
    events carry the metrics.jsonl line plus "steps" (total) and "tokens_per_s"."""
    with lock_run_folder(cfg.out):
        trainer = Trainer(cfg, on_log)
        try:
            trainer.build()
            trainer.start()
            trainer.run_loop()
            if trainer.status != "done" or not trainer.last_eval:
                trainer.last_eval = trainer.evaluate()
            summary = trainer.summary()
            if trainer.dist.is_main:
                atomic.write_json(trainer.run / "summary.json", summary)
            return summary
        except BaseException:
            trainer.discard_untrained()
            raise
        finally:
            trainer.close()
            distributed.shutdown(trainer.dist)


def lock_run_folder(out: str):
    """One training per run folder at a time (RUN/.train.lock, held by rank 0 for the whole run;
    beside the sweep's RUN/.lock, which a sweep worker holds while it runs `train`). The second
    writer gets a one-line error naming the holder. A folder created only to hold the lock is
    removed again when training fails early."""
    import os

    if not out or int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    run = Path(out)
    if run.exists() and not run.is_dir():
        raise MmlmError(f"--out {run}: exists and is not a folder")
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(atomic.exclusive(run / ".train.lock", remove_created=run))
    except atomic.Locked as e:
        raise MmlmError(f"--out {run}: another training is writing to this run folder ({e.holder})") from None
    return stack


def check(cfg: TrainConfig) -> dict:
    """Validate a configuration as `train` would (data, mixture, sizes, run folder) without writing
    anything or joining a process group; returns the resolved plan."""
    t = Trainer(cfg, dist=distributed.Dist(rank=0, world=max(1, cfg.nproc)))
    return asdict(t.plan)


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmlm.train", description="mmlm training (one process of torchrun, or alone)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "nproc":
            continue
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", default=None)
        else:
            kind = {"int": int, "int | None": int, "float": float, "float | None": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m mmlm.train`: rank 0 prints one JSON event per line on stdout, the summary last."""
    import os

    args = vars(_parser().parse_args(argv))
    rank0 = int(os.environ.get("RANK", "0")) == 0

    def emit(event: dict) -> None:
        if rank0 and event.get("event") in ("start", "step", "restart"):
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    try:
        summary = train(config_from_options(args), on_log=emit)
    except MmlmError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    if rank0:
        sys.stdout.write(json.dumps({"event": "summary", "summary": summary}) + "\n")
    return 0 if summary["status"] == "done" else 3


if __name__ == "__main__":
    sys.exit(main())
