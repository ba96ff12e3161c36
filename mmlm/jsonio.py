"""Reading the project's JSON files with one-line errors (writing is in mmlm/atomic.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import MmlmError


def read_json(path: str | Path, what: str, fmt: str | None = None) -> Any:
    """Parse a JSON file; a missing or unreadable file is an MmlmError naming the path and `what` it should be.
    With `fmt`, the file must be an object whose "format" is `fmt` (else: written by an incompatible version)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MmlmError(f"{path}: no such file (expected {what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MmlmError(f"{path}: unreadable {what} ({e})") from None
    if fmt is not None and (not isinstance(obj, dict) or obj.get("format") != fmt):
        found = obj.get("format") if isinstance(obj, dict) else None
        raise MmlmError(f"{path}: written by an incompatible version (format {found!r}, expected {fmt!r})")
    return obj
