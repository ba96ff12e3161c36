"""What every command shares: the consoles, progress bars, JSON output and one-line errors.

The consoles never read markup from the text they print: paths, SMILES, column names and error
messages hold brackets (`C[nH]1cc(`, `w[/x]`, `[mixtures.a]`) that rich would otherwise take for
styles, swallow, or die on. Styling is asked for explicitly (`markup=True`, with the user's text
passed through `escape`) or built as `rich.text.Text`.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

console = Console(markup=False)
err_console = Console(stderr=True, markup=False)

__all__ = ["console", "err_console", "escape", "print_error", "print_json", "progress_bar"]


def print_error(message: str, prefix: str = "error:") -> None:
    """One line on stderr: a red prefix, then the message exactly as given."""
    err_console.print(Text.assemble((prefix, "bold red"), " ", str(message)), highlight=False, soft_wrap=True)


def print_json(obj: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


@contextmanager
def progress_bar(*extra_columns) -> Iterator[Progress]:
    """A rich progress bar on stderr (so stdout stays clean for --json)."""
    columns = [
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console, transient=False) as progress:
        yield progress
