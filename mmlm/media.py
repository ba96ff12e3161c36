"""Writing decoded documents as files: `mmlm tokenize decode` (one file, or a folder for a pair)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import atomic
from .documents import split_document
from .errors import MmlmError
from .modalities import MODALITIES, encode_item
from .shards import Dataset, list_datasets
from .tokenizers.loading import load_tokenizer
from .vocab import SPACE_OF, Vocab

EXTENSIONS = {m.name: m.extension for m in MODALITIES.values()}  # of a decoded segment's file


def _earlier_decode(folder: Path) -> set[str]:
    """Names a decode of a paired document writes (`1-image.png`, `2-text.txt`, ...)."""
    exts = "|".join(sorted({e.lstrip(".") for e in EXTENSIONS.values()}))
    pattern = re.compile(r"\d+-(?:%s)\.(?:%s)" % ("|".join(EXTENSIONS), exts))
    return {p.name for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_file()}


def decode_document(data_root: str | Path, dataset: str, k: int, out: str | Path) -> list[Path]:
    """Write document `k` of `dataset` to `out`: one file for a single segment (UTF-8 text, PNG,
    WAV), or a folder holding `1-<modality>.<ext>`, `2-...` in document order for a pair."""
    root = Path(data_root)
    vocab = Vocab.load(root / "vocab.json")
    if not (root / dataset).is_dir():
        have = ", ".join(list_datasets(root)) or "none"
        raise MmlmError(f"{root / dataset}: no such dataset (datasets here: {have})")
    ds = Dataset(root / dataset)
    segments = split_document(vocab, ds.doc(k))
    if not segments:
        raise MmlmError(f"{ds.path}: document {k} holds no segments")
    toks: dict[str, Any] = {}
    files = []
    for m, local in segments:
        space = SPACE_OF[m]
        if space not in toks:
            toks[space] = load_tokenizer(root, space, vocab)
        files.append((m, encode_item(m, toks[space].decode(local))))
    out = Path(out)
    if len(files) == 1:
        if out.is_dir():
            raise MmlmError(f"{out}: is a folder; --out needs a file name for a {files[0][0]} document")
        atomic.write_bytes(out, files[0][1])
        return [out]
    with atomic.output_dir(out, _earlier_decode) as tmp:
        names = [f"{i}-{m}{EXTENSIONS[m]}" for i, (m, _) in enumerate(files, 1)]
        for fname, (_, data) in zip(names, files):
            (tmp / fname).write_bytes(data)
    return [out / n for n in names]
