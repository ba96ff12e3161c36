"""Turn raw files of seven modalities into token datasets sharing one vocabulary."""
import typer

from mmlm.errors import MmlmError

app = typer.Typer(help=__doc__, no_args_is_help=True)


@app.command("demo")
def demo(data: str = typer.Option(..., "--data", help="data root")) -> None:
    """Build the built-in demo corpus (not built yet)."""
    raise MmlmError("`mmlm tokenize` is not built yet")
