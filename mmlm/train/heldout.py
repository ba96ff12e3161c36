"""The held-out evaluation's rows (`eval_batch`) and the standard error of its loss (`eval_se`)."""
from __future__ import annotations

import math

import numpy as np

from ..data import PAD_ID
from ..objectives import Batch, CausalMasked, make_objective


def eval_batch(data, d: int, seq_len: int, objective: str, split_seed: int, world: int) -> Batch:
    """Held-out rows of dataset d of the Mixture `data` with the run's objective (cm3 with a fixed seed,
    so every eval sees the same rows), padded to a multiple of the world size with weight-0 rows."""
    vocab = data.vocab
    tokens, ids = data.eval_rows(d, seq_len)
    obj = CausalMasked(vocab, split_seed + d) if objective == "cm3" else make_objective("clm", vocab, 0)
    b = obj(tokens, ids)
    w = (b.weights if b.weights is not None else np.ones(b.targets.shape, np.float32)) * (b.ids != PAD_ID)
    extra = -len(b.inputs) % world

    def pad(a, v):
        return np.concatenate([a, np.full((extra, a.shape[1]), v, a.dtype)]) if extra else a
    return Batch(pad(b.inputs, vocab.pad), pad(b.targets, vocab.pad), pad(b.ids, PAD_ID), pad(w, 0.0))


def eval_se(s: float, w: float, ss: float, sw: float, ww: float, n: float) -> float | None:
    """Standard error of a held-out loss sum(s_i) / sum(w_i) over n chunks (eval rows of seq_len tokens;
    s_i: the summed token losses of chunk i, w_i: its target count), by the ratio estimator:
    SE^2 = n / (n - 1) * sum((s_i - m w_i)^2) / (sum w_i)^2 with m the loss. Chunks next to each other in
    a long document are correlated, so this is a slight underestimate there. None for a single chunk."""
    if n < 2 or w <= 0:
        return None
    m = s / w
    resid = max(0.0, ss - 2 * m * sw + m * m * ww)
    return math.sqrt(n / (n - 1) * resid) / w
