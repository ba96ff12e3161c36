"""`mmlm analyze` (not built yet)."""
import typer

from mmlm.errors import MmlmError

app = typer.Typer(help=__doc__, no_args_is_help=True)


@app.command("todo")
def todo() -> None:
    """Not built yet."""
    raise MmlmError("`mmlm analyze` is not built yet")
