"""Reading the project's JSON files with one-line errors (writing is in mmlm/atomic.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import MmlmError


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; a missing or unreadable file is an MmlmError naming the path and `what` it should be."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MmlmError(f"{path}: no such file (expected {what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MmlmError(f"{path}: unreadable {what} ({e})") from None
