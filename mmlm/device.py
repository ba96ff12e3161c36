"""The torch device named by a --device option (auto, cpu, cuda, cuda:N)."""
from __future__ import annotations

import torch

from .errors import MmlmError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise MmlmError(f"--device {name!r}: choose auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MmlmError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)
