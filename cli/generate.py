"""`mmlm generate` (not built yet)."""
from mmlm.errors import MmlmError


def generate() -> None:
    raise MmlmError("`mmlm generate` is not built yet")
