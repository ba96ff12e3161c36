"""NumPy reference twin of `aggregate.py`: the same sums and counts, computed with np.bincount.

np.bincount adds the weights in index order in float64, exactly as the Numba loop does, so the twins agree
bit for bit, not just within a tolerance.
"""
from __future__ import annotations

import numpy as np

from mmlm.errors import MmlmError


def _prepare(losses, ids, n_datasets, mask, where):
    losses = np.asarray(losses, dtype=np.float32)
    ids = np.asarray(ids).astype(np.int64)
    if ids.shape != losses.shape:
        raise MmlmError(f"{where}: losses {losses.shape} and ids {ids.shape} differ in shape")
    keep = np.ones(ids.shape, dtype=bool) if mask is None else np.asarray(mask).reshape(ids.shape) != 0
    if keep.any() and (ids[keep].min() < 0 or ids[keep].max() >= n_datasets):  # masked tokens' ids are ignored
        raise MmlmError(f"{where}: dataset ids must lie in 0..{n_datasets - 1}")
    return losses.astype(np.float64), ids, keep


def loss_by_dataset(losses, ids, n_datasets: int, mask=None):
    losses, ids, keep = _prepare(losses, ids, n_datasets, mask, "loss_by_dataset")
    ids, losses = ids.ravel()[keep.ravel()], losses.ravel()[keep.ravel()]
    sums = np.bincount(ids, weights=losses, minlength=n_datasets)
    counts = np.bincount(ids, minlength=n_datasets).astype(np.int64)
    return sums, counts


def loss_by_dataset_position(losses, ids, n_datasets: int, n_buckets: int, mask=None):
    losses, ids, keep = _prepare(losses, ids, n_datasets, mask, "loss_by_dataset_position")
    T = ids.shape[1]
    bucket = np.arange(T) * n_buckets // T  # position t goes to bucket t * n_buckets // T
    flat = (ids * n_buckets + bucket[None, :])[keep]
    size = n_datasets * n_buckets
    sums = np.bincount(flat, weights=losses[keep], minlength=size).reshape(n_datasets, n_buckets)
    counts = np.bincount(flat, minlength=size).astype(np.int64).reshape(n_datasets, n_buckets)
    return sums, counts
