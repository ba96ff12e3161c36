"""Run a sweep: plan what each run needs, launch the missing ones, rebuild results.csv as they finish.

Launchers (all call `worker.train_run` in a fresh process, which records its own outcome in the run folder):
    local           a pool of `jobs` spawned worker processes on this machine, CPU threads split between them
    submitit-local  submitit's LocalExecutor (one process per run, `jobs` at a time), logs in DIR/submitit/
    slurm           submitit's SLURM executor: one job array, `jobs` runs at a time (default: no limit)
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from multiprocessing.connection import wait as wait_ready
from pathlib import Path
from typing import Callable, Iterator

from .. import atomic
from ..errors import MmlmError, last_error_line
from ..subprocs import SAFE_PYTHON
from .grid import Grid, slurm_params
from .results_csv import write_results
from .run_folders import (DONE, FAILED, INTERRUPTED, clear_error, is_busy, last_metrics, run_dir, state_of, write_error,
                          write_spec)
from .worker import Orphaned, train_run

LAUNCHERS = ("local", "submitit-local", "slurm")
# what happens to a run, by its state in the run folder
ACTIONS = {DONE: "skip", INTERRUPTED: "resume", FAILED: "failed", "new": "new"}
LAUNCHED = ("new", "resume", "retry")
PROGRESS_EVERY_S = 1.0
BUSY_GRACE_S = 1.0

Event = Callable[[dict], None]


def plan_sweep(grid: Grid, out: str | Path, retry_failed: bool = False) -> list[dict]:
    """What would happen to each run: skip (done), resume, new, retry, failed (not retried) or busy."""
    plan = []
    for spec in grid.runs:
        folder = run_dir(out, spec.id)
        state, detail = state_of(folder)
        action = ACTIONS[state]
        if state == FAILED and retry_failed:
            action = "retry"
        if action != "skip" and is_busy(folder):
            action, detail = "busy", "another process is training this run"
        plan.append({
            "id": spec.id, "size": spec.size, "mixture": spec.mixture, "tokens": spec.tokens,
            "n_params": spec.n_params, "flops_budget": spec.flops_budget,
            "branch_of": spec.branch_of, "start_tokens": spec.start_tokens,
            "state": state, "action": action, "detail": detail,
        })
    busy = [p for p in plan if p["action"] == "busy"]
    if busy:  # a process killed a moment ago may still hold its lock: look once more
        time.sleep(BUSY_GRACE_S)
        for p in busy:
            if not is_busy(run_dir(out, p["id"])):
                state, detail = state_of(run_dir(out, p["id"]))
                p.update(state=state, detail=detail,
                         action="retry" if state == FAILED and retry_failed else ACTIONS[state])
    return plan


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_sweep(
    grid: Grid,
    out: str | Path,
    jobs: int | None = None,
    launcher: str = "local",
    retry_failed: bool = False,
    dry_run: bool = False,
    slurm: dict | None = None,
    on_event: Event | None = None,
) -> dict:
    """Run what is missing of `grid` under `out`; returns a report of every run and the results table.

    Events passed to `on_event` (dicts with "event"): plan {runs}, start {id}, progress {id, tokens, loss},
    end {id, status, error}, results {path, rows}.
    """
    emit = on_event or (lambda e: None)
    if launcher not in LAUNCHERS:
        raise MmlmError(f"--launcher {launcher!r}: unknown (choose from {', '.join(LAUNCHERS)})")
    if jobs is not None and jobs < 1:
        raise MmlmError(f"--jobs {jobs}: must be at least 1")
    given = {k: v for k, v in (slurm or {}).items() if v is not None}
    slurm_opts = {**grid.slurm, **slurm_params(given, prefix="--")}
    if launcher == "slurm" and not dry_run:
        _check_slurm_available()
    out = Path(out)
    plan = plan_sweep(grid, out, retry_failed)
    emit({"event": "plan", "runs": plan, "dry_run": dry_run})
    report = {"out": str(out), "dry_run": dry_run, "runs": plan}
    if dry_run:
        from .branch import compute

        report["compute"] = compute(grid)
        return report

    with _sweep_lock(out):
        for spec in grid.runs:
            write_spec(out, spec)
        path, rows = write_results(out)
        # largest first (by 6 N D), so that parallel workers finish close together
        todo = [p["id"] for p in sorted(plan, key=lambda p: -p["n_params"] * p["tokens"]) if p["action"] in LAUNCHED]
        for p in plan:
            if p["action"] == "retry":
                clear_error(run_dir(out, p["id"]))
        outcomes = _launch(grid, todo, out, _make_launcher(launcher, out, jobs, slurm_opts), emit) if todo else {}
        path, rows = write_results(out)
        emit({"event": "results", "path": str(path), "rows": rows})

    final = _final_states(plan, out, outcomes)
    report.update(runs=final, results=str(path), rows=rows,
                  counts={s: sum(r["state"] == s for r in final) for s in (DONE, FAILED, INTERRUPTED, "new", "busy")})
    return report


def _launch(grid: Grid, todo: list[str], out: Path, pool, emit: Event) -> dict[str, dict]:
    """Train the runs `todo` with `pool` (closed after), cooldown branches in a wave after their trunks;
    {run id: outcome}."""
    from .branch import wave

    outcomes: dict[str, dict] = {}
    specs = {spec.id: spec for spec in grid.runs}
    try:
        for w in sorted({wave(specs[rid]) for rid in todo}):
            done: dict[str, dict] = {}
            _drive(pool, [rid for rid in todo if wave(specs[rid]) == w], out, done, emit)
            outcomes.update(done)
    finally:
        pool.close()
    return outcomes


def _final_states(plan: list[dict], out: Path, outcomes: dict[str, dict]) -> list[dict]:
    """Each planned run with its state after the sweep ("busy" where another process holds it)."""
    final = []
    for p in plan:
        state, detail = state_of(run_dir(out, p["id"]))
        if outcomes.get(p["id"], {}).get("status") == "busy" or (p["action"] == "busy" and state != DONE):
            state, detail = "busy", "another process is training this run"
        final.append({**p, "state": state, "detail": detail})
    return final


def _drive(pool, todo: list[str], out: Path, outcomes: dict, emit: Event) -> None:
    """Feed runs to the launcher, report starts, progress and ends, rebuild results after each run."""
    pool.submit(todo)
    running: set[str] = set()
    next_progress = 0.0
    while len(outcomes) < len(todo):
        for kind, rid, outcome in pool.poll(timeout=0.5):
            if kind == "start":
                running.add(rid)
                emit({"event": "start", "id": rid})
            else:
                running.discard(rid)
                outcomes[rid] = outcome
                emit({"event": "end", "id": rid, "status": outcome["status"], "error": outcome.get("error", "")})
                path, rows = write_results(out)
                emit({"event": "results", "path": str(path), "rows": rows})
        if time.monotonic() >= next_progress:
            next_progress = time.monotonic() + PROGRESS_EVERY_S
            for rid in running:
                last = last_metrics(run_dir(out, rid))
                if last and "tokens" in last:
                    emit({"event": "progress", "id": rid, "tokens": int(last["tokens"]), "loss": last.get("loss")})


def _make_launcher(name: str, out: Path, jobs: int | None, slurm: dict):
    if name == "local":
        jobs = jobs or 1
        return LocalPool(out, jobs, threads=max(1, cpu_count() // jobs))
    return SubmititPool(out, name, jobs, slurm)


def _check_slurm_available() -> None:
    from submitit.slurm.slurm import SlurmExecutor

    if SlurmExecutor.affinity() <= 0:  # submitit's own test: is `srun` on the PATH
        raise MmlmError("--launcher slurm: SLURM is not available on this machine (no srun on the PATH)")


@contextlib.contextmanager
def _sweep_lock(out: Path) -> Iterator[None]:
    """One sweep at a time per output folder (the lock goes with the process, however it ends)."""
    if out.exists() and not out.is_dir():
        raise MmlmError(f"--out {out}: exists and is not a folder")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(atomic.exclusive(out / ".sweep.lock"))
        except atomic.Locked as e:
            raise MmlmError(f"{out}: another `mmlm sweep` is running on this folder ({e.holder})") from None
        yield


# ---- local: a pool of spawned workers -------------------------------------------------------------


def _pool_worker(conn, out: str, threads: int, parent_pid: int) -> None:
    """Take run ids from the parent one at a time; answer each with its outcome. Ends with the pipe."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it terminates us
    try:
        while True:
            rid = conn.recv()
            if rid is None:
                break
            conn.send(train_run(out, rid, threads, parent_pid))
    except (EOFError, BrokenPipeError, KeyboardInterrupt, Orphaned):
        pass  # the sweep is gone or stopping: its runs resume from their checkpoints next time


class LocalPool:
    """`jobs` worker processes (spawned, so no torch state is inherited), each handed one run at a time.

    Each worker gets `threads` torch threads. A worker that dies (OOM killer, segfault) fails its run
    and is replaced; the parent's death closes the pipes and the workers stop (runs resume later).
    """

    def __init__(self, out: Path, jobs: int, threads: int):
        self.out, self.jobs, self.threads = str(out), jobs, threads
        self.ctx = mp.get_context("spawn")
        self.queue: list[str] = []
        self.workers: dict = {}  # process -> (conn, run id or None)

    def submit(self, ids: list[str]) -> None:
        self.queue.extend(ids)

    def _spawn(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_pool_worker, args=(child, self.out, self.threads, os.getpid()), daemon=True)
        p.start()
        child.close()
        self.workers[p] = (parent, None)
        return p

    def poll(self, timeout: float) -> list[tuple]:
        events = []
        idle = sum(rid is None for _, rid in self.workers.values())
        while len(self.queue) > idle and len(self.workers) < self.jobs:
            self._spawn()
            idle += 1
        for p, (conn, rid) in list(self.workers.items()):
            if rid is None and self.queue:
                rid = self.queue.pop(0)
                conn.send(rid)
                self.workers[p] = (conn, rid)
                events.append(("start", rid, None))
            elif rid is None:  # nothing left for this worker
                conn.send(None)
                conn.close()
                p.join(timeout=5)
                del self.workers[p]
        if events:
            return events
        ready = wait_ready([c for c, _ in self.workers.values()] + [p.sentinel for p in self.workers], timeout)
        for p, (conn, rid) in list(self.workers.items()):
            if conn in ready:
                try:
                    events.append(("end", rid, conn.recv()))
                    self.workers[p] = (conn, None)
                    continue
                except EOFError:
                    pass
            if p.sentinel in ready or not p.is_alive():
                p.join(timeout=5)
                del self.workers[p]
                conn.close()
                if rid is not None:
                    error = f"worker process died (exit code {p.exitcode})"
                    write_error(run_dir(self.out, rid), error)
                    events.append(("end", rid, {"id": rid, "status": "failed", "error": error}))
        return events

    def close(self) -> None:
        for p, (conn, _) in self.workers.items():
            with contextlib.suppress(OSError):
                conn.close()
            if p.is_alive():
                p.terminate()
        for p in self.workers:
            p.join(timeout=10)
        self.workers = {}


# ---- submitit: its local executor or SLURM --------------------------------------------------------


class SubmititPool:
    """Runs as submitit jobs. Local: at most `jobs` at once. SLURM: one array, `jobs` at a time."""

    def __init__(self, out: Path, launcher: str, jobs: int | None, slurm: dict):
        import submitit

        self.out = str(out)
        folder = out / "submitit"
        self.local = launcher == "submitit-local"
        timeout_min = int(slurm.get("time_limit", 7 * 24 * 60 if self.local else 24 * 60))
        if self.local:
            self.jobs = jobs or 1
            self.threads = max(1, cpu_count() // self.jobs)
            self.executor = submitit.LocalExecutor(folder=folder, python=SAFE_PYTHON)
            self.executor.update_parameters(timeout_min=timeout_min)
        else:
            self.executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_python=SAFE_PYTHON)
            self.jobs = jobs  # None: the whole array at once
            self.threads = slurm.get("cpus_per_task")
            params = {"timeout_min": timeout_min, "nodes": 1, "tasks_per_node": 1, "name": "mmlm-sweep"}
            if "partition" in slurm:
                params["slurm_partition"] = slurm["partition"]
            if "gpus_per_run" in slurm:
                params["gpus_per_node"] = slurm["gpus_per_run"]
            if "cpus_per_task" in slurm:
                params["cpus_per_task"] = slurm["cpus_per_task"]
            if "mem" in slurm:
                params["mem_gb"] = slurm["mem"]
            if jobs:
                params["slurm_array_parallelism"] = jobs
            self.executor.update_parameters(**params)
        self.queue: list[str] = []
        self.jobs_by_id: dict[str, object] = {}
        self.started: set[str] = set()

    def submit(self, ids: list[str]) -> None:
        if self.local:
            self.queue.extend(ids)
            return
        with self.executor.batch():
            pending = [(rid, self.executor.submit(train_run, self.out, rid, self.threads)) for rid in ids]
        self.jobs_by_id.update(pending)

    def poll(self, timeout: float) -> list[tuple]:
        events = []
        while self.queue and len(self.jobs_by_id) < self.jobs:
            rid = self.queue.pop(0)
            self.jobs_by_id[rid] = self.executor.submit(train_run, self.out, rid, self.threads)
        for rid, job in list(self.jobs_by_id.items()):
            if rid not in self.started and (self.local or job.state in ("RUNNING", "COMPLETING", "COMPLETED")):
                self.started.add(rid)
                events.append(("start", rid, None))
            if job.done():
                del self.jobs_by_id[rid]
                try:
                    outcome = job.result()
                except Exception as e:  # noqa: BLE001 — the job died (timeout, node lost, killed)
                    error = last_error_line(str(e)) or " ".join(str(e).split())[:300] or type(e).__name__
                    error = f"submitit job {job.job_id} failed: {error}"
                    write_error(run_dir(self.out, rid), error)
                    outcome = {"id": rid, "status": "failed", "error": error}
                if rid not in self.started:
                    events.append(("start", rid, None))
                events.append(("end", rid, outcome))
        if not events:
            time.sleep(timeout)
        return events

    def close(self) -> None:
        # stopping the sweep (Ctrl-C) stops its jobs too, local or queued on the cluster: they resume next time
        for job in self.jobs_by_id.values():
            with contextlib.suppress(Exception):
                job.cancel(check=False)
        self.jobs_by_id = {}
