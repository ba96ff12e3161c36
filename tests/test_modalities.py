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
