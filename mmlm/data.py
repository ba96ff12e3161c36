"""Training data: a data root, the datasets of a mixture, their held-out split, and batches.

    mix = parse_mix("text=0.5,code=0.5")
    data = Mixture.open("data/demo", mix, eval_tokens=16384, split_seed=0)
    il = data.interleaver(seq_len=256, seed=0)      # training rows in mixture proportion
    rows, ids = data.eval_rows("text", seq_len=256)  # the held-out rows of one dataset

Held-out split: per dataset, documents are taken in a random order fixed by (split_seed, dataset
name) until they hold `eval_tokens` tokens, at most a tenth of the documents and at least one.
It does not depend on the training seed, so every run of a sweep is evaluated on the same text.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MmlmError
from .shards import Dataset, file_sha256, list_datasets
from .vocab import Vocab

PAD_ID = 255  # dataset id of padding in eval rows (never a real dataset: the mixture has at most 255)
MAX_EVAL_SHARE = 0.1


def parse_mix(spec: str) -> dict[str, float]:
    """"text=0.5,code=0.5" -> {"text": 0.5, "code": 0.5} (shares are normalised later)."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            value = "1"  # a bare name: equal share
        try:
            w = float(value)
        except ValueError:
            raise MmlmError(f"--mix {spec!r}: weight of {name!r} is not a number ({value!r})") from None
        if not name:
            raise MmlmError(f"--mix {spec!r}: a weight without a dataset name")
        if not (math.isfinite(w) and w > 0):
            raise MmlmError(f"--mix {spec!r}: weight of {name!r} must be positive, got {value.strip()}")
        if name in mix:
            raise MmlmError(f"--mix {spec!r}: dataset {name!r} named twice")
        mix[name] = w
    if not mix:
        raise MmlmError("--mix: no datasets given (e.g. --mix text=0.5,code=0.5)")
    if len(mix) >= PAD_ID:
        raise MmlmError(f"--mix: {len(mix)} datasets, at most {PAD_ID - 1}")
    total = sum(mix.values())
    for name, w in mix.items():
        if not w / total > 1e-12:  # a share that rounds to nothing (1e-320 next to 1)
            raise MmlmError(f"--mix {spec!r}: weight of {name!r} is a negligible share of the total ({w:g} of {total:g})")
    return mix


def open_root(data_root: str | Path) -> tuple[Path, Vocab, str]:
    """(root, vocab, sha256 of vocab.json) of a data root made by `mmlm tokenize`."""
    root = Path(data_root)
    if not root.is_dir():
        raise MmlmError(f"--data {root}: no such folder (make one with `mmlm tokenize`)")
    vocab = Vocab.load(root / "vocab.json")
    return root, vocab, file_sha256(root / "vocab.json")


@dataclass
class Split:
    train: np.ndarray  # document indices used for training
    eval: np.ndarray  # held-out document indices (sorted)


def heldout_split(ds: Dataset, eval_tokens: int, split_seed: int) -> Split:
    n = len(ds)
    lengths = np.diff(ds.offsets)
    if n < 2:
        raise MmlmError(f"{ds.path}: {n} document(s); a held-out split needs at least 2")
    rng = np.random.Generator(np.random.PCG64([split_seed, zlib.crc32(ds.name.encode())]))
    order = rng.permutation(n)
    cap = max(1, int(n * MAX_EVAL_SHARE))
    k = int(np.searchsorted(np.cumsum(lengths[order]), eval_tokens) + 1)
    k = min(max(k, 1), cap)
    return Split(train=np.sort(order[k:]), eval=np.sort(order[:k]))


class Mixture:
    """The datasets of one training mixture, opened read-only, with their splits."""

    def __init__(self, root: Path, vocab: Vocab, vocab_sha256: str, datasets: list[Dataset],
                 weights: list[float], splits: list[Split], eval_tokens: int):
        self.root, self.vocab, self.vocab_sha256 = root, vocab, vocab_sha256
        self.datasets, self.weights, self.splits = datasets, weights, splits
        self.eval_tokens = eval_tokens

    @classmethod
    def open(cls, data_root: str | Path, mix: dict[str, float], eval_tokens: int = 16384, split_seed: int = 0) -> "Mixture":
        root, vocab, sha = open_root(data_root)
        known = list_datasets(root)
        missing = [name for name in mix if name not in known]
        if missing:
            raise MmlmError(f"--mix: no dataset {missing[0]!r} in {root} (it has: {', '.join(known) or 'none'})")
        if eval_tokens < 1:
            raise MmlmError(f"--eval-tokens {eval_tokens}: must be at least 1")
        datasets = [Dataset(root / name) for name in mix]
        splits = [heldout_split(ds, eval_tokens, split_seed) for ds in datasets]
        return cls(root, vocab, sha, datasets, list(mix.values()), splits, eval_tokens)

    @property
    def names(self) -> list[str]:
        return [ds.name for ds in self.datasets]

    def fingerprint(self) -> dict:
        """What must not change under a resumed run: each dataset's recorded checksums."""
        return {ds.name: {"documents": len(ds), "tokens": int(ds.offsets[-1]), "checksums": ds.meta.get("checksums", {})}
                for ds in self.datasets}

    def interleaver(self, seq_len: int, seed: int):
        from mmlm.kernels.interleave import Interleaver

        sources = []
        for ds, split in zip(self.datasets, self.splits):
            starts = ds.offsets[split.train].astype(np.int64)
            lengths = (ds.offsets[split.train + 1] - ds.offsets[split.train]).astype(np.int64)
            keep = lengths > 0
            if not keep.any():
                raise MmlmError(f"{ds.path}: no training tokens left after the held-out split")
            sources.append((ds.tokens, starts[keep], lengths[keep]))
        return Interleaver(sources, self.weights, seq_len, seed)

    def eval_rows(self, index: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Held-out documents of dataset `index`, back to back in rows of seq_len + 1 overlapping by one
        token (as training rows), at most `eval_tokens` targets. Padding carries dataset id PAD_ID."""
        ds, split = self.datasets[index], self.splits[index]
        stream = np.concatenate([ds.doc(int(k)) for k in split.eval]).astype(np.int64)
        n_targets = min(len(stream) - 1, self.eval_tokens)
        if n_targets < 1:
            raise MmlmError(f"{ds.path}: held-out split holds fewer than 2 tokens")
        n_rows = -(-n_targets // seq_len)
        tokens = np.full(n_rows * seq_len + 1, self.vocab.pad, dtype=np.int64)
        ids = np.full(n_rows * seq_len + 1, PAD_ID, dtype=np.uint8)
        tokens[: n_targets + 1] = stream[: n_targets + 1]
        ids[: n_targets + 1] = index
        idx = np.arange(n_rows)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
        return tokens[idx], ids[idx]
