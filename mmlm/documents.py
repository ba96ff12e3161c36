"""The document format: a document is segments, each `<m> ids </m>`, then `<eos>`.

    assemble_document(vocab, [("image", codes), ("text", ids)])   local ids -> global ids
    split_document(vocab, ids)                                   global ids -> [(modality, local ids)]
    segment_spans(vocab, ids, inside=None)                       [(modality, start, end)] of the contents

`segment_spans` is the one parser of token sequences into segments: `split_document` (datasets,
decode) and `mmlm.generate.split_segments` (samples) both read what it finds.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .vocab import SEGMENT_MODALITIES, Vocab


def assemble_document(vocab: Vocab, segments: Iterable[tuple[str, np.ndarray]], dtype=np.int64) -> np.ndarray:
    """Global ids of a document: each (modality, local ids) segment inside its sentinels, then <eos>.
    The inverse of `split_document`."""
    segments = [(m, np.asarray(local).reshape(-1)) for m, local in segments]
    out = np.empty(sum(local.size + 2 for _, local in segments) + 1, dtype=dtype)  # one allocation: long documents
    at = 0
    for m, local in segments:
        out[at] = vocab.begin(m)
        body = out[at + 1:at + 1 + local.size]
        body[:] = local
        body += vocab.offset(m)
        at += local.size + 1
        out[at] = vocab.end(m)
        at += 1
    out[at] = vocab.eos
    return out


def segment_spans(vocab: Vocab, ids, inside: str | None = None) -> list[tuple[str, int, int]]:
    """The segments of a token sequence as (modality, start, end): contents ids[start:end], sentinels
    excluded. A segment runs from `<m>` to any end sentinel, the next begin sentinel, <eos> or the
    end of the sequence (cut short); nothing after <eos> is read. `inside`: the sequence starts
    inside a segment of that modality (a sample drawn after `<m>`)."""
    begins = {vocab.begin(m): m for m in SEGMENT_MODALITIES}
    ends = {vocab.end(m) for m in SEGMENT_MODALITIES}
    spans, current, start = [], inside, 0
    for i, t in enumerate(ids):
        if t in begins or t in ends or t == vocab.eos:
            if current is not None:
                spans.append((current, start, i))
            current, start = begins.get(t), i + 1
            if t == vocab.eos:
                return spans
    if current is not None:
        spans.append((current, start, len(ids)))
    return spans


def split_document(vocab: Vocab, ids) -> list[tuple[str, np.ndarray]]:
    """The segments of a token sequence: [(modality, local ids)], in order (see `assemble_document`).

    Segments as `segment_spans` finds them. Ids inside a segment that are not in its modality's
    range are dropped, as is anything outside segments, so that a sampled sequence decodes as far
    as it makes sense.
    """
    ids = np.asarray(ids, dtype=np.int64).tolist()
    segments = []
    for m, start, end in segment_spans(vocab, ids):
        first, last = vocab.range_of(m) if end > start else (0, -1)  # an empty segment needs no range
        segments.append((m, np.asarray([t - first for t in ids[start:end] if first <= t <= last], dtype=np.int64)))
    return segments
