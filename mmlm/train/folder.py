"""The run folder: RUN/config.json and what may share a folder with it, RUN/metrics.jsonl, the
tokenizers copied beside the weights, and the lock that keeps one training per folder."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path

from .. import atomic, checkpoint
from ..errors import MmlmError
from ..jsonio import lines, loads, read_json
from .config import IDENTITY, SWEEP_FILES, TrainConfig


RUN_FORMAT = "mmlm-run/1"  # the "format" of RUN/config.json


def read_run_config(run: Path) -> dict:
    """RUN/config.json, checked to be a run config of this format; one-line MmlmError otherwise."""
    return read_json(run / "config.json", "run config", RUN_FORMAT)


def load_run_config(out: str | Path) -> TrainConfig:
    """The TrainConfig a run folder was started with (RUN/config.json)."""
    path = Path(out) / "config.json"
    stored = read_run_config(Path(out))
    try:
        stored = stored["train"]
        return TrainConfig(**{f.name: stored[f.name] for f in fields(TrainConfig) if f.name in stored})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MmlmError(f"{path}: not a readable run config ({e})") from None


def config_from_options(options: dict) -> TrainConfig:
    """The options given on a command line (None = not given) over the defaults; with resume and an
    existing run, over that run's stored settings instead."""
    given = {k: v for k, v in options.items() if v is not None}
    out = given.get("out")
    if given.get("resume") and out and (Path(out) / "config.json").is_file():
        return TrainConfig(**{**asdict(load_run_config(out)), **given})
    return TrainConfig(**given)


class MetricsLog:
    """RUN/metrics.jsonl: one JSON object per step, appended and flushed as training goes."""

    def __init__(self, path: Path):
        self.path = path
        self.f = None

    def open(self, keep_until: int | None) -> None:
        """Start the file (keep_until None) or keep only the lines of steps <= keep_until (a resume)."""
        kept = []
        if keep_until is not None and self.path.exists():
            for _, line in lines(self.path.read_text(encoding="utf-8", errors="replace")):
                try:
                    obj = loads(line)
                except ValueError:
                    continue  # a line cut short by a kill
                if isinstance(obj, dict) and isinstance(obj.get("step"), int) and obj["step"] <= keep_until:
                    kept.append(line + "\n")
        self.close()
        atomic.write_text(self.path, "".join(kept))
        self.f = open(self.path, "a", encoding="utf-8")

    def write(self, line: dict) -> None:
        self.f.write(json.dumps(line) + "\n")
        self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def copy_tokenizers(data_root: Path, run: Path) -> None:
    atomic.write_bytes(run / "vocab.json", (data_root / "vocab.json").read_bytes())
    src = data_root / "tokenizers"
    if src.is_dir():
        with atomic.atomic_dir(run / "tokenizers") as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)


def identity(conf: dict) -> dict:
    """What must agree between a run folder and a resumed invocation (resolved values, so an
    option given explicitly equals its default)."""
    train = {k: conf["train"].get(k, getattr(TrainConfig, k, None)) for k in IDENTITY}  # .get: runs from before a key existed
    resolved = {k: conf["resolved"][k] for k in ("seq_len", "batch_rows", "steps", "lr", "warmup", "stall_tokens")}
    return {**train, **resolved, "mix": conf["mix"], "model": conf["model"]}


def differs(run: Path, data, mine: dict, stored) -> str | None:
    """Why a run folder's stored config is not the run whose config.json would be `mine` (None: it is)."""
    if not isinstance(stored, dict) or not {"train", "resolved"} <= set(stored):
        return f"{run / 'config.json'}: not a run config of mmlm train"
    if stored.get("vocab_sha256") != data.vocab_sha256:
        return f"--data {data.root}: vocab.json differs from the vocabulary {run} was trained with"
    if stored.get("datasets") != data.fingerprint():
        return f"--data {data.root}: the mixture's datasets changed since {run} started"
    try:
        theirs, mine = identity(stored), identity(mine)
    except (KeyError, TypeError):
        return f"{run / 'config.json'}: not a run config of this version"
    for key in mine:
        if mine[key] != theirs.get(key):
            return f"--resume: {key} is {mine[key]!r} but {run} was started with {theirs.get(key)!r}"
    return None


def resume_point(run: Path, resume: bool, data, mine: dict) -> Path | None:
    """The checkpoint to resume from (None: start fresh); MmlmError when the folder forbids it."""
    ckpt = checkpoint.latest(run)
    if ckpt is None:
        _check_fresh_folder(run, data, mine)
        return None
    if not resume:
        raise MmlmError(f"--out {run}: already holds a run with a checkpoint; use --resume to continue it, or another folder")
    why = differs(run, data, mine, read_run_config(run))
    if why:
        raise MmlmError(why)
    checkpoint.verify(ckpt)
    return ckpt


def _check_fresh_folder(run: Path, data, mine: dict) -> None:
    """A folder without a checkpoint may be started in only when it holds nothing but a sweep's
    files (and hidden lock/temporary names) or an unstarted attempt at this same run: never
    replace someone else's run or files (a finished run whose state/ was deleted, any folder
    with a model.safetensors...)."""
    if not run.is_dir():
        return
    found = sorted(p.name for p in run.iterdir() if not p.name.startswith(".") and p.name not in SWEEP_FILES)
    if not found:
        return
    stored = None
    if (run / "config.json").is_file():
        try:
            stored = read_run_config(run)
        except MmlmError:
            pass
    if isinstance(stored, dict) and not differs(run, data, mine, stored):
        return  # the same run, stopped before its first checkpoint: start it again
    shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    raise MmlmError(f"--out {run}: folder is not empty ({shown}) and holds no checkpoint of this run to "
                    f"resume; choose a new or empty folder (nothing was changed)")


def discard_untrained(run: Path) -> None:
    """Remove what a fresh run's start wrote (config, tokenizers, metrics, the step-0 checkpoint),
    so nothing that looks resumable is left behind after a failure before the first update."""
    for name in (checkpoint.STATE_DIR, "tokenizers"):
        shutil.rmtree(run / name, ignore_errors=True)
    for name in ("config.json", "vocab.json", "metrics.jsonl", checkpoint.WEIGHTS):
        (run / name).unlink(missing_ok=True)


def lock_run_folder(out: str):
    """One training per run folder at a time (RUN/.train.lock, held by rank 0 for the whole run;
    beside the sweep's RUN/.lock, which a sweep worker holds while it runs `train`). The second
    writer gets a one-line error naming the holder. A folder created only to hold the lock is
    removed again when training fails early."""
    if not out or int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    run = Path(out)
    if run.exists() and not run.is_dir():
        raise MmlmError(f"--out {run}: exists and is not a folder")
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(atomic.exclusive(run / ".train.lock", remove_created=run))
    except atomic.Locked as e:
        raise MmlmError(f"--out {run}: another training is writing to this run folder ({e.holder})") from None
    return stack
