"""The one exception type the CLI turns into a one-line error and a non-zero exit, and the
helpers that turn other failures (OS errors, a worker's stderr) into such lines."""
from __future__ import annotations

import errno
import re


class MmlmError(Exception):
    """A user-facing error: the message names what is wrong and where (file, line, option)."""


def os_error_line(e: OSError) -> str:
    """'PATH: reason' for an OSError (no traceback, no errno number)."""
    reason = e.strerror or errno.errorcode.get(e.errno or 0) or str(e) or type(e).__name__
    if e.errno == errno.EPERM and e.filename is not None:
        reason += " (an immutable or protected file?)"
    if e.filename is None:
        return reason
    if e.filename2 is not None:
        return f"{e.filename} -> {e.filename2}: {reason}"
    return f"{e.filename}: {reason}"


_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b:?.*")


def last_error_line(text: str) -> str | None:
    """The line that says why a child process failed: its last `error: ...` line (an MmlmError) or
    else the last exception line of a traceback (`ModuleNotFoundError: No module named ...`)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line) and not line.startswith(("torch.distributed.elastic", "ChildFailedError")):
            return line
    return None
