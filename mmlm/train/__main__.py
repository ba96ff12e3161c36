"""`python -m mmlm.train [flags]`: one training process (of torchrun, or alone). Rank 0 prints one JSON
event per line on stdout, the summary last; `mmlm train --nproc K` reads them."""
from __future__ import annotations

import json
import os
import sys

from ..errors import MmlmError
from . import train
from .config import parser
from .folder import config_from_options


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    rank0 = int(os.environ.get("RANK", "0")) == 0

    def emit(event: dict) -> None:
        if rank0 and event.get("event") in ("start", "step", "restart"):
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    try:
        summary = train(config_from_options(args), on_log=emit)
    except MmlmError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    if rank0:
        sys.stdout.write(json.dumps({"event": "summary", "summary": summary}) + "\n")
    return 0 if summary["status"] == "done" else 3


if __name__ == "__main__":
    sys.exit(main())
