"""Write files and folders so that a crash never leaves a half-written result behind.

Everything is written under a temporary name in the same folder, then renamed into place
(rename is atomic on POSIX within one file system).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`, else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces `path` whole, else it is removed.

    A folder named `path` exists only once everything in it was written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like any folder
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_if_stale(tmp: str | os.PathLike) -> bool:
    """Remove a temporary file or folder left by a killed writer (`.NAME.tmp-PID...` or
    `.NAME.old-PID`) when process PID is gone; returns whether it was removed."""
    tmp = Path(tmp)
    m = re.search(r"\.(?:tmp|old)-(\d+)", tmp.name)
    if m and (int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1)))):
        return False
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    return True


# ---- output folders the user names (`--out`) ---------------------------------------------------

def check_output_dir(path: str | os.PathLike, ours: Callable[[Path], set[str]], option: str = "--out") -> Path:
    """Refuse (MmlmError, nothing changed) an output folder that `output_dir` may not replace;
    returns the absolute path. `ours(folder)`: the names in an existing folder that an earlier run
    of the same command wrote (read from its own listing, e.g. samples.jsonl); any other entry is
    the user's. Call it before long work too, so a bad --out fails at once."""
    from .errors import MmlmError

    given, path = Path(path), Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        raise MmlmError(f"{option} {given}: exists and is not a folder")
    if path.is_dir():
        if path == Path.cwd() or path.parent == path:
            raise MmlmError(f"{option} {given}: is the current (or root) folder; name a new folder for the output")
        try:
            names = [p.name for p in path.iterdir()]
        except OSError as e:
            raise MmlmError(f"{option} {given}: cannot list the folder ({e.strerror or e})") from None
        mine = ours(path) if names else set()
        foreign = sorted(n for n in names if n not in mine)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise MmlmError(f"{option} {given}: folder is not empty: it holds files mmlm did not write ({shown}); "
                            f"choose a new or empty folder (nothing was changed)")
    parent = path.parent
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir():
        raise MmlmError(f"{option} {given}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MmlmError(f"{option} {given}: cannot write in {parent} (permission denied)")
    return path


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, ours: Callable[[Path], set[str]], option: str = "--out") -> Iterator[Path]:
    """Write a user-named output folder whole: yield a fresh temporary folder, and on success swap
    it in for `path`. An existing folder is replaced only when it is empty or holds nothing but an
    earlier output of the same command (`check_output_dir`); a folder holding anything else is
    refused before anything is written, so nothing of the user's is ever deleted."""
    with atomic_dir(check_output_dir(path, ours, option)) as tmp:
        yield tmp


# ---- one writer at a time ------------------------------------------------------------------------

class Locked(Exception):
    """The lock is held by another process; `holder` says which (as it wrote into the lock file)."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path}: locked by {holder}")
        self.path, self.holder = path, holder


def _holder_line() -> str:
    import shlex
    import socket
    import sys
    import time

    cmd = " ".join(shlex.quote(a) for a in sys.argv[:6])
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} ({cmd})"


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike, wait_s: float = 0.0, remove_created: Path | None = None) -> Iterator[None]:
    """Hold an exclusive lock (flock on `lock_file`) for the duration; raises Locked naming the
    holder when another holder keeps it for `wait_s` seconds. The lock goes with the process however
    it ends (kill -9 included). Each call opens the file anew, so two holders conflict even within
    one process. `remove_created`: a folder this call created to hold the lock, removed again when
    the work fails and left nothing but the lock file in it."""
    import fcntl
    import time

    lock_file = Path(lock_file)
    created = remove_created is not None and not remove_created.exists()
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
                    raise Locked(lock_file, holder) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder_line() + "\n").encode(), 0)
        try:
            yield
        except BaseException:
            if created and [p.name for p in remove_created.iterdir()] == [lock_file.name]:
                lock_file.unlink()
                remove_created.rmdir()
            raise
        finally:
            try:
                os.ftruncate(fd, 0)  # nobody holds it now
            except OSError:
                pass
    finally:
        os.close(fd)  # closing releases the lock
