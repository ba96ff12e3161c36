"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class MmlmError(Exception):
    """A user-facing error: the message names what is wrong and where (file, line, option)."""
