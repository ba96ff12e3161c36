"""`mmlm train` (not built yet)."""
from mmlm.errors import MmlmError


def train() -> None:
    raise MmlmError("`mmlm train` is not built yet")
