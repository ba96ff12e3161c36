"""What the image and speech tokenizers share: seeded k-means, nearest-centroid search, and
their files on disk (one JSON of settings plus one .safetensors of arrays next to it).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from .. import atomic
from ..errors import MmlmError
from ..jsonio import loads

_CHUNK = 16384  # rows per distance block: bounds memory at _CHUNK x k floats
_PP_PER_CLUSTER = 20  # k-means++ seeds from at most this many candidate rows per cluster


def nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centroid for each row of `x`, and the squared distance to it."""
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    c_sq = np.einsum("kd,kd->k", c, c)
    labels = np.empty(len(x), dtype=np.int64)
    dist = np.empty(len(x), dtype=np.float32)
    for lo in range(0, len(x), _CHUNK):
        xb = x[lo:lo + _CHUNK]
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin
        d = c_sq[None, :] - 2.0 * (xb @ c.T)
        j = np.argmin(d, axis=1)
        labels[lo:lo + _CHUNK] = j
        dist[lo:lo + _CHUNK] = np.maximum(d[np.arange(len(xb)), j] + np.einsum("nd,nd->n", xb, xb), 0.0)
    return labels, dist


def cluster_sums(labels: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Sum of the rows of `x` given each label: [k, d] (a sparse one-hot product, fast)."""
    onehot = sparse.csr_matrix((np.ones(len(x), np.float32), (labels, np.arange(len(x)))), shape=(k, len(x)))
    return np.asarray(onehot @ x)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each new centre drawn with probability proportional to squared distance."""
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = x[rng.integers(len(x))]
    d2 = np.einsum("nd,nd->n", x - centres[0], x - centres[0])
    for i in range(1, k):
        total = d2.sum()
        j = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
        centres[i] = x[j]
        diff = x - centres[i]
        d2 = np.minimum(d2, np.einsum("nd,nd->n", diff, diff))
    return centres


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, iters: int = 20, sample: int = 20_000) -> np.ndarray:
    """Seeded k-means: k-means++ init and Lloyd iterations on at most `sample` rows of `x`.

    Returns float32 centroids [k, d]. A cluster that empties is re-seeded at the row farthest
    from its centroid, so every centroid stays in use.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise MmlmError(f"k-means needs a non-empty 2-D array of vectors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise MmlmError("k-means input holds NaN or infinite values")
    if k < 1:
        raise MmlmError(f"k-means needs at least one cluster, got {k}")
    rng = np.random.default_rng(seed)
    if len(x) > sample:
        x = x[rng.choice(len(x), size=sample, replace=False)]
    if len(x) < k:  # fewer vectors than clusters: repeat them (extra centroids are duplicates)
        x = x[np.arange(k) % len(x)]
    # seeding from a subset is much cheaper and the Lloyd steps on all rows make up the difference
    c = _kmeans_pp(x[rng.permutation(len(x))[:_PP_PER_CLUSTER * k]], k, rng)
    for _ in range(iters):
        labels, dist = nearest(x, c)
        counts = np.bincount(labels, minlength=k)
        sums = cluster_sums(labels, x, k)
        new = c.copy()
        used = counts > 0
        new[used] = (sums[used] / counts[used, None]).astype(np.float32)
        empty = np.flatnonzero(~used)
        if len(empty):
            far = np.argsort(-dist, kind="stable")[:len(empty)]
            new[empty] = x[far]
        if np.array_equal(new, c):
            break
        c = new
    return c


# --- files -----------------------------------------------------------------------------------

def arrays_path(path: Path) -> Path:
    return Path(path).with_suffix(".safetensors")


def save_files(path: str | Path, kind: str, settings: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write `path` (JSON: kind, settings, arrays file and its sha256) and the .safetensors next to it."""
    from safetensors.numpy import save

    path = Path(path)
    blob = save({name: np.ascontiguousarray(a) for name, a in arrays.items()})
    atomic.write_bytes(arrays_path(path), blob)
    atomic.write_json(path, {
        "kind": kind,
        "format": 1,
        "settings": settings,
        "arrays": arrays_path(path).name,
        "sha256": hashlib.sha256(blob).hexdigest(),
    })


def load_files(path: str | Path, kind: str, names: tuple[str, ...]) -> tuple[dict, dict[str, np.ndarray]]:
    """Read what `save_files` wrote; any missing, foreign or corrupt part raises MmlmError."""
    from safetensors.numpy import load

    path = Path(path)
    try:
        meta = loads(path.read_bytes())
    except FileNotFoundError:
        raise MmlmError(f"{path}: tokenizer file not found") from None
    except (OSError, ValueError) as e:
        raise MmlmError(f"{path}: not a readable tokenizer JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind or meta.get("format") != 1:
        found = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
        raise MmlmError(f"{path}: expected a {kind} tokenizer (format 1), found {found!r}")
    apath, blob = read_arrays(path, meta, "arrays")
    arrays = load(blob)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise MmlmError(f"{apath}: missing arrays {', '.join(missing)}")
    return meta["settings"], arrays


def read_arrays(path: Path, meta: dict, what: str) -> tuple[Path, bytes]:
    """(path, bytes) of the .safetensors file that the tokenizer JSON `path` (read into `meta`) names,
    checked against the sha256 it records; `what` names the file in the error ("arrays", "weights")."""
    apath = path.with_name(str(meta.get("arrays", "")))
    try:
        blob = apath.read_bytes()
    except OSError:
        raise MmlmError(f"{path}: its {what} file {apath.name} is missing") from None
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise MmlmError(f"{apath}: checksum does not match {path.name} (file changed or corrupt)")
    return apath, blob


def load_array(path: Path, what: str):
    """np.load without pickles (an array, or an .npz archive); one-line errors for a missing or
    unreadable file (`what`: the formats expected, for the message)."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MmlmError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise MmlmError(f"{path}: not a readable {what} array ({e})") from None


def check_ids(ids: Any, n_tokens: int, what: str) -> np.ndarray:
    """Validate local ids (integers in 0..n_tokens-1); returns them as int64, shape kept."""
    a = np.asarray(ids)
    if a.size == 0:
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise MmlmError(f"{what}: ids must be integers, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.min() < 0 or a.max() >= n_tokens:
        raise MmlmError(f"{what}: ids must lie in 0..{n_tokens - 1}, found {int(a.min())}..{int(a.max())}")
    return a
