"""Entry point of the `mmlm` console script."""
from __future__ import annotations

import sys

import typer

from mmlm import __version__
from mmlm.errors import MmlmError

from . import analyze, fit, generate, law, sweep, tokenize, train
from .common import err_console

app = typer.Typer(
    name="mmlm",
    help="Scaling laws for generative mixed-modal language models: tokenize, train, sweep, fit, generate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmlm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    pass


app.add_typer(tokenize.app, name="tokenize")
app.command("train", help=train.__doc__)(train.train)
app.command("sweep", help=sweep.__doc__)(sweep.sweep)
app.command("fit", help=fit.__doc__)(fit.fit)
app.add_typer(law.app, name="law")
app.command("generate", help=generate.__doc__)(generate.generate)
app.add_typer(analyze.app, name="analyze")


def main() -> None:
    try:
        app()
    except MmlmError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
