"""The run folders of a sweep, which are its source of truth.

DIR/runs/<id>/
    sweep.json   the RunSpec, written before the run is first launched
    error.txt    why the last attempt failed: a one-line reason, then the traceback
    .lock        flock()ed by the process training the run, so two processes never train one run
    ...          everything `mmlm train` writes: config.json, metrics.jsonl, summary.json, its checkpoint

A run is done when summary.json says status "done"; failed when error.txt exists; interrupted when it
holds a checkpoint to resume from; new otherwise.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from .. import atomic
from ..jsonio import loads
from .grid import RunSpec

DONE, FAILED, INTERRUPTED, NEW = "done", "failed", "interrupted", "new"


class RunBusy(Exception):
    """Another process holds the run's lock (a sweep still running, or an orphaned job)."""


def runs_root(out: str | Path) -> Path:
    return Path(out) / "runs"


def run_dir(out: str | Path, rid: str) -> Path:
    return runs_root(out) / rid


def write_spec(out: str | Path, spec: RunSpec) -> None:
    """Record the spec the run is launched with (its id-free settings, e.g. the data root, may change)."""
    folder = run_dir(out, spec.id)
    if _read_json(folder / "sweep.json") != spec.to_json():
        atomic.write_json(folder / "sweep.json", spec.to_json())


def read_spec(folder: Path) -> RunSpec | None:
    obj = _read_json(folder / "sweep.json")
    try:
        return RunSpec.from_json(obj) if obj else None
    except TypeError:
        return None


def read_summary(folder: Path) -> dict | None:
    return _read_json(folder / "summary.json")


def has_checkpoint(folder: Path) -> bool:
    """Whether `mmlm train --resume` can continue this run (checkpoints appear whole or not at all)."""
    from ..checkpoint import latest

    return latest(folder) is not None


def state_of(folder: Path) -> tuple[str, str]:
    """(state, detail): detail is the error of a failed run, the progress of an interrupted one."""
    summary = read_summary(folder)
    if summary and summary.get("status") == "done":
        return DONE, ""
    if (folder / "error.txt").is_file():
        return FAILED, read_error(folder)
    if summary:  # finished without "done" and no error.txt (the worker died before writing it)
        return FAILED, str(summary.get("status") or "stopped")
    if folder.is_dir() and has_checkpoint(folder):
        last = last_metrics(folder)
        return INTERRUPTED, f"at {int(last['tokens']):,} tokens" if last and "tokens" in last else ""
    return NEW, ""


def read_error(folder: Path) -> str:
    try:
        text = (folder / "error.txt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "failed"
    return text.splitlines()[0] if text.strip() else "failed"


def write_error(folder: Path, reason: str, details: str = "") -> None:
    reason = " ".join(reason.split()) or "failed"
    atomic.write_text(folder / "error.txt", reason + "\n" + (details.rstrip() + "\n" if details else ""))


def clear_error(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (folder / "error.txt").unlink()


def last_metrics(folder: Path) -> dict | None:
    """The last complete line of metrics.jsonl (read from the end: logs can be long)."""
    path = folder / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            obj = loads(line)
        except ValueError:
            continue  # a line being written
        if isinstance(obj, dict):
            return obj
    return None


@contextlib.contextmanager
def run_lock(folder: Path, wait_s: float = 2.0) -> Iterator[None]:
    """Hold the run's lock for the duration; RunBusy if another process keeps it for `wait_s`.

    The short wait lets a planner that only peeked (see `is_busy`) let go."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(atomic.exclusive(folder / ".lock", wait_s))
        except atomic.Locked:
            raise RunBusy(str(folder)) from None
        yield


def is_busy(folder: Path) -> bool:
    """Whether some process is training this run right now."""
    if not (folder / ".lock").exists():
        return False
    fd = os.open(folder / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict | None:
    try:
        obj = loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
