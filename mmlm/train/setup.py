"""A run checked before anything is built or written: its device and process group, mixture, model
shape, resolved settings and the checkpoint it resumes from (`prepare`). `check` and the Trainer start from one."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import distributed
from ..bounds import check_memory
from ..data import Mixture, parse_mix
from ..device import resolve_device
from ..errors import MmlmError
from ..model import count_params
from . import folder
from .config import TrainConfig
from .resolved import Resolved, model_config_of, resolve


@dataclass
class Setup:
    cfg: TrainConfig
    run: Path
    device: torch.device
    dist: distributed.Dist
    mix: dict
    data: Mixture
    model_cfg: object
    resolved: Resolved
    resume_from: Path | None = None  # the checkpoint to continue from; None: a fresh start

    @property
    def vocab(self):
        return self.data.vocab

    def config_json(self) -> dict:
        """RUN/config.json of this run."""
        total = sum(self.mix.values())
        return {
            "format": folder.RUN_FORMAT,
            "train": asdict(self.cfg),
            "resolved": {**asdict(self.resolved), "world_size": self.dist.world},
            "model": self.model_cfg.to_json(),
            **count_params(self.model_cfg),
            "mix": {k: v / total for k, v in self.mix.items()},
            "datasets": self.data.fingerprint(),
            "vocab_sha256": self.data.vocab_sha256,
            "vocab": self.vocab.to_json(),
            "tokenizers": "tokenizers" if (self.data.root / "tokenizers").is_dir() else None,
        }


def prepare(cfg: TrainConfig, dist: distributed.Dist | None = None) -> Setup:
    """Validate everything and resolve the settings; writes nothing. Joins the process group unless `dist` is
    given (to check a multi-process configuration from the launching process)."""
    if not cfg.out:
        raise MmlmError("--out: a run folder is required")
    if not cfg.data:
        raise MmlmError("--data: a data root is required")
    device = resolve_device(cfg.device)
    dist = dist or distributed.init(device.type)
    if device.type == "cuda" and dist.active:
        device = torch.device("cuda", dist.local_rank)
    mix = parse_mix(cfg.mix)
    data = Mixture.open(cfg.data, mix, eval_tokens=cfg.eval_tokens, split_seed=cfg.split_seed)
    model_cfg = model_config_of(cfg, data.vocab.size)
    resolved = resolve(cfg, model_cfg.seq_len, data.vocab.size, dist.world, device)
    if device.type == "cpu":  # weights, gradients and two AdamW moments, 4 bytes each
        check_memory(16 * count_params(model_cfg)["n_params"], f"--size {cfg.size}",
                     "weights, gradients and AdamW state")
    setup = Setup(cfg, Path(cfg.out), device, dist, mix, data, model_cfg, resolved)
    setup.resume_from = folder.resume_point(setup.run, cfg.resume, data, setup.config_json())
    return setup
