"""The `mmlm` command line: a thin typer layer over the library in `mmlm`."""
