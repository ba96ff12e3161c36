"""Training: one model on a mixture of datasets, with per-dataset losses, restarts and exact resume.

    summary = train(TrainConfig(data="data/demo", size="pico", mix="text=0.5,code=0.5", tokens=2e6, out="runs/a"))

One job per module: `config` (TrainConfig, the one declaration of every option, and the recipe
constants), `resolved` (the defaults resolved and checked), `setup` (a run checked before anything is
built: `prepare`), `folder` (RUN/config.json, metrics.jsonl, the lock), `trainer` (the Trainer) and
`__main__` (`python -m mmlm.train ...`, the same with command-line flags, for torchrun).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Callable

from .config import (BETAS, CLIP, CPU_PRESETS, DEFAULT_LR, IDENTITY, MIN_LR_SHARE, SWEEP_FILES, TrainConfig,
                     config_to_argv, option_kinds)

# the rest on first use, so that reading the options (cli/train.py, the grid check) does not load torch
_LAZY = {"resolve_device": "..device", "MetricsLog": ".folder", "lock_run_folder": ".folder",
         "config_from_options": ".folder", "load_run_config": ".folder", "read_run_config": ".folder",
         "Resolved": ".resolved", "default_lr": ".resolved", "lr_at": ".resolved", "model_config_of": ".resolved",
         "resolve": ".resolved", "shape_of": ".resolved", "Setup": ".setup", "prepare": ".setup",
         "NonFinite": ".trainer", "Trainer": ".trainer", "eval_se": ".heldout"}

__all__ = ["BETAS", "CLIP", "CPU_PRESETS", "DEFAULT_LR", "IDENTITY", "MIN_LR_SHARE", "SWEEP_FILES", "TrainConfig",
           "check", "config_to_argv", "option_kinds", "train", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name], __name__), name)


def train(cfg: TrainConfig, on_log: Callable[[dict], None] | None = None) -> dict:
    """Train (or with cfg.resume, continue) one run; returns the summary also written to RUN/summary.json.

    on_log receives events: {"event": "start" | "step" | "checkpoint" | "restart", ...}; "step"
    events carry the metrics.jsonl line plus "steps" (total) and "tokens_per_s"."""
    from .. import atomic, distributed
    from .folder import lock_run_folder
    from .setup import prepare
    from .trainer import Trainer

    with lock_run_folder(cfg.out):
        setup = prepare(cfg)
        try:
            trainer = Trainer(setup, on_log)
            try:
                trainer.start()
                trainer.run_loop()
                if trainer.status != "done" or not trainer.last_eval:
                    trainer.last_eval = trainer.evaluate()
                summary = trainer.summary()
                if setup.dist.is_main:
                    atomic.write_json(setup.run / "summary.json", summary)
                return summary
            except BaseException:
                trainer.discard_untrained()
                raise
            finally:
                trainer.close()
        finally:
            distributed.shutdown(setup.dist)


def check(cfg: TrainConfig) -> dict:
    """Validate a configuration as `train` would (data, mixture, sizes, run folder) without writing
    anything or joining a process group; returns the resolved settings."""
    from .. import distributed
    from .setup import prepare

    return asdict(prepare(cfg, dist=distributed.Dist(rank=0, world=max(1, cfg.nproc))).resolved)
