"""Gradient-norm spikes: one rule shared by training's counter and `mmlm analyze`.

A step is a spike when its gradient norm exceeds `k` times the median of the previous `window`
gradient norms, once at least `min_history` of them exist. The median is robust, so a spike does
not hide the next one; non-finite norms always count as spikes and stay out of the history.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

DEFAULT_K = 5.0
DEFAULT_WINDOW = 100
DEFAULT_MIN_HISTORY = 20


@dataclass
class SpikeRule:
    k: float = DEFAULT_K
    window: int = DEFAULT_WINDOW
    min_history: int = DEFAULT_MIN_HISTORY


class SpikeDetector:
    """Online spike detection; `update(grad_norm)` says whether this step is a spike."""

    def __init__(self, rule: SpikeRule | None = None):
        self.rule = rule or SpikeRule()
        self.history: deque[float] = deque(maxlen=self.rule.window)
        self.count = 0

    def update(self, grad_norm: float) -> bool:
        if not math.isfinite(grad_norm):
            self.count += 1
            return True
        spike = len(self.history) >= self.rule.min_history and grad_norm > self.rule.k * float(np.median(self.history))
        self.history.append(float(grad_norm))
        self.count += int(spike)
        return spike

    def state_dict(self) -> dict:
        return {"history": list(self.history), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.history = deque((float(x) for x in state["history"]), maxlen=self.rule.window)
        self.count = int(state["count"])


def find_spikes(grad_norms, rule: SpikeRule | None = None) -> list[int]:
    """Indices of the spikes in a whole gradient-norm series (same rule as `SpikeDetector`)."""
    det = SpikeDetector(rule)
    return [i for i, g in enumerate(grad_norms) if det.update(float(g))]
