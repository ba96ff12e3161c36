"""Reading the project's JSON files with one-line errors (writing is in mmlm/atomic.py).

Every JSON reader goes through `loads` (a string, e.g. one JSON-lines line) or `read_json` (a
file): deeply nested input (json's recursion limit), bytes that are not UTF-8 and malformed JSON
all become a ValueError / MmlmError naming the file, never a traceback. JSON-lines text is split
on "\\n" only (`lines`): U+2028, U+0085 and friends are valid inside JSON strings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .errors import MmlmError


class JSONError(ValueError):
    """Malformed, too deeply nested or non-UTF-8 JSON (a ValueError, as json's own errors are)."""


def loads(text: str | bytes) -> Any:
    """json.loads, with nesting too deep for the parser reported as a JSONError (not RecursionError)."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text)
    except RecursionError:
        raise JSONError("nested too deeply") from None
    except UnicodeDecodeError as e:
        raise JSONError(f"not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise JSONError(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None


def lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of JSON-lines text, split on "\\n" only ("\\r\\n" ends a line too)."""
    for no, line in enumerate(text.split("\n"), 1):
        yield no, line[:-1] if line.endswith("\r") else line


def read_json(path: str | Path, what: str, fmt: str | None = None) -> Any:
    """Parse a JSON file; a missing or unreadable file is an MmlmError naming the path and `what` it should be.
    With `fmt`, the file must be an object whose "format" is `fmt` (else: written by an incompatible version)."""
    path = Path(path)
    try:
        obj = loads(path.read_bytes())
    except FileNotFoundError:
        raise MmlmError(f"{path}: no such file (expected {what})") from None
    except IsADirectoryError:
        raise MmlmError(f"{path}: is a folder (expected {what})") from None
    except OSError as e:
        raise MmlmError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    except JSONError as e:
        raise MmlmError(f"{path}: unreadable {what} ({e})") from None
    if fmt is not None and (not isinstance(obj, dict) or obj.get("format") != fmt):
        found = obj.get("format") if isinstance(obj, dict) else None
        raise MmlmError(f"{path}: written by an incompatible version (format {found!r}, expected {fmt!r})")
    return obj
