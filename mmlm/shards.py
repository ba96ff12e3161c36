"""Token datasets on disk: a flat memory-mapped token array plus a document index.

DATA/<name>/
    tokens.bin    all documents' tokens back to back, little-endian uint32 (np.memmap)
    offsets.npy   int64 [n_docs + 1]; document k is tokens[offsets[k]:offsets[k+1]]
    meta.json     {"format", "name", "kind", "documents", "tokens", "sources", "skipped",
                   "checksums": {"tokens.bin": sha256, "offsets.npy": sha256}, "tokenizer": {...}}

A document is the token sequence of one item, each segment inside its sentinels and the whole
closed by <eos>, e.g. `<image> c c c ... </image> <text> t t t </text> <eos>`.
Datasets are written into a temporary folder and renamed into place when complete, so a dataset
folder with a meta.json is always whole.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import atomic, jsonio
from .errors import MmlmError

FORMAT = "mmlm-dataset/1"
TOKEN_DTYPE = np.dtype("<u4")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class DatasetWriter:
    """Stream documents into a dataset folder that appears only when `close()` succeeds.

        with DatasetWriter(data_root / name) as w:
            w.add(doc_tokens)
            w.meta.update(kind="text", sources=[...])
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta: dict = {}
        self._ctx = atomic.atomic_dir(self.path)
        self._tmp = self._ctx.__enter__()
        self._tokens = open(self._tmp / "tokens.bin", "wb")
        self._offsets = [0]

    def add(self, tokens) -> None:
        arr = np.asarray(tokens, dtype=TOKEN_DTYPE)
        self._tokens.write(arr.tobytes())
        self._offsets.append(self._offsets[-1] + int(arr.size))

    @property
    def documents(self) -> int:
        return len(self._offsets) - 1

    def close(self) -> None:
        self._tokens.close()
        if self.documents == 0:
            raise MmlmError(f"{self.path}: no documents to write (empty input)")
        np.save(self._tmp / "offsets.npy", np.asarray(self._offsets, dtype=np.int64))
        meta = {"format": FORMAT, "name": self.path.name, **self.meta}
        meta["documents"] = self.documents
        meta["tokens"] = self._offsets[-1]
        meta["checksums"] = {f: file_sha256(self._tmp / f) for f in ("tokens.bin", "offsets.npy")}
        atomic.write_json(self._tmp / "meta.json", meta)
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._tokens.close()
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Dataset:
    """A read-only view of one tokenized dataset."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise MmlmError(f"{self.path}: not a dataset (no meta.json; was its tokenize interrupted?)")
        try:
            self.meta = jsonio.loads(meta_path.read_bytes())
        except (OSError, ValueError) as e:
            raise MmlmError(f"{meta_path}: unreadable ({e})") from None
        found = self.meta.get("format") if isinstance(self.meta, dict) else None
        if found != FORMAT:
            raise MmlmError(f"{meta_path}: written by an incompatible version (format {found!r}, expected {FORMAT!r})")
        try:
            self.offsets = np.load(self.path / "offsets.npy", allow_pickle=False)
            size = (self.path / "tokens.bin").stat().st_size
        except (OSError, ValueError) as e:
            raise MmlmError(f"{self.path}: unreadable dataset ({e})") from None
        o = self.offsets
        if o.ndim != 1 or o.dtype.kind not in "iu" or len(o) == 0 or o[0] != 0 or (np.diff(o) < 0).any():
            raise MmlmError(f"{self.path / 'offsets.npy'}: not a document index (corrupt dataset)")
        n = int(self.offsets[-1])
        if size != n * TOKEN_DTYPE.itemsize:
            raise MmlmError(f"{self.path / 'tokens.bin'}: size does not match offsets.npy (corrupt dataset)")
        self.tokens = np.memmap(self.path / "tokens.bin", dtype=TOKEN_DTYPE, mode="r", shape=(n,)) if n else np.zeros(0, TOKEN_DTYPE)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def doc(self, k: int) -> np.ndarray:
        if not 0 <= k < len(self):
            raise MmlmError(f"{self.path}: no document {k} (it has {len(self)})")
        return np.asarray(self.tokens[self.offsets[k] : self.offsets[k + 1]])

    def verify(self) -> None:
        """Check the checksums recorded in meta.json."""
        for f, digest in self.meta.get("checksums", {}).items():
            if file_sha256(self.path / f) != digest:
                raise MmlmError(f"{self.path / f}: checksum mismatch (corrupt dataset)")


def list_datasets(data_root: str | Path) -> list[str]:
    """Names of the complete datasets under a data root."""
    root = Path(data_root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / "meta.json").is_file())
