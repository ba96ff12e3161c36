"""`mmlm sweep` (not built yet)."""
from mmlm.errors import MmlmError


def sweep() -> None:
    raise MmlmError("`mmlm sweep` is not built yet")
