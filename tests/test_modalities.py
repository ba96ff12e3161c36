"""The modality registry is the one list of kinds, modalities and token spaces; the tables derived from it agree."""
import numpy as np

from mmlm import demo_data, generate, media, readers
from mmlm.documents import assemble_document, segment_spans, split_document
from mmlm.modalities import KINDS, MODALITIES, SPACES, spaces_of, tokenizer_class
from mmlm.vocab import DATASET_KINDS, SEGMENT_MODALITIES, SPACE_OF, Vocab


def test_every_record_points_at_records_that_exist():
    for kind in KINDS.values():
        assert kind.segments and all(m in MODALITIES for m in kind.segments)
        assert all(s in SPACES for s in spaces_of(kind.name))
    for m in MODALITIES.values():
        assert m.space in SPACES and m.extension.startswith(".")
    for space in SPACES:
        assert hasattr(tokenizer_class(space), "load")
    assert tokenizer_class("image", {"tokenizer": "vqvae"}).__name__ == "VQVAETokenizer"
    assert tokenizer_class("image", {"mode": "external"}).__name__ == "ImageTokenizer"


def test_derived_tables_follow_the_registry():
    assert DATASET_KINDS == {k: r.segments for k, r in KINDS.items()}
    assert SEGMENT_MODALITIES == tuple(MODALITIES) and SPACE_OF == {m: r.space for m, r in MODALITIES.items()}
    assert sorted(demo_data.PARTS) == sorted(KINDS)  # the demo builds every kind once
    for k, kind in enumerate(demo_data.PARTS):  # each pair after the kind of its media
        if len(KINDS[kind].segments) > 1:
            assert KINDS[kind].segments[0] in demo_data.PARTS[:k]
    assert generate.EXTENSIONS == media.EXTENSIONS  # one table for decode and generate
    assert MODALITIES["molecule"].extension in readers.SMILES_EXTS  # a sample reads back as input


def test_one_splitter_for_datasets_and_samples():
    v = Vocab()
    v.add_space("text", 10, {})
    v.add_space("image", 4, {})
    doc = assemble_document(v, [("image", np.array([3, 0, 1])), ("text", np.array([5, 9]))])
    assert [(m, a.tolist()) for m, a in split_document(v, doc)] == [("image", [3, 0, 1]), ("text", [5, 9])]
    spans = segment_spans(v, doc.tolist())
    assert spans == [("image", 1, 4), ("text", 6, 8)]
    assert generate.split_segments(v, doc.tolist(), None) == [{"modality": m, "start": a, "end": b} for m, a, b in spans]
    cut = doc.tolist()[1:4]  # a sample that starts inside <image> and is cut short
    assert segment_spans(v, cut, "image") == [("image", 0, 3)]


DNA_TOKENIZER = '''
import json
from pathlib import Path

import numpy as np


class DnaTokenizer:
    def __init__(self, letters):
        self.letters = letters

    @classmethod
    def train(cls, items, seed=0):
        return cls(sorted(set("".join(items))))

    @property
    def n_tokens(self):
        return len(self.letters)

    @property
    def settings(self):
        return {"kind": "dna", "n_tokens": self.n_tokens}

    def encode(self, item):
        return np.array([self.letters.index(c) for c in item], np.int64)

    def decode(self, ids):
        return "".join(self.letters[int(i)] for i in ids)

    def save(self, path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.letters))

    @classmethod
    def load(cls, path):
        return cls(json.loads(Path(path).read_text()))
'''


def test_an_eighth_modality_is_one_record_of_each_and_a_tokenizer_module(tmp_path, monkeypatch):
    """A new kind tokenizes, reads back and decodes with nothing but its records and its tokenizer module
    (the tables derived from the registry at import are patched here as they would be derived)."""
    from mmlm import documents, media, modalities, vocab
    from mmlm.dataset_build import data_info, tokenize_dataset

    (tmp_path / "mmlm_test_dna.py").write_text(DNA_TOKENIZER)
    monkeypatch.syspath_prepend(str(tmp_path))

    def read_fasta(path, ctx, out):
        for line in path.read_text().split():
            out.docs.append([("dna", line)])

    space = modalities.Space("dna", {"acgt": "mmlm_test_dna:DnaTokenizer"},
                             lambda cls, items, opts, user_opts, external, on_progress: cls.train(items))
    monkeypatch.setitem(modalities.SPACES, "dna", space)
    monkeypatch.setitem(modalities.MODALITIES, "dna", modalities.Modality("dna", "dna", ".txt"))
    monkeypatch.setitem(modalities.KINDS, "dna", modalities.Kind("dna", ("dna",), (".fa",), "FASTA", read_fasta))
    for module in (vocab, documents):
        monkeypatch.setattr(module, "SEGMENT_MODALITIES", (*vocab.SEGMENT_MODALITIES, "dna"))
    monkeypatch.setitem(vocab.SPACE_OF, "dna", "dna")
    monkeypatch.setitem(vocab.DATASET_KINDS, "dna", ("dna",))
    monkeypatch.setitem(media.EXTENSIONS, "dna", ".txt")

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.fa").write_text("ACGTTGCA\nGGGA\n")
    summary = tokenize_dataset("dna", [tmp_path / "in"], tmp_path / "data")
    assert summary["documents"] == 2 and summary["tokens"] == (8 + 3) + (4 + 3)  # <dna> ... </dna> <eos>
    assert data_info(tmp_path / "data")["datasets"]["dna"]["documents"] == 2
    media.decode_document(tmp_path / "data", "dna", 1, tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text() == "GGGA"
