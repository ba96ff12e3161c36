"""Encoding documents: (modality, item) segments -> global ids, a chunk of documents at a time."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .documents import assemble_document
from .shards import TOKEN_DTYPE
from .tokenizers.text import TEXT_PIECE, text_pieces
from .vocab import SPACE_OF, Vocab

ENCODE_CHUNK = 256  # documents encoded (and written) per step
TEXT_BATCH = 4 * TEXT_PIECE  # characters encoded per encode_batch call


def encode_texts(tok, texts: list[str]) -> Iterator[np.ndarray]:
    """The BPE ids of each text, encoded in bounded pieces (see `text_pieces`)."""
    for text in texts:
        parts: list[np.ndarray] = []
        batch: list[str] = []
        size = 0
        for piece in text_pieces(text):
            batch.append(piece)
            size += len(piece)
            if size >= TEXT_BATCH:
                parts += [a.astype(np.int32) for a in tok.encode_batch(batch)]
                batch, size = [], 0
        if batch:
            parts += [a.astype(np.int32) for a in tok.encode_batch(batch)]
        yield parts[0] if len(parts) == 1 else np.concatenate(parts)


def encoded_documents(docs: list, toks: dict, vocab: Vocab, text_first: np.ndarray) -> Iterator[np.ndarray]:
    """Each document's global ids, encoding a chunk of documents at a time (the BPE in one batch)."""
    for lo in range(0, len(docs), ENCODE_CHUNK):
        chunk = docs[lo:lo + ENCODE_CHUNK]
        encoded = {}
        for space, tok in toks.items():
            items = [item for doc in chunk for m, item in doc if SPACE_OF[m] == space]
            encoded[space] = encode_texts(tok, items) if space == "text" else iter([tok.encode(x) for x in items])
        for j, doc in enumerate(chunk):
            segments = [(m, next(encoded[SPACE_OF[m]])) for m, _ in doc]
            yield assemble_document(vocab, segments[::-1] if text_first[lo + j] else segments, TOKEN_DTYPE)
