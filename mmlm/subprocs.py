"""How mmlm starts its worker processes (torchrun ranks, submitit jobs).

Workers never import mmlm from the current folder: started from a checkout of the repo, its ./mmlm
(without the compiled kernels) would shadow the installed package. `-P` (Python 3.11) does it for
one interpreter; PYTHONSAFEPATH for torchrun, whose own children inherit the environment, not flags.
"""
from __future__ import annotations

import shlex
import sys

SAFE_PYTHON = f"{shlex.quote(sys.executable)} -P"  # submitit's `python` command
SAFE_ENV = {"PYTHONSAFEPATH": "1"}
