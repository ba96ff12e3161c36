"""The one shared vocabulary: special tokens, then one id range per token space.

Token spaces are what a tokenizer produces: `text` (one byte-level BPE, shared by text and code,
as in the paper), `image`, `speech`, `molecule`. Ranges never overlap, so any id can be decoded
by range alone. Each segment modality (text, code, image, speech, molecule) has its own
begin/end sentinels. Adding a token space appends a range; existing ids never change.

vocab.json:
    {"format": "mmlm-vocab/1", "size": int,
     "special": {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<mask:0>": 3, ..., "<text>": .., "</text>": .., ...},
     "ranges": {space: [first_id, last_id]},          # inclusive
     "tokenizers": {space: {"kind": str, "file": "tokenizers/<space>.json", ...}}}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import atomic
from .errors import MmlmError
from .jsonio import read_json
from .modalities import KINDS, MODALITIES

FORMAT = "mmlm-vocab/1"
# segment modalities, which token space each draws its ids from, and the dataset kinds `mmlm tokenize`
# knows with the segment modalities their documents hold: all from the registry (mmlm.modalities)
SEGMENT_MODALITIES = tuple(MODALITIES)
SPACE_OF = {m.name: m.space for m in MODALITIES.values()}
DATASET_KINDS = {k.name: k.segments for k in KINDS.values()}
N_MASKS = 16  # CM3 mask sentinels <mask:0> .. <mask:15>


def _initial_special() -> dict[str, int]:
    names = ["<pad>", "<bos>", "<eos>"] + [f"<mask:{i}>" for i in range(N_MASKS)]
    for m in SEGMENT_MODALITIES:
        names += [f"<{m}>", f"</{m}>"]
    return {name: i for i, name in enumerate(names)}


@dataclass
class Vocab:
    special: dict[str, int] = field(default_factory=_initial_special)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    tokenizers: dict[str, dict] = field(default_factory=dict)

    @property
    def size(self) -> int:
        ends = [last + 1 for _, last in self.ranges.values()] + [max(self.special.values()) + 1]
        return max(ends)

    @property
    def pad(self) -> int:
        return self.special["<pad>"]

    @property
    def bos(self) -> int:
        return self.special["<bos>"]

    @property
    def eos(self) -> int:
        return self.special["<eos>"]

    def mask(self, i: int) -> int:
        return self.special[f"<mask:{i}>"]

    def begin(self, modality: str) -> int:
        return self.special[f"<{modality}>"]

    def end(self, modality: str) -> int:
        return self.special[f"</{modality}>"]

    def range_of(self, modality: str) -> tuple[int, int]:
        """Inclusive id range of a segment modality (code shares text's range)."""
        space = SPACE_OF.get(modality, modality)
        if space not in self.ranges:
            raise MmlmError(f"vocabulary has no '{space}' tokens yet (tokenize a {space} dataset first)")
        return self.ranges[space]

    def offset(self, modality: str) -> int:
        return self.range_of(modality)[0]

    def add_space(self, space: str, n_tokens: int, tokenizer: dict) -> int:
        """Append a range of `n_tokens` ids for `space`; returns its first id."""
        if space in self.ranges:
            raise MmlmError(f"vocabulary already has a '{space}' range")
        first = self.size
        self.ranges[space] = (first, first + n_tokens - 1)
        self.tokenizers[space] = dict(tokenizer)
        return first

    def space_of_id(self, token_id: int) -> str | None:
        """The token space an id belongs to, or None for special tokens."""
        for space, (first, last) in self.ranges.items():
            if first <= token_id <= last:
                return space
        return None

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "size": self.size,
            "special": self.special,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "tokenizers": self.tokenizers,
        }

    @classmethod
    def from_json(cls, obj: dict, where: str = "vocab.json") -> "Vocab":
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            found = obj.get("format") if isinstance(obj, dict) else None
            raise MmlmError(f"{where}: written by an incompatible version (format {found!r}, expected {FORMAT!r})")
        try:
            return cls(
                special={str(k): int(v) for k, v in obj["special"].items()},
                ranges={str(k): (int(v[0]), int(v[1])) for k, v in obj["ranges"].items()},
                tokenizers={str(k): dict(v) for k, v in obj["tokenizers"].items()},
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise MmlmError(f"{where}: malformed vocabulary ({e})") from None

    def save(self, path: str | Path) -> None:
        atomic.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        path = Path(path)
        if not path.is_file():
            raise MmlmError(f"{path}: no vocabulary here (run `mmlm tokenize` first)")
        return cls.from_json(read_json(path, "vocabulary"), str(path))
