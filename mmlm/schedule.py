"""Warm-up-stable-decay (WSD) learning rates and the branch points of one run for many budgets.

    lr = wsd_lr(step, peak=1e-3, warmup=10, steps=100, decay_frac=0.2)   # 1e-3 for steps 10..79

WSD (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
Durations"): linear warm-up, the peak learning rate held constant, then a short linear decay over the
last `decay_frac` of the updates to the same floor as the default schedule (10% of peak). Until its
decay begins a WSD run does not depend on its length, so one long "trunk" run can save its state
where each shorter budget's decay begins, and a cooldown branch from that state is the shorter run
exactly (with the same warm-up and stall rule). The trunk keeps those states in
RUN/branch-points/step-N/ (hard links of ordinary checkpoints); a branch run starts from one
(TrainConfig.branch_from) and copies the trunk's metrics up to that step, so its folder reads as a
whole run.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from .errors import MmlmError

SCHEDULES = ("linear", "wsd")
BRANCH_DIR = "branch-points"


def decay_start(steps: int, decay_frac: float) -> int:
    """First update (0-based) of the decay phase of a WSD run of `steps` updates."""
    return steps - max(1, math.ceil(decay_frac * steps))


def wsd_lr(step: int, peak: float, warmup: int, steps: int, decay_frac: float, floor: float = 0.1) -> float:
    """Learning rate of update `step` (0-based) under WSD."""
    if step < warmup:
        return peak * (step + 1) / warmup
    start = decay_start(steps, decay_frac)
    if step < start:
        return peak
    progress = (step - start + 1) / (steps - start)  # the last update reaches the floor
    return peak * (floor + (1 - floor) * (1 - progress))


def check(schedule: str, decay_frac: float, steps: int, warmup: int, keep_steps: str | None) -> list[int]:
    """Check the schedule options against the run's length; returns the branch-point steps to keep."""
    if schedule not in SCHEDULES:
        raise MmlmError(f"--schedule {schedule!r}: choose from {', '.join(SCHEDULES)}")
    if not (isinstance(decay_frac, (int, float)) and 0 < decay_frac <= 1):
        raise MmlmError(f"--decay-frac {decay_frac}: must be in (0, 1]")
    if schedule == "wsd" and warmup > decay_start(steps, decay_frac):
        raise MmlmError(f"--warmup {warmup}: longer than the stable phase of a WSD run of {steps} updates "
                        f"(the decay starts at update {decay_start(steps, decay_frac)}); lower --warmup or --decay-frac")
    keep = parse_steps(keep_steps)
    for k in keep:
        if not 0 < k < steps:
            raise MmlmError(f"--keep-steps: step {k} is not inside the run (1 .. {steps - 1})")
    return keep


def parse_steps(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return sorted({int(s) for s in str(text).split(",") if s.strip()})
    except ValueError:
        raise MmlmError(f"--keep-steps {text!r}: expected comma-separated update numbers") from None


def branch_point(run: str | Path, step: int) -> Path:
    return Path(run) / BRANCH_DIR / f"step-{step:09d}"


def keep_branch_point(run: str | Path, ckpt: Path, step: int) -> Path:
    """Keep checkpoint `ckpt` as branch point `step` (hard links: no copy; the checkpoint itself may be
    removed by later saves). Idempotent, and atomic: a branch point appears whole or not at all."""
    from . import atomic

    dest = branch_point(run, step)
    if dest.is_dir():
        return dest
    with atomic.atomic_dir(dest) as tmp:
        shutil.copytree(ckpt, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)
    return dest


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_trunk_metrics(trunk_metrics: Path, dest: Path, until_step: int) -> None:
    """The trunk's metrics.jsonl lines of steps <= until_step, as the start of a branch's own."""
    from . import atomic

    kept = []
    if trunk_metrics.is_file():
        for line in trunk_metrics.read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("step"), int) and obj["step"] <= until_step:
                kept.append(line + "\n")
    atomic.write_text(dest, "".join(kept))


def branch_plan(budgets: list[int], batch_tokens: int, decay_frac: float) -> dict:
    """For token budgets of one (size, mixture): the trunk (largest budget), each smaller budget's
    branch step, and the tokens trained branched vs as separate runs."""
    steps = {b: math.ceil(b / batch_tokens) for b in budgets}
    trunk = max(budgets, key=lambda b: steps[b])
    branches = {b: decay_start(steps[b], decay_frac) for b in budgets if b != trunk}
    separate = sum(steps[b] for b in budgets) * batch_tokens
    branched = (steps[trunk] + sum(steps[b] - k for b, k in branches.items())) * batch_tokens
    return {"trunk": trunk, "branch_steps": branches, "tokens_separate": separate, "tokens_branched": branched}


def check_branch_point(path: Path, steps: int, decay_frac: float, schedule: str) -> Path:
    """The checkpoint a branch of `steps` updates starts from; MmlmError unless it is a trunk's branch
    point inside this run's stable phase."""
    from . import checkpoint

    if schedule != "wsd":
        raise MmlmError(f"--branch-from {path}: a cooldown branch needs --schedule wsd")
    if path.parent.name != BRANCH_DIR or not path.is_dir():
        raise MmlmError(f"--branch-from {path}: not a branch point (RUN/{BRANCH_DIR}/step-N of a trunk run)")
    step = int(checkpoint.verify(path)["step"])
    if step > decay_start(steps, decay_frac):
        raise MmlmError(f"--branch-from {path}: step {step} is past the start of this run's decay "
                        f"(update {decay_start(steps, decay_frac)} of {steps})")
    return path
