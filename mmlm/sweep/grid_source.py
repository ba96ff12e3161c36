"""Where the grid of `mmlm sweep` comes from: a grid file, or a built-in preset (whose data root is
built first when it is missing)."""
from __future__ import annotations

from pathlib import Path

from ..errors import MmlmError
from .grid import Grid

DEMO_DATA = Path("data/demo")  # the presets' data root unless --data says otherwise


def sweep_grid(grid: str | Path | None, preset: str | None, *, out: str | Path, data: str | Path | None = None,
               jobs: int | None = None, launcher: str = "local", dry_run: bool = False,
               on_data_progress=None) -> tuple[Grid, int | None]:
    """(the grid, runs at a time) for a grid file or a preset, exactly one of them.

    A preset runs one process per core on the local launcher unless `jobs` says otherwise, and
    builds its data root when missing (not on a dry run; `on_data_progress` is the build's
    progress callback). A grid file's problems are raised together as one GridError.
    """
    from .demo import PRESETS, ensure_demo_data, preset_grid
    from .grid import load_grid

    if (grid is None) == (preset is None):
        raise MmlmError(f"give a grid file or --preset {'|'.join(PRESETS)} (exactly one)")
    if Path(out).exists() and not Path(out).is_dir():  # before any work (the demo preset may build its data first)
        raise MmlmError(f"--out {out}: exists and is not a folder")
    if grid is not None:
        return load_grid(grid, data=data), jobs
    if preset not in PRESETS:
        raise MmlmError(f"--preset {preset!r}: unknown preset (known: {', '.join(PRESETS)})")
    data = data or DEMO_DATA
    if jobs is None and launcher == "local":
        from .launch import cpu_count

        jobs = cpu_count()  # tiny models: one process per core beats threads
    if not dry_run:
        ensure_demo_data(data, on_progress=on_data_progress)  # builds only what is missing
    return preset_grid(preset, data), jobs
