"""Per-dataset loss aggregation (Numba) against torch CPU (bincount / index_add_, the fastest of them in this
run) and against the NumPy reference twin, on the same input, measured side by side in one run.

Input: 1M per-token float32 losses with uint8 dataset ids of 7 datasets, in runs as the interleaver makes them
(whole documents). Both sides take the same CPU torch tensors and return float64 sums and int64 counts.

    python bench/aggregate.py [--quick]
"""
from __future__ import annotations

import time

import numpy as np
import torch

from mmlm.kernels import aggregate, aggregate_ref

N_DATASETS = 7
N_BUCKETS = 8


def make_input(rng, n):
    runs = np.clip(rng.lognormal(5.5, 1.0, n // 50), 1, None).astype(np.int64)  # document lengths
    ids = np.repeat(rng.integers(0, N_DATASETS, runs.size), runs)[:n].astype(np.uint8)
    losses = (rng.random(n, dtype=np.float32) * 6).astype(np.float32)
    return torch.from_numpy(losses), torch.from_numpy(ids)


def torch_by_dataset(losses, ids):
    """The torch candidates for loss_by_dataset (sums in float64 like ours; bincount's float32 sums too)."""
    return {
        "bincount": lambda: (torch.bincount(ids, weights=losses.double(), minlength=N_DATASETS),
                             torch.bincount(ids, minlength=N_DATASETS)),
        "bincount (float32 sums)": lambda: (torch.bincount(ids, weights=losses, minlength=N_DATASETS),
                                            torch.bincount(ids, minlength=N_DATASETS)),
        "index_add_": lambda: (torch.zeros(N_DATASETS, dtype=torch.float64).index_add_(0, ids.long(), losses.double()),
                               torch.bincount(ids, minlength=N_DATASETS)),
    }


def torch_by_position(losses, ids):
    T = ids.shape[1]
    bucket = torch.arange(T) * N_BUCKETS // T  # precomputed: a constant for the row length
    size = N_DATASETS * N_BUCKETS

    def flat():
        return (ids.long() * N_BUCKETS + bucket).reshape(-1)

    def with_bincount():
        f = flat()
        return (torch.bincount(f, weights=losses.reshape(-1).double(), minlength=size),
                torch.bincount(f, minlength=size))

    def with_index_add():
        f = flat()
        return (torch.zeros(size, dtype=torch.float64).index_add_(0, f, losses.reshape(-1).double()),
                torch.bincount(f, minlength=size))

    return {"bincount": with_bincount, "index_add_": with_index_add}


def _timed(fn, times):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)


def compare(name, note, ours, baselines: dict, n, reps, target, torch_baseline=True):
    """Interleaved repetitions; value and baseline in million tokens per second. The baseline is the fastest
    candidate, each tried with torch's default thread count and with one thread (on a busy machine torch's
    thread pool can be many times slower than one thread); ours is single-threaded."""
    default_threads = torch.get_num_threads()
    t_ours, t_base = [], {}
    try:
        for threads in sorted({default_threads, 1}) if torch_baseline else [default_threads]:
            torch.set_num_threads(threads)
            ours()
            for f in baselines.values():
                f()  # warm up (Numba's first-call load stays outside the timing)
            for _ in range(reps):
                _timed(ours, t_ours)
                for k, f in baselines.items():
                    label = f"{k}, torch with {threads} thread{'s' if threads > 1 else ''}" if torch_baseline else k
                    _timed(f, t_base.setdefault(label, []))
    finally:
        torch.set_num_threads(default_threads)
    best = min(t_base, key=lambda k: np.median(t_base[k]))
    value, base = float(n / np.median(t_ours) / 1e6), float(n / np.median(t_base[best]) / 1e6)
    return {"name": name, "value": value, "baseline": base, "ratio": value / base, "target": target,
            "unit": "Mtok/s", "meets": bool(value / base >= target), "note": f"{note}; fastest baseline: {best}"}


def run(quick: bool = False) -> list[dict]:
    rng = np.random.default_rng(0)
    n = 1 << 18 if quick else 1 << 20
    reps = 7 if quick else 15
    losses, ids = make_input(rng, n)
    losses2, ids2 = losses.reshape(-1, 4096), ids.reshape(-1, 4096)
    return [
        compare("aggregate_vs_torch", f"loss_by_dataset, {n} tokens, {N_DATASETS} datasets",
                lambda: aggregate.loss_by_dataset(losses, ids, N_DATASETS), torch_by_dataset(losses, ids), n, reps, 1.5),
        compare("aggregate_position_vs_torch", f"loss_by_dataset_position, [{n // 4096}, 4096], {N_BUCKETS} buckets",
                lambda: aggregate.loss_by_dataset_position(losses2, ids2, N_DATASETS, N_BUCKETS),
                torch_by_position(losses2, ids2), n, reps, 1.5),
        compare("aggregate_vs_numpy", "loss_by_dataset against its NumPy twin (np.bincount)",
                lambda: aggregate.loss_by_dataset(losses, ids, N_DATASETS),
                {"numpy twin": lambda: aggregate_ref.loss_by_dataset(losses.numpy(), ids.numpy(), N_DATASETS)},
                n, reps, 1.0, torch_baseline=False),
    ]


if __name__ == "__main__":
    from run_all import main_for

    main_for(run)
