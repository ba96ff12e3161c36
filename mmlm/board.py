"""Optional TensorBoard logging: the scalars of each metrics.jsonl line (which stays the source of truth).

Tags keep metrics.jsonl's names, so TensorBoard groups them by prefix: loss, lr, grad_norm at the
top, loss/<dataset>, eval/<dataset> and speed/* as their own sections. Needs the `tensorboard`
extra (`pip install "mmlm[tensorboard]"`); a sweep points every run at DIR/tensorboard/<run id>,
so all its runs overlay in one TensorBoard.
"""
from __future__ import annotations

from .errors import MmlmError


def check_available():
    """torch's SummaryWriter, or a one-line MmlmError (checked before a run folder is written)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as e:  # ImportError (no tensorboard package), or a version torch cannot use
        raise MmlmError(f"--tensorboard: TensorBoard does not import here ({type(e).__name__}: {e}); "
                        "install the extra: pip install 'mmlm[tensorboard]'") from None
    return SummaryWriter


class Board:
    def __init__(self, logdir: str):
        SummaryWriter = check_available()
        self.logdir = logdir
        self.writer = SummaryWriter(log_dir=logdir, flush_secs=10)

    def write(self, line: dict) -> None:
        step = int(line["step"])
        for key, value in line.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=step)

    def close(self) -> None:
        self.writer.close()
