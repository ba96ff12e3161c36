"""The one progress-callback signature of the library: `on_progress(stage, done, total, tokens=0)`.

    stage   what is running now ("read", "train text", "encode", "bootstrap", "plotting"); a renderer
            draws one bar per stage
    done    units of that stage finished so far: a count, never an increment
    total   units in all (0 when unknown)
    tokens  tokens written so far where the work writes tokens (tokenize), else 0

Long-running library functions take `on_progress: Progress | None` and never print. Train's `on_log` and
sweep's `on_event` are another thing: event streams of dicts with an "event" key (also written as JSON lines).
"""
from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int, tokens: int = 0) -> None: ...


def silent(stage: str, done: int, total: int, tokens: int = 0) -> None:
    """The Progress that reports nothing (the default where none is given)."""


def relabelled(on_progress: Progress, stage: str, total: int | None = None) -> Progress:
    """`on_progress` with every report under `stage` (and `total`, where given): one bar for a piece of
    work whose parts report under their own names."""
    def report(_stage: str, done: int, total_: int, tokens: int = 0) -> None:
        on_progress(stage, done, total_ if total is None else total, tokens)
    return report
