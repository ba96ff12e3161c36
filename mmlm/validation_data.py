"""Where the published scaling-law data lies: $MMLM_VALIDATION_DIR, else ../shared/validation beside the
repository (never committed; tests and benchmarks that read it skip or say so when it is absent)."""
from __future__ import annotations

import os
from pathlib import Path


def validation_dir() -> Path:
    """The folder of published data (it may not exist)."""
    repo = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("MMLM_VALIDATION_DIR") or repo.parent / "shared" / "validation")
