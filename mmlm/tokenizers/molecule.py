"""SMILES tokenizer: the standard SMILES regex split, vocabulary built from the data.

The regex is the one of Schwaller et al. (Molecular Transformer, 2019): bracket atoms, two-letter
halogens, organic-subset atoms, aromatic atoms, bonds, branches, ring closures (`%nn` and digits).

Local ids: 0 is `<unk>`, then every token seen in training, most frequent first (ties in string
order). A token never seen in training encodes to `<unk>`, and `<unk>` decodes to the literal text
"<unk>" (not valid SMILES on purpose, so an unknown token is never mistaken for an atom).

A line is invalid when the regex does not cover the whole string, or parentheses or ring closures
do not balance; when RDKit is importable (`check_smiles(..., rdkit=None)`), also when RDKit cannot
parse it.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from .. import atomic
from ..errors import MmlmError
from ..jsonio import read_json

KIND = "smiles-regex"
FORMAT = "mmlm-smiles/1"
UNK = "<unk>"
SMILES_REGEX = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|\%[0-9]{2}|[0-9])"
)


def split_smiles(smiles: str) -> list[str]:
    """The regex tokens of a SMILES string (whatever the regex does not match is dropped)."""
    return SMILES_REGEX.findall(smiles)


def _rdkit_parser():
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        return None
    RDLogger.DisableLog("rdApp.*")
    return Chem.MolFromSmiles


def check_smiles(smiles: str, rdkit: bool | None = None) -> str | None:
    """Why `smiles` is invalid, or None when it is valid.

    rdkit: True to require RDKit's parser too, False to skip it, None to use it when importable.
    """
    if not smiles:
        return "empty SMILES"
    tokens = split_smiles(smiles)
    covered = "".join(tokens)
    if covered != smiles:
        pos = next((i for i, (a, b) in enumerate(zip(covered, smiles)) if a != b), len(covered))
        return f"unexpected character {smiles[pos]!r} at position {pos}"
    depth = 0
    open_rings: set[str] = set()
    for t in tokens:
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
            if depth < 0:
                return "unbalanced ')'"
        elif t.isdigit() or t.startswith("%"):
            open_rings ^= {t}  # a ring label opens, then the next use of it closes
    if depth:
        return "unbalanced '('"
    if open_rings:
        return f"unclosed ring {sorted(open_rings)[0]}"
    if rdkit is not False:
        parse = _rdkit_parser()
        if parse is None:
            if rdkit:
                raise MmlmError("RDKit is not installed (pip install rdkit)")
        elif parse(smiles) is None:
            return "RDKit cannot parse it"
    return None


def rdkit_available() -> bool:
    return _rdkit_parser() is not None


class SmilesTokenizer:
    def __init__(self, tokens: list[str]):
        if not tokens or tokens[0] != UNK:
            raise MmlmError("SMILES vocabulary must start with <unk>")
        self.tokens = list(tokens)
        self._index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def train(cls, smiles: Iterable[str], seed: int = 0) -> "SmilesTokenizer":
        """Vocabulary of every regex token in `smiles`. Deterministic; `seed` is unused."""
        counts = Counter()
        for s in smiles:
            counts.update(split_smiles(s))
        counts.pop(UNK, None)
        if not counts:
            raise MmlmError("no SMILES tokens to build a vocabulary from (empty input)")
        ordered = sorted(counts, key=lambda t: (-counts[t], t))
        return cls([UNK] + ordered)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def settings(self) -> dict:
        return {"kind": KIND, "n_tokens": self.n_tokens}

    def encode(self, smiles: str) -> np.ndarray:
        return np.asarray([self._index.get(t, 0) for t in split_smiles(smiles)], dtype=np.int64)

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_tokens):
            raise MmlmError(f"SMILES ids must lie in 0..{self.n_tokens - 1}")
        return "".join(self.tokens[i] for i in ids.tolist())

    def save(self, path: str | Path) -> None:
        atomic.write_json(path, {"format": FORMAT, "kind": KIND, "tokens": self.tokens})

    @classmethod
    def load(cls, path: str | Path) -> "SmilesTokenizer":
        path = Path(path)
        obj = read_json(path, "SMILES tokenizer", FORMAT)
        tokens = obj.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise MmlmError(f"{path}: malformed SMILES tokenizer (no token list)")
        return cls(tokens)
