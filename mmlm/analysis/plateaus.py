"""Coordinate-ascent plateaus: stretches where one dataset's training loss stops improving while
the average over the mixture keeps falling (paper phenomenon 1).

The rule, with every length in training steps:
1. Smooth each `loss/<d>` series with a centred rolling median over `window` steps (edge values
   repeated at both ends; steps where d was not logged are filled by linear interpolation first).
   A centred median does not lag, so a loss held flat over [a, b] comes out flat over [a, b].
2. A window of `window` steps ending at t is *flat* for d when d's smoothed loss fell by less than
   `tol` (relative to its value at the window's start) while the average of all datasets' smoothed
   losses fell by more than `tol`.
3. A step is in a plateau of d when it lies inside some flat window of d. Plateaus are the maximal
   runs of such steps; a run is kept when end_step - start_step >= `min_len`.
4. The plateau fraction of d is the share of logged steps that lie in its kept plateaus.

Noise-free, a loss held exactly flat over [a, b] is found as [a, b] exactly as long as outside it
the loss falls by more than `tol` per step; in general the ends move by less than window / 2 when
outside a plateau the loss falls by more than `tol` within any window / 2 steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import MmlmError
from .run_records import Metrics

AUTO_WINDOW_SHARE = 0.05  # auto window: 5% of the run's steps ...
AUTO_WINDOW_MIN_POINTS = 3  # ... and at least 3 logged points


@dataclass
class PlateauRule:
    window: int | None = None  # steps; None = auto (5% of the run's steps, at least 3 logged points)
    tol: float = 0.01  # relative loss change over one window that separates flat from falling
    min_len: int | None = None  # steps; None = 2 * window

    def check(self) -> None:
        if self.window is not None and self.window < 1:
            raise MmlmError(f"--window must be at least 1 step, got {self.window}")
        if not 0 < self.tol < 1:
            raise MmlmError(f"--tol must lie in (0, 1), got {self.tol}")
        if self.min_len is not None and self.min_len < 0:
            raise MmlmError(f"--min-len must be at least 0 steps, got {self.min_len}")


@dataclass
class Plateaus:
    """One run's plateaus: intervals [start_step, end_step] and fraction per dataset."""

    steps: np.ndarray  # the logged training steps the rule ran on
    smoothed: dict[str, np.ndarray]  # dataset -> smoothed loss at those steps
    intervals: dict[str, list[list[int]]] = field(default_factory=dict)
    fraction: dict[str, float] = field(default_factory=dict)
    in_plateau: dict[str, np.ndarray] = field(default_factory=dict)  # dataset -> bool per step
    window: int = 0
    min_len: int = 0

    @property
    def any_fraction(self) -> float:
        """Share of logged steps where at least one dataset is in a plateau."""
        if not self.in_plateau:
            return 0.0
        return float(np.mean(np.any(np.stack(list(self.in_plateau.values())), axis=0)))


def _fill(steps: np.ndarray, values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return values if ok.all() else np.interp(steps, steps[ok], values[ok])


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each maximal run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def find_plateaus(metrics: Metrics, rule: PlateauRule | None = None) -> Plateaus:
    from scipy.ndimage import median_filter  # slow to import: only when needed

    rule = rule or PlateauRule()
    rule.check()
    datasets = metrics.datasets
    if len(datasets) < 2:
        found = ", ".join(datasets) or "none"
        raise MmlmError(f"{metrics.path}: plateaus need a mixed run (two or more `loss/<dataset>` keys); found {found}")
    rows = np.any(np.stack([metrics.present[f"loss/{d}"] for d in datasets]), axis=0)
    steps = metrics.steps[rows]
    n = steps.size
    spacing = float(np.median(np.diff(steps))) if n > 1 else 1.0
    window = rule.window
    if window is None:
        window = max(AUTO_WINDOW_MIN_POINTS * spacing, AUTO_WINDOW_SHARE * float(steps[-1] - steps[0]))
    w = max(1, int(round(window / spacing)))  # the window in logged points
    window = int(round(w * spacing))
    min_len = 2 * window if rule.min_len is None else rule.min_len

    smoothed = {}
    for d in datasets:
        v = metrics.values[f"loss/{d}"][rows]
        ok = metrics.present[f"loss/{d}"][rows] & np.isfinite(v)
        if ok.sum() < 2:
            raise MmlmError(f"{metrics.path}: dataset '{d}' has fewer than two finite `loss/{d}` values")
        smoothed[d] = median_filter(_fill(steps, v, ok), size=w | 1, mode="nearest")
    avg = np.mean(np.stack(list(smoothed.values())), axis=0)

    out = Plateaus(steps=steps, smoothed=smoothed, window=window, min_len=min_len)
    if n <= w:  # too short for a single window
        for d in datasets:
            out.intervals[d], out.fraction[d], out.in_plateau[d] = [], 0.0, np.zeros(n, bool)
        return out
    avg_falls = avg[:-w] - avg[w:] > rule.tol * avg[:-w]
    for d in datasets:
        s = smoothed[d]
        flat_end = np.zeros(n, bool)  # flat_end[t]: the window ending at row t is flat
        flat_end[w:] = (s[:-w] - s[w:] < rule.tol * s[:-w]) & avg_falls
        # row r lies in a flat window when some window ending at t in [r, r + w] is flat
        c = np.concatenate([[0], np.cumsum(flat_end)])
        hi = np.minimum(np.arange(n) + w + 1, n)
        covered = c[hi] - c[np.arange(n)] > 0
        keep = np.zeros(n, bool)
        intervals = []
        for a, b in _runs(covered):
            if steps[b] - steps[a] >= min_len:
                intervals.append([int(steps[a]), int(steps[b])])
                keep[a : b + 1] = True
        out.intervals[d], out.fraction[d], out.in_plateau[d] = intervals, float(keep.mean()), keep
    return out
