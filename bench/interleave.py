"""Interleaver throughput (bytes of output rows per second) against a plain NumPy copy of the same number of
bytes, and against the plain-Python reference twin, measured side by side in one run.

Two data sizes: "hot" datasets that fit in cache (the copy baseline copies a cached buffer), and "cold"
datasets four times the size of a typical L3 cache (the copy baseline copies the same number of bytes from a
random place in the same token memory, so both sides read memory that is not in cache).

    python bench/interleave.py [--quick]
"""
from __future__ import annotations

import time

import numpy as np

from mmlm.kernels.interleave import Interleaver
from mmlm.kernels.interleave_ref import InterleaverRef

SEQ_LEN = 2048
N_ROWS = 32  # 32 x 2049 tokens: ~590 KB of rows (int64 tokens + uint8 ids), a CPU training step's batch
WEIGHTS = [0.3, 0.2, 0.2, 0.2, 0.1]


def doc_lengths(rng, n_tokens):
    """Per modality-like dataset, document lengths summing to about n_tokens each:
    text and code (log-normal), images (fixed 1026: 32 x 32 codes + sentinels), speech, molecules."""
    kinds = [lambda n: np.clip(rng.lognormal(5.5, 1.0, n), 8, 8000),
             lambda n: np.clip(rng.lognormal(6.0, 1.0, n), 8, 8000),
             lambda n: np.full(n, 1026),
             lambda n: rng.integers(100, 750, n),
             lambda n: rng.integers(20, 100, n)]
    out = []
    for make in kinds:
        lengths = make(max(1, int(n_tokens // np.mean(make(2000))))).astype(np.int64)
        out.append(lengths)
    return out


def make_datasets(rng, n_tokens):
    """All datasets as views into one pool of random tokens; returns (datasets, pool)."""
    lengths = doc_lengths(rng, n_tokens // len(WEIGHTS))
    pool = rng.integers(0, 60000, int(sum(ln.sum() for ln in lengths)), dtype=np.uint32)
    datasets, at = [], 0
    for ln in lengths:
        starts = at + np.concatenate([[0], np.cumsum(ln)[:-1]])
        datasets.append((pool, starts, ln))
        at += int(ln.sum())
    return datasets, pool


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(name, note, ours, baseline, nbytes, reps, target, unit="GB/s"):
    """Interleaved repetitions of ours and the baseline; medians; bytes per second in GB/s."""
    ours(), baseline()  # warm up
    a, b = [], []
    for _ in range(reps):
        a.append(_time(ours))
        b.append(_time(baseline))
    value, base = float(nbytes / np.median(a) / 1e9), float(nbytes / np.median(b) / 1e9)
    return {"name": name, "value": value, "baseline": base, "ratio": value / base, "target": target,
            "unit": unit, "meets": bool(value / base >= target), "note": note}


def run(quick: bool = False) -> list[dict]:
    rng = np.random.default_rng(0)
    nbytes = N_ROWS * (SEQ_LEN + 1) * 9
    reps = 15 if quick else 41
    results = []

    hot, _ = make_datasets(rng, 100_000)  # ~400 KB of tokens
    il = Interleaver(hot, WEIGHTS, SEQ_LEN, seed=0)
    src = np.ones(nbytes, dtype=np.uint8)
    results.append(measure(
        "interleave_vs_memcpy_hot", "datasets in cache; baseline: NumPy copy of the same number of bytes (cached)",
        lambda: il.next_rows(N_ROWS), src.copy, nbytes, reps, 0.5))

    cold, pool = make_datasets(rng, 16_000_000 if quick else 32_000_000)  # 64 / 128 MB of tokens
    il = Interleaver(cold, WEIGHTS, SEQ_LEN, seed=0)
    raw = pool.view(np.uint8)
    offsets = iter(rng.integers(0, raw.size - nbytes, 10 * reps))

    def cold_copy():
        at = next(offsets)
        raw[at:at + nbytes].copy()

    results.append(measure(
        "interleave_vs_memcpy_cold", f"datasets of {pool.nbytes >> 20} MB (beyond cache); baseline: NumPy copy "
        "of the same number of bytes from a random place in the same token memory",
        lambda: il.next_rows(N_ROWS), cold_copy, nbytes, reps, 0.5))

    rows = 2  # the Python twin does about a million tokens a second: keep it to ~4k tokens a call
    fast, ref = Interleaver(hot, WEIGHTS, SEQ_LEN, seed=0), InterleaverRef(hot, WEIGHTS, SEQ_LEN, seed=0)
    results.append(measure(
        "interleave_vs_python", "same hot datasets, 2 rows a call; baseline: the plain-Python reference twin",
        lambda: fast.next_rows(rows), lambda: ref.next_rows(rows), rows * (SEQ_LEN + 1) * 9,
        5 if quick else 9, 50.0))
    return results


if __name__ == "__main__":
    from run_all import main_for

    main_for(run)
