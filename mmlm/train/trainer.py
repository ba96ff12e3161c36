"""The Trainer: one model on a mixture of datasets, with per-dataset losses, restarts and exact resume.

The pieces: `data.Mixture` (datasets, held-out split, the interleaver), `objectives` (clm / cm3),
`model.GPT`, `checkpoint` (atomic safetensors checkpoints), `distributed` (DDP / FSDP), and the
spike rule of `stability`. Each step's loss is the mean over every weighted target token of the
global batch, however the batch is split into micro-batches and processes.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import atomic, checkpoint, distributed, schedule, speed
from ..errors import MmlmError
from ..model import GPT, count_params
from ..objectives import Batch, make_objective
from ..stability import SpikeDetector
from .config import BETAS, CLIP, LR_RESTART_FACTOR, MIN_LR_SHARE, SMOOTHING
from .folder import MetricsLog, copy_tokenizers, discard_untrained
from .heldout import eval_batch, eval_se
from .resolved import lr_at
from .setup import Setup


class NonFinite(Exception):
    """A step whose loss or gradient norm is inf or nan (nothing was applied); the run restarts."""


def _finite_or_none(x: float):
    return x if math.isfinite(x) else None


# ---- the trainer -------------------------------------------------------------------------------

class Trainer:
    """One run, built whole from a checked Setup: the model, optimizer, data order, objective and
    counters. `start` writes the run folder (or restores the checkpoint), `run_loop` trains."""

    def __init__(self, setup: Setup, on_log: Callable[[dict], None] | None = None):
        cfg, res = setup.cfg, setup.resolved
        self.setup, self.cfg, self.resolved, self.on_log = setup, cfg, res, on_log or (lambda event: None)
        self.run, self.device, self.dist = setup.run, setup.device, setup.dist
        self.mix, self.data, self.vocab, self.model_cfg = setup.mix, setup.data, setup.vocab, setup.model_cfg
        self.resume_from = setup.resume_from
        self.metrics = MetricsLog(self.run / "metrics.jsonl")  # opened by start()
        self.board = None  # a TensorBoard writer, opened by start() with --tensorboard
        self.started = False
        self.model, self.opt = self._build_model()
        self.il = self.data.interleaver(res.seq_len, cfg.seed)
        self.objective = make_objective(cfg.objective, self.vocab, cfg.seed)
        self.spikes = SpikeDetector()
        self.eval_batches = [eval_batch(self.data, d, res.seq_len, cfg.objective, cfg.split_seed, self.dist.world)
                             for d in range(len(self.data.datasets))]
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

    def _build_model(self):
        """The (wrapped) model and its AdamW, seeded by --seed."""
        cfg, res = self.cfg, self.resolved
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormals made a 4M-parameter backward 50x slower
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
        else:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.seed)
        model = GPT(self.model_cfg, attention=res.attention).to(self.device)
        self.raw_model = model
        distributed.apply_block_options(model, cfg.activation_checkpointing, cfg.compile)
        model = distributed.wrap(model, self.dist, self.device, res.fsdp)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=res.lr, betas=BETAS, eps=1e-8, fused=not res.fsdp)  # one kernel per tensor, CPU and CUDA
        return model, opt

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
        if self.resolved.fsdp:
            m.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        if self.dist.active and not last:
            return m.no_sync()
        return contextlib.nullcontext()

    def _token_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The forward pass and its per-token loss (fp32, flat), for training and held-out evaluation alike."""
        with self.autocast:
            logits, _ = self.model(x)
        return F.cross_entropy(logits.float().view(-1, self.vocab.size), y.view(-1), reduction="none")

    def _lr(self) -> float:
        """This update's learning rate (the schedule times the restarts' scale), set on the optimizer."""
        res = self.resolved
        if self.cfg.schedule == "wsd":
            lr = schedule.wsd_lr(self.step, res.lr, res.warmup, res.steps, self.cfg.decay_frac, MIN_LR_SHARE) * self.lr_scale
        else:
            lr = lr_at(self.step, res.lr, res.warmup, res.steps) * self.lr_scale
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def _next_batch(self) -> Batch:
        """The global batch of this update, its token ids checked against the vocabulary."""
        V = self.vocab.size
        rows, ids = self.il.next_rows(self.resolved.batch_rows)
        if rows.max() >= V:
            bad = self.data.names[int(ids.reshape(-1)[np.argmax(rows.reshape(-1) >= V)])]
            raise MmlmError(f"{self.data.root / bad}: token ids outside the vocabulary (size {V})")
        return self.objective(rows, ids)

    def train_step(self) -> tuple[float, float, dict, float]:
        """One update. Returns (loss, grad_norm, per-dataset losses, lr); raises NonFinite (and applies
        nothing) when the loss or the gradient norm is not finite."""
        res, dev = self.resolved, self.device
        lr = self._lr()
        batch = self._next_batch()
        total_w = batch.n_targets
        sl = self.dist.rows(res.batch_rows)
        x_all = torch.from_numpy(batch.inputs[sl])
        y_all = torch.from_numpy(batch.targets[sl])
        w_all = None if batch.weights is None else torch.from_numpy(batch.weights[sl])
        scale = self.dist.world / total_w  # the global mean, whatever the split
        loss_sum = torch.zeros((), dtype=torch.float32, device=dev)
        token_losses = []
        starts = range(0, x_all.shape[0], res.micro_rows)
        for j, a in enumerate(starts):
            b = a + res.micro_rows
            x, y = x_all[a:b].to(dev, non_blocking=True), y_all[a:b].to(dev, non_blocking=True)
            with self._micro_context(j == len(starts) - 1):
                losses = self._token_losses(x, y)
                s = (losses * w_all[a:b].to(dev).view(-1)).sum() if w_all is not None else losses.sum()
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
            raise NonFinite(f"{'loss' if not math.isfinite(loss) else 'gradient norm'} was "
                            f"{loss if not math.isfinite(loss) else gn} at step {self.step + 1}")
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        k = len(self.data.names)
        per = {name: _finite_or_none(float(packed[1 + d]) / float(packed[1 + k + d])) if packed[1 + k + d] > 0 else None
               for d, name in enumerate(self.data.names)}
        self.step += 1
        self.tokens += res.batch_tokens
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
        dev = self.device
        for d, b in enumerate(self.eval_batches):
            sl = self.dist.rows(len(b.inputs))
            x_all, y_all, w_all = (torch.from_numpy(a[sl]) for a in (b.inputs, b.targets, b.weights))
            acc = torch.zeros(6, dtype=torch.float64, device=dev)  # sums over rows of s, w, s^2, s w, w^2, [w > 0]
            for a in range(0, len(x_all), self.resolved.micro_rows):
                s = slice(a, a + self.resolved.micro_rows)
                losses = self._token_losses(x_all[s].to(dev), y_all[s].to(dev))
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
        res = self.resolved
        t0, tokens0 = time.perf_counter(), self.tokens
        last = t0
        while self.step < res.steps:
            t_step = time.perf_counter()
            try:
                loss, gn, per, lr = self.train_step()
            except NonFinite as e:
                if not self.restart(str(e)):
                    return
                continue
            step_seconds = time.perf_counter() - t_step
            spike = self.spikes.update(gn)
            line = {"step": self.step, "tokens": self.tokens, "lr": lr, "loss": loss, "grad_norm": gn,
                    **{f"loss/{k}": v for k, v in per.items()},
                    **{f"tokens/{k}": int(c) for k, c in zip(self.data.names, self.il.tokens_by_dataset)}}
            line.update(self.speed.step(res.batch_tokens, step_seconds))
            if self.restarts:
                line["restarts"] = self.restarts
            if spike:
                line["spike"] = True
            if self.step % res.eval_every == 0 or self.step == res.steps:
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
            self.on_log({"event": "step", **line, "steps": res.steps, "tokens_per_s": (self.tokens - tokens0) / max(dt, 1e-9)})
            # the stall rule, on an EMA of the training loss
            self.smooth = loss if self.smooth is None else SMOOTHING * self.smooth + (1 - SMOOTHING) * loss
            if self.best is None or self.smooth < self.best:
                self.best, self.best_tokens = self.smooth, self.tokens
            if self.step % res.ckpt_every == 0 or self.step == res.steps:
                self.save()
            if res.stall_tokens and self.tokens - self.best_tokens >= res.stall_tokens and self.step < res.steps:
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
            "seq_len": self.resolved.seq_len,
            "batch_tokens": self.resolved.batch_tokens,
            **self.speed.summary(self.wall_seconds),
        }

    def start(self) -> None:
        """Set up the run folder (fresh) or load the checkpoint (resume)."""
        self.started = True
        if self.dist.is_main:
            self.run.mkdir(parents=True, exist_ok=True)
            checkpoint.remove_temporaries(self.run)
            if self.resume_from is None:
                atomic.write_json(self.run / "config.json", self.setup.config_json())
                copy_tokenizers(self.data.root, self.run)
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
            from ..board import Board

            self.board = Board(self.cfg.tensorboard_dir or str(self.run / "tensorboard"))
        self.on_log({"event": "start", "step": self.step, "steps": self.resolved.steps, "resumed": self.resume_from is not None,
                     **count_params(self.model_cfg), "plan": asdict(self.resolved),
                     "peak_flops": self.speed.peak.flops, "peak_source": self.speed.peak.source})

    def close(self) -> None:
        self.metrics.close()
        if self.board is not None:
            self.board.close()

    def discard_untrained(self) -> None:
        """After a failure before the first update of a fresh run: remove what start() wrote, so
        nothing that looks resumable is left behind."""
        if self.started and self.resume_from is None and self.step == 0 and self.dist.is_main:
            self.metrics.close()
            discard_untrained(self.run)
