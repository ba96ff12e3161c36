"""Loading a saved tokenizer from a data root or run folder, by the modality registry."""
from __future__ import annotations

from pathlib import Path

from ..errors import MmlmError
from ..modalities import tokenizer_class
from ..vocab import Vocab


def load_tokenizer(root: str | Path, space: str, vocab: Vocab | None = None):
    """Load the saved tokenizer of `space` from a folder holding vocab.json and tokenizers/
    (a data root, or a run folder that copied them)."""
    root = Path(root)
    vocab = vocab or Vocab.load(root / "vocab.json")
    if space not in vocab.tokenizers:
        raise MmlmError(f"{root / 'vocab.json'}: no '{space}' tokenizer (tokenize a {space} dataset first)")
    path = root / vocab.tokenizers[space].get("file", f"tokenizers/{space}.json")
    tok = tokenizer_class(space, vocab.tokenizers[space]).load(path)
    first, last = vocab.ranges[space]
    if tok.n_tokens != last - first + 1:
        raise MmlmError(f"{path}: has {tok.n_tokens} tokens but vocab.json gives '{space}' {last - first + 1} ids")
    return tok
