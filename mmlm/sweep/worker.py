"""What runs inside a worker process, whichever launcher started it: train one run of a sweep."""
from __future__ import annotations

import os
import traceback
from pathlib import Path

from ..errors import MmlmError
from .run_folders import DONE, RunBusy, clear_error, has_checkpoint, read_spec, run_dir, run_lock, state_of, write_error


class Orphaned(BaseException):
    """The sweep that started this worker is gone: stop (the run resumes from its checkpoint later)."""


def limit_threads(threads: int | None) -> None:
    """Give this process `threads` CPU threads (before torch spins up its pools, where possible)."""
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def train_run(out: str, rid: str, threads: int | None = None, parent_pid: int | None = None) -> dict:
    """Train (or resume, or just report) run `rid` of the sweep in `out`.

    Returns {"id", "status": "done" | "failed" | "busy", "error"}; a failure is also written to the run's
    error.txt, so it is known even if no one is waiting for this result. With `parent_pid`, stops as soon
    as that process has gone (a local worker must not outlive its sweep).
    """
    limit_threads(threads)
    folder = run_dir(out, rid)
    try:
        with run_lock(folder):
            if state_of(folder)[0] == DONE:  # finished by someone else meanwhile
                return {"id": rid, "status": "done", "error": ""}
            clear_error(folder)
            (folder / "summary.json").unlink(missing_ok=True)  # a stopped attempt's: stale once we retry
            try:
                summary = _train(folder, threads, parent_pid)
            except Exception as e:  # noqa: BLE001 — any failure of the run is recorded, not raised
                reason = str(e) if isinstance(e, MmlmError) else f"{type(e).__name__}: {e}"
                write_error(folder, reason, traceback.format_exc())
                return {"id": rid, "status": "failed", "error": " ".join(reason.split())}
            if summary.get("status") != "done":
                reason = str(summary.get("status") or "stopped")
                write_error(folder, reason)
                return {"id": rid, "status": "failed", "error": reason}
            return {"id": rid, "status": "done", "error": ""}
    except RunBusy:
        return {"id": rid, "status": "busy", "error": "another process is training this run"}


def _train(folder: Path, threads: int | None, parent_pid: int | None) -> dict:
    from ..train import TrainConfig, train

    spec = read_spec(folder)
    if spec is None:
        raise MmlmError(f"{folder / 'sweep.json'}: missing or unreadable run spec")
    opts = dict(spec.train)
    if threads and "threads" not in opts:
        opts["threads"] = threads
    if opts.get("tensorboard"):  # every run of the sweep under one folder, so they overlay
        opts["tensorboard_dir"] = str(folder.parent.parent / "tensorboard" / folder.name)
    if spec.branch_of:
        from ..schedule import branch_point

        point = branch_point(folder.parent / spec.branch_of, spec.branch_step)
        if not point.is_dir():
            raise MmlmError(f"trunk run {spec.branch_of} has no branch point at update {spec.branch_step} "
                            "(it has to get there first; did it fail, or run before branch = true?)")
        opts["branch_from"] = str(point)
    cfg = TrainConfig(
        **opts,
        data=spec.data,
        size=spec.size,
        mix=",".join(f"{name}={weight!r}" for name, weight in spec.mix.items()),
        tokens=int(spec.tokens),
        out=str(folder),
        resume=has_checkpoint(folder),
    )

    def on_log(event: dict) -> None:
        if parent_pid is not None and os.getppid() != parent_pid:
            raise Orphaned()

    return train(cfg, on_log=on_log)
