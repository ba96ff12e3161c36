"""Byte-level BPE shared by text and code (HF `tokenizers`), one JSON file on disk.

Every byte sequence is encodable (the 256 byte symbols are always in the vocabulary) and
decode(encode(x)) == x exactly: no normalisation, no added prefix space, no special tokens
(mmlm's special tokens live in the shared vocabulary, outside this tokenizer's local ids).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .. import atomic
from ..errors import MmlmError
from ..jsonio import read_json

KIND = "bpe"
FORMAT = "mmlm-bpe/1"


def _empty_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


class BPETokenizer:
    def __init__(self, tokenizer, vocab_size: int):
        self._tok = tokenizer
        self.vocab_size = int(vocab_size)  # the size asked for at training (n_tokens may be smaller)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096, seed: int = 0) -> "BPETokenizer":
        """Train on an iterable of strings. BPE training is deterministic, so `seed` is unused
        (accepted so that every tokenizer takes the same settings)."""
        from tokenizers import pre_tokenizers, trainers

        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet):
            raise MmlmError(f"--vocab-size must be at least {len(alphabet)} (one id per byte), got {vocab_size}")
        tok = _empty_tokenizer()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=alphabet, special_tokens=[], show_progress=False
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok, vocab_size)

    @property
    def n_tokens(self) -> int:
        return self._tok.get_vocab_size()

    @property
    def settings(self) -> dict:
        return {"kind": KIND, "vocab_size": self.vocab_size, "n_tokens": self.n_tokens}

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tok.encode_batch(texts)]

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_tokens):
            raise MmlmError(f"BPE ids must lie in 0..{self.n_tokens - 1}")
        return self._tok.decode(ids.tolist(), skip_special_tokens=False)

    def save(self, path: str | Path) -> None:
        obj = {"format": FORMAT, "vocab_size": self.vocab_size, "tokenizer": json.loads(self._tok.to_str())}
        atomic.write_json(path, obj)

    @classmethod
    def load(cls, path: str | Path) -> "BPETokenizer":
        from tokenizers import Tokenizer

        path = Path(path)
        obj = read_json(path, "BPE tokenizer", FORMAT)
        try:
            tok = Tokenizer.from_str(json.dumps(obj["tokenizer"]))
        except Exception as e:  # the tokenizers library raises its own Exception types
            raise MmlmError(f"{path}: malformed BPE tokenizer ({e})") from None
        return cls(tok, obj.get("vocab_size", tok.get_vocab_size()))


TEXT_PIECE = 1 << 16  # characters of text the BPE trains on / encodes at once (bounds its memory)


def text_pieces(text: str, limit: int = TEXT_PIECE) -> Iterator[str]:
    """`text` cut into pieces of about `limit` characters at places where a non-space character is
    followed by whitespace. The byte-level BPE's pre-tokenizer (the GPT-2 regex, no look-behind)
    always splits there, so training on or encoding the pieces gives exactly what the whole text
    gives, with memory bounded by the piece. A stretch of `limit` characters without such a place
    (minified code, base64) is cut at `limit`, where ids may differ from the whole text's (decoding
    still gives the text back byte for byte)."""
    n, start = len(text), 0
    while n - start > limit:
        cut = start + limit
        while cut > start + limit // 2 and not (text[cut] in " \n" and not text[cut - 1].isspace()):
            cut -= 1
        if cut == start + limit // 2:
            cut = start + limit
        yield text[start:cut]
        start = cut
    yield text[start:]
