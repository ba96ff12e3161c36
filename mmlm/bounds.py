"""Sizes checked before anything is allocated: a setting that would need more memory than the
machine has is refused with the estimate, instead of running for minutes and dying in the allocator.

    check_memory(n_bytes, "--image-size 100000", "one image")   # MmlmError when it cannot fit
"""
from __future__ import annotations

import os

from .errors import MmlmError

SHARE = 0.9  # of the memory available now that one estimate may take


def available_memory() -> int:
    """Bytes of memory available to this process now (MemAvailable, or the cgroup limit when lower)."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 1 << 62  # unknown: do not refuse
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(limit_file, encoding="ascii").read().strip()
        except OSError:
            continue
        if text.isdigit():
            avail = min(avail, int(text))
    limit = os.environ.get("MMLM_MEMORY_LIMIT", "")  # bytes; lets tests (and users) set the budget
    return int(limit) if limit.isdigit() else avail


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def check_memory(n_bytes: float, what: str, for_what: str = "") -> None:
    """Refuse (MmlmError naming `what`, e.g. an option and its value) when an estimated `n_bytes`
    exceed SHARE of the memory available."""
    avail = available_memory()
    if n_bytes > SHARE * avail:
        extra = f" for {for_what}" if for_what else ""
        raise MmlmError(f"{what}: would need about {human(n_bytes)} of memory{extra}, "
                        f"but about {human(avail)} is available; use a smaller value")
