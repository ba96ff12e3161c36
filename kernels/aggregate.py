"""Per-dataset loss aggregation: per-token losses -> (float64 sums, int64 counts) by dataset id, and by
dataset x position bucket. One Numba pass over the tokens; `aggregate_ref.py` is the NumPy twin (same
numbers bit for bit) and `loss_by_dataset_torch` does the same on any torch device.

    sums, counts = loss_by_dataset(losses, ids, n_datasets)          # mean loss of d = sums[d] / counts[d]
    sums, counts = loss_by_dataset_position(losses, ids, n_datasets, n_buckets=8)

Inputs may be NumPy arrays or CPU torch tensors (read in place through `.numpy()`). `mask` (any dtype, same
shape) drops tokens where it is 0, e.g. padding; their ids are not looked at.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from mmlm.errors import MmlmError


@njit(cache=True, nogil=True)
def _aggregate(losses, ids, mask, use_mask, n_buckets, sums, counts):
    """losses float32[B, T], ids uint8[B, T], mask uint8[B, T] (read only if use_mask) -> adds into
    sums float64[n_ds, n_buckets], counts int64[n_ds, n_buckets]. Returns the flat index of the first
    out-of-range id, or -1."""
    B, T = losses.shape
    n_ds = sums.shape[0]
    for b in range(B):
        for k in range(n_buckets):
            # bucket k holds positions t with t * n_buckets // T == k: no division per token
            t0 = (k * T + n_buckets - 1) // n_buckets
            t1 = ((k + 1) * T + n_buckets - 1) // n_buckets
            # ids come in runs (whole documents): the current dataset's sum stays in a register until the
            # id changes (4x faster than `sums[d, k] += loss` through memory). The additions happen in the
            # same order as that plain loop, so the sums are bit for bit those of the NumPy twin.
            cur = -1
            acc = 0.0
            cnt = 0
            for t in range(t0, t1):
                if use_mask and mask[b, t] == 0:
                    continue  # masked tokens are ignored, ids included (padding may carry any id)
                d = ids[b, t]
                if d != cur:
                    if d >= n_ds:
                        return b * T + t
                    if cur >= 0:
                        sums[cur, k] = acc
                        counts[cur, k] = cnt
                    cur = d
                    acc = sums[d, k]
                    cnt = counts[d, k]
                acc += losses[b, t]
                cnt += 1
            if cur >= 0:
                sums[cur, k] = acc
                counts[cur, k] = cnt
    return -1


def _numpy(x):
    """A NumPy view of x; CPU torch tensors are read in place, others are moved to the CPU first."""
    if type(x).__module__.startswith("torch"):
        x = x.detach()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _run(losses, ids, n_datasets, n_buckets, mask, where, flatten):
    n_datasets, n_buckets = int(n_datasets), int(n_buckets)
    if not 1 <= n_datasets <= 256:
        raise MmlmError(f"{where}: n_datasets must lie in 1..256 (uint8 ids), got {n_datasets}")
    if n_buckets < 1:
        raise MmlmError(f"{where}: n_buckets must be at least 1, got {n_buckets}")
    losses, ids = _numpy(losses), _numpy(ids)
    if losses.shape != ids.shape:
        raise MmlmError(f"{where}: losses {losses.shape} and ids {ids.shape} differ in shape")
    if flatten:
        losses, ids = losses.reshape(1, -1), ids.reshape(1, -1)
    elif losses.ndim != 2:
        raise MmlmError(f"{where}: losses and ids must be [batch, positions], got shape {losses.shape}")
    if losses.dtype != np.float32:
        if losses.dtype.kind != "f":
            raise MmlmError(f"{where}: losses must be floating point, got {losses.dtype}")
        losses = losses.astype(np.float32)
    if ids.dtype != np.uint8:
        if ids.dtype.kind not in "iu":
            raise MmlmError(f"{where}: ids must be integers, got {ids.dtype}")
        if ids.size and ids.min() < 0:
            raise MmlmError(f"{where}: ids must not be negative")
        ids = np.minimum(ids, 255).astype(np.uint8)  # ids >= n_datasets are reported by the kernel
    if mask is None:
        m = np.zeros((1, 1), dtype=np.uint8)
    else:
        m = _numpy(mask)
        if m.size != losses.size:
            raise MmlmError(f"{where}: mask has {m.size} elements, losses {losses.size}")
        m = m.reshape(losses.shape)
        m = m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8)
    sums = np.zeros((n_datasets, n_buckets), dtype=np.float64)
    counts = np.zeros((n_datasets, n_buckets), dtype=np.int64)
    bad = _aggregate(np.ascontiguousarray(losses), np.ascontiguousarray(ids), np.ascontiguousarray(m),
                     mask is not None, n_buckets, sums, counts)
    if bad >= 0:
        raise MmlmError(f"{where}: dataset id {int(ids.reshape(-1)[bad])} at flat index {bad} "
                        f"is out of range for {n_datasets} datasets")
    return sums, counts


def loss_by_dataset(losses, ids, n_datasets: int, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """losses float32[n], ids uint8[n] (any equal shapes) -> (sums float64[n_datasets], counts int64[n_datasets])."""
    sums, counts = _run(losses, ids, n_datasets, 1, mask, "loss_by_dataset", flatten=True)
    return sums[:, 0], counts[:, 0]


def loss_by_dataset_position(losses, ids, n_datasets: int, n_buckets: int,
                             mask=None) -> tuple[np.ndarray, np.ndarray]:
    """losses float32[B, T], ids uint8[B, T] -> (sums float64[n_datasets, n_buckets], counts int64[...]);
    position t goes to bucket t * n_buckets // T."""
    return _run(losses, ids, n_datasets, n_buckets, mask, "loss_by_dataset_position", flatten=False)


def loss_by_dataset_torch(losses, ids, n_datasets: int, mask=None):
    """The same as `loss_by_dataset` in torch on the tensors' own device (e.g. CUDA, no host copy):
    returns (sums float64[n_datasets], counts int64[n_datasets]) tensors. Ids of unmasked tokens must lie in
    0..n_datasets-1; they are not checked here, since a check would wait for the device."""
    import torch

    ids = ids.reshape(-1).long()
    values = losses.detach().reshape(-1).double()
    if mask is not None:
        keep = mask.reshape(-1) != 0
        values = torch.where(keep, values, torch.zeros_like(values))  # a masked NaN must not leak in
        ids = torch.where(keep, ids, torch.zeros_like(ids))  # masked tokens may carry any id (padding)
        counts = torch.zeros(n_datasets, dtype=torch.int64, device=ids.device).index_add_(0, ids, keep.long())
    else:
        counts = torch.bincount(ids, minlength=n_datasets)
    sums = torch.zeros(n_datasets, dtype=torch.float64, device=ids.device).index_add_(0, ids, values)
    return sums, counts
