"""Writing decoded segments as files: `mmlm tokenize decode` (one file, or a folder for a pair) and
`mmlm generate`'s samples (a folder of sample files and samples.jsonl)."""
from __future__ import annotations

import json
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

EXTENSIONS = {m.name: m.extension for m in MODALITIES.values()}  # of a decoded segment's or sample's file


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


def earlier_output(folder: Path) -> set[str]:
    """The names in `folder` that an earlier write_samples put there: samples.jsonl and the files it lists."""
    from .jsonio import lines, loads

    listing = folder / "samples.jsonl"
    if not listing.is_file():
        return set()
    names = {listing.name}
    try:
        for _, line in lines(listing.read_text(encoding="utf-8")):
            if line.strip():
                names |= {s["file"] for s in loads(line)["segments"] if isinstance(s.get("file"), str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()  # not a listing we wrote: nothing in the folder counts as ours
    return names


def write_samples(samples: list[dict], out: str | Path) -> list[Path]:
    """Write `sample-<k>.<ext>` (k from 1; `sample-<k>-<j>.<ext>` when a sample holds several segments)
    and samples.jsonl into `out`, all at once: the folder appears (or is replaced) only when complete.
    An existing folder is replaced only when empty or a previous generate output: files mmlm did not
    write there are never deleted (the call refuses instead; see `atomic.output_dir`)."""
    out = Path(out)
    files: list[Path] = []
    lines = []
    with atomic.output_dir(out, earlier_output) as tmp:
        for k, sample in enumerate(samples, 1):
            segments = []
            for j, seg in enumerate(sample["segments"], 1):
                suffix = "" if len(sample["segments"]) == 1 else f"-{j}"
                name = f"sample-{k}{suffix}{EXTENSIONS[seg['modality']]}"
                data = encode_item(seg["modality"], seg["item"])
                (tmp / name).write_bytes(data + b"\n" if seg["modality"] == "molecule" else data)
                files.append(out / name)
                segments.append({**{k2: v for k2, v in seg.items() if k2 != "item"}, "file": name})
            lines.append(json.dumps({"tokens": sample["tokens"], "segments": segments, "settings": sample["settings"]}))
        (tmp / "samples.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return files + [out / "samples.jsonl"]
