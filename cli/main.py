"""Entry point of the `mmlm` console script.

Every failure ends as one line on stderr and a non-zero exit: an MmlmError (bad input, named by
the library), a usage error (a bad option value, named by click), or an OS error (the path and the
reason: read-only folder, a file where a folder should be, a full disk).
"""
from __future__ import annotations

import sys

import typer

try:  # typer >= 0.16 vendors click; older ones use the click package
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover
    from click import exceptions as click

from mmlm import __version__
from mmlm.errors import MmlmError, os_error_line

from . import analyze, fit, generate, law, sweep, tokenize, train
from .common import err_console, print_error

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


def _usage_line(e: click.UsageError) -> str:
    """click's message (it names the option) and where help is, on one line."""
    message = " ".join(e.format_message().split())
    command = e.ctx.command_path if e.ctx is not None else "mmlm"
    return f"{message} (see `{command} --help`)"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv[1:]); returns the exit code."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        rc = app(args=argv, prog_name="mmlm", standalone_mode=False)
    except MmlmError as e:
        print_error(str(e))
        return 1
    except click.NoArgsIsHelpError as e:  # `mmlm tokenize` alone: the help, as click would
        typer.echo(e.ctx.get_help() if e.ctx is not None else e.format_message(), err=True)
        return 2
    except click.UsageError as e:
        print_error(_usage_line(e))
        return 2
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted", style="bold red")
        return 130
    except OSError as e:
        print_error(os_error_line(e))
        return 1
    except click.ClickException as e:  # other click errors (a bad file argument, ...)
        print_error(" ".join(e.format_message().split()))
        return e.exit_code or 1
    return rc if isinstance(rc, int) else 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
