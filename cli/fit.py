"""`mmlm fit` (not built yet)."""
from mmlm.errors import MmlmError


def fit() -> None:
    raise MmlmError("`mmlm fit` is not built yet")
