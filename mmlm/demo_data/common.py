"""What the demo corpus builders share: the seed, the standard library's source files, and writing
PNGs and JSON Lines (their progress callback is mmlm.progress's)."""
from __future__ import annotations

import io
import json
import sysconfig
from pathlib import Path

import numpy as np

SEED = 0


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """CPython standard-library .py files, without tests and site-packages, in a fixed order."""
    root = stdlib_root()
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    return [p for p in sorted(root.rglob("*.py")) if not skip & set(p.relative_to(root).parts)]


def png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_lines(path: Path, lines: list[str]) -> None:
    """One file of lines (JSON Lines, SMILES), each ended by a newline, UTF-8."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_lines(path, [json.dumps(r, ensure_ascii=False) for r in rows])
