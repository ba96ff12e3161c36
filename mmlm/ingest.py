"""Reading raw inputs into documents: the files of one dataset kind, each read by its registry reader.

    docs = read_inputs("image-text", [Path("pairs.jsonl")], strict=False, external=False, opts={}, vocab=v)
    docs.docs      [[("image", array), ("text", "a caption")], ...]
    docs.skipped   examples of inputs left out (empty documents, invalid SMILES), docs.n_skipped in all
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import readers
from .errors import MmlmError
from .modalities import KINDS, SPACES, spaces_of
from .progress import Progress
from .vocab import Vocab

_MAX_SKIP_EXAMPLES = 20


class Docs:
    """Documents read from the inputs: each a list of (modality, item) segments."""

    def __init__(self) -> None:
        self.docs: list[list[tuple[str, Any]]] = []
        self.files: list[Path] = []
        self.skipped: list[str] = []
        self.n_skipped = 0
        self.hash = hashlib.sha256()

    def skip(self, why: str) -> None:
        self.n_skipped += 1
        if len(self.skipped) < _MAX_SKIP_EXAMPLES:
            self.skipped.append(why)

    def add_file(self, path: Path) -> None:
        self.files.append(path)
        self.hash.update(str(path.name).encode() + b"\0")
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    self.hash.update(block)
        except OSError as e:
            raise MmlmError(f"{path}: cannot read ({e.strerror or e})") from None


def read_inputs(kind: str, inputs: list[Path], strict: bool, external: bool, opts: dict, vocab: Vocab,
                on_progress: Progress, allow_outside: bool = False) -> Docs:
    """Every document of `inputs` (files or folders of `kind`'s raw files, or of external codes)."""
    record = KINDS[kind]
    out = Docs()
    ids = {}
    if external:  # ids must fit the range asked for, or the one this data root already has
        space_size = {s: last - first + 1 for s, (first, last) in vocab.ranges.items()}
        ids = {s: opts.get(SPACES[s].size_setting) or space_size.get(s)
               for s in spaces_of(kind) if SPACES[s].size_setting}
    extensions, read = record.external if external else (record.extensions, record.read)
    ctx = SimpleNamespace(strict=strict, ids=ids, allow_outside=allow_outside)
    files = readers.find_files(inputs, extensions, record.what)
    total = len(files)
    on_progress("read", 0, total, 0)
    for i, path in enumerate(files):
        out.add_file(path)
        read(path, ctx, out)
        on_progress("read", i + 1, total, 0)
    if not out.docs:
        extra = f" ({out.n_skipped} skipped: {out.skipped[0]})" if out.n_skipped else ""
        raise MmlmError(f"{', '.join(map(str, inputs))}: no {kind} documents found (empty input){extra}")
    return out


def read_training_texts(paths: list[Path]) -> list[str]:
    """Extra text for BPE training (`train_on`): text files as documents, anything else as code."""
    texts = []
    for path in readers.find_files(paths, readers.TEXT_EXTS + readers.CODE_EXTS, "text or code"):
        texts.extend(readers.read_text_documents(path) if path.suffix.lower() in readers.TEXT_EXTS
                     else [readers.read_utf8(path)])
    return texts
