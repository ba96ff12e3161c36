"""Branched grids (`schedule = "wsd"`, `branch = true`): one trunk run per (size, mixture) to the largest
budget, and one cooldown branch per smaller budget from the trunk's state where that budget's decay
begins (see mmlm.schedule). Every run of a family gets the same warm-up and stall rule (the smallest
budget's defaults unless [train] sets them), so each branch is exactly the separately trained run.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from ..errors import MmlmError
from .grid import GridError, RunSpec, run_id

TRUNK_FIRST = 0  # launch waves: trunks (and everything else) first, then branches
BRANCHES = 1


def branch_runs(grid, vocab_size: int, runs: list[RunSpec]) -> list[RunSpec]:
    import torch

    from ..schedule import decay_start
    from ..train import TrainConfig, model_config_of, resolve

    families: dict[tuple, list[RunSpec]] = defaultdict(list)
    for r in runs:
        families[(r.size, r.mixture)].append(r)
    out, problems = [], []
    for (size, mixture), members in families.items():
        members.sort(key=lambda r: r.tokens)
        base = members[0].train  # [train] plus the size's custom shape, if it has one
        opts = {**base, "attention": "sdpa", "device": "cpu"}
        try:
            cfg = TrainConfig(**opts, size=size, tokens=members[0].tokens)
            small = resolve(cfg, model_config_of(cfg, vocab_size).seq_len, vocab_size, 1, torch.device("cpu"))
        except MmlmError as e:
            problems.append(f"{grid.source}: {size} x {mixture} x {members[0].tokens} tokens: {e}")
            continue
        shared = {"warmup": small.warmup, "stall_tokens": small.stall_tokens}
        train = {**shared, **base}  # what [train] gives wins
        steps = {r.tokens: -(-r.tokens // small.batch_tokens) for r in members}
        trunk = members[-1]
        decay = train.get("decay_frac", 0.2)
        points = {r.tokens: decay_start(steps[r.tokens], decay) for r in members[:-1]}
        if any(p < train["warmup"] for p in points.values()):
            problems.append(f"{grid.source}: {size} x {mixture}: warm-up of {train['warmup']} updates outlasts the "
                            f"stable phase of the smallest budget ({min(points.values())} updates)")
            continue
        ids = {r.tokens: run_id(size, mixture, r.mix, r.tokens, train) for r in members}
        keep = ",".join(str(p) for p in sorted(set(points.values())))
        out.append(replace(trunk, id=ids[trunk.tokens], train={**train, **({"keep_steps": keep} if keep else {})}))
        for r in members[:-1]:
            out.append(replace(r, id=ids[r.tokens], train=dict(train), branch_of=ids[trunk.tokens],
                               branch_step=points[r.tokens], start_tokens=points[r.tokens] * small.batch_tokens))
    if problems:
        raise GridError(problems)
    return out


def wave(spec: RunSpec) -> int:
    return BRANCHES if spec.branch_of else TRUNK_FIRST


def compute(grid, peak=None) -> dict:
    """Training FLOPs of the grid as planned (branches train only their cooldown) against separate
    runs, and device-hours at speed.ASSUMED_MFU of `peak` (a speed.Peak; default: the grid's
    train.peak_flops, else this machine's device)."""
    import torch

    from ..speed import assumed_mfu, flops_per_token, resolve_peak
    from ..device import resolve_device
    from ..train import TrainConfig, model_config_of
    from ..vocab import Vocab

    vocab = Vocab.load(grid.data / "vocab.json").size
    planned = separate = 0.0
    for r in grid.runs:
        fpt = flops_per_token(model_config_of(TrainConfig(**r.train, size=r.size), vocab))
        planned += fpt * (r.tokens - r.start_tokens)
        separate += fpt * r.tokens
    device = resolve_device(grid.train.get("device", "auto") if torch.cuda.is_available() else "cpu")
    if peak is None:
        peak = resolve_peak(device, grid.train.get("peak_flops"))
    mfu = assumed_mfu(device.type)
    def hours(f):
        return f / (peak.flops * mfu) / 3600
    return {"flops": planned, "flops_separate": separate, "saved": 1 - planned / separate if separate else 0.0,
            "device_hours": hours(planned), "device_hours_separate": hours(separate), "peak_flops": peak.flops,
            "peak_source": peak.source, "assumed_mfu": mfu}
