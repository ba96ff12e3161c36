"""The tokenize pipeline (library): seven kinds into one vocabulary, reuse, decode, import."""
import json
from pathlib import Path

import numpy as np
import pytest

from mmlm.errors import MmlmError
from mmlm.shards import Dataset, list_datasets
from mmlm.dataset_build import data_info, tokenize_dataset
from mmlm.documents import assemble_document, split_document
from mmlm.media import decode_document
from mmlm.vocab import DATASET_KINDS, Vocab

SMALL = {"vocab_size": 300, "image_size": 16, "patch": 4, "codebook": 8, "units": 8}
TEXT_DOCS = ["Plain prose, the first document.\n", "Second: ünïcode and 🎉 emoji.", "third\n\n\tindented"]
CODE_DOCS = ["def f(x):\n    return x + 1\n", "int main(void) { return 0; }\n", "for i in range(3):\n\tprint(i)\n"]
SMILES_OK = ["CCO", "c1ccccc1", "CC(=O)O", "C[C@@H](N)C(=O)O", "[Na+].[Cl-]", "BrCCCl", "N#N", "O=C=O"]
CAPTIONS = ["a red square", "a blue stripe", "two dots", "a green field", "noise", "a white corner",
            "a dark patch", "a bright patch", "a cross", "a frame", "a diagonal", "a spot"]
TRANSCRIPTS = ["hello there", "a low hum", "a high whistle", "two tones", "silence then a beep", "a chirp"]


def _image(rng, h, w):
    img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
    img[y:y + h // 2, x:x + w // 2] = rng.integers(0, 256, size=3)
    return img


def _wave(rng, seconds, sr):
    t = np.arange(int(seconds * sr)) / sr
    f = rng.uniform(150, 2000)
    return (0.3 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def make_corpus(root: Path) -> dict:
    """Small raw inputs of all seven kinds under `root`; returns {kind: [input paths]}."""
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "text").mkdir(parents=True)
    for i, t in enumerate(TEXT_DOCS):
        (root / "text" / f"doc{i}.txt").write_text(t, encoding="utf-8")
    (root / "text" / "more.jsonl").write_text(
        "\n".join(json.dumps({"text": f"jsonl row {i}: " + "words " * i}) for i in range(1, 5)) + "\n")
    (root / "code" / "pkg").mkdir(parents=True)
    for i, c in enumerate(CODE_DOCS):
        (root / "code" / "pkg" / f"m{i}.{'c' if 'int main' in c else 'py'}").write_text(c)
    (root / "image").mkdir()
    for i in range(12):
        Image.fromarray(_image(rng, 16 + 4 * (i % 3), 20)).save(root / "image" / f"im{i:02d}.{'png' if i % 2 else 'jpg'}")
    (root / "speech").mkdir()
    for i, sr in enumerate([8000, 16000, 22050, 44100]):
        sf.write(root / "speech" / f"u{i}.wav", _wave(rng, 0.3 + 0.1 * i, sr), sr, subtype="PCM_16")
    sf.write(root / "speech" / "stereo.flac", np.stack([_wave(rng, 0.5, 16000)] * 2, 1), 16000)
    (root / "molecule").mkdir()
    (root / "molecule" / "m.smi").write_text("\n".join(SMILES_OK[:5] + ["CC(C", "C1CC"] + SMILES_OK[5:]) + "\n")
    rows = [{"image": f"../image/im{i:02d}.{'png' if i % 2 else 'jpg'}", "text": c} for i, c in enumerate(CAPTIONS)]
    (root / "pairs").mkdir()
    (root / "pairs" / "images.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    (root / "pairs" / "wav").mkdir()
    for i, t in enumerate(TRANSCRIPTS):
        sf.write(root / "pairs" / "wav" / f"t{i}.wav", _wave(rng, 0.4, 16000), 16000)
    rows = [{"audio": f"wav/t{i}.wav", "text": t} for i, t in enumerate(TRANSCRIPTS)]
    (root / "pairs" / "speech.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    return {
        "text": [root / "text"], "code": [root / "code"], "image": [root / "image"], "speech": [root / "speech"],
        "molecule": [root / "molecule" / "m.smi"], "image-text": [root / "pairs" / "images.jsonl"],
        "speech-text": [root / "pairs" / "speech.jsonl"],
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """All seven kinds tokenized into one data root."""
    tmp = tmp_path_factory.mktemp("pipeline")
    corpus = make_corpus(tmp / "raw")
    data = tmp / "data"
    outside = {"image-text": {"allow_outside": True}}  # its manifest names ../image/*: outside its folder
    summaries = {kind: tokenize_dataset(kind, corpus[kind], data, seed=1, **SMALL, **outside.get(kind, {}))
                 for kind in DATASET_KINDS}
    return corpus, data, summaries


def test_seven_kinds_share_one_vocabulary_with_disjoint_ranges(built):
    _, data, summaries = built
    info = data_info(data)
    assert set(info) == {"vocab_size", "ranges", "special", "datasets"}
    assert set(info["ranges"]) == {"text", "image", "speech", "molecule"}  # code shares text's range
    spans = sorted([tuple(r) for r in info["ranges"].values()] + [(0, max(info["special"].values()))])
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert a1 < b0  # no overlap, no gap
        assert b0 == a1 + 1
    assert spans[-1][1] == info["vocab_size"] - 1
    assert info["ranges"]["image"][1] - info["ranges"]["image"][0] + 1 == SMALL["codebook"]
    assert info["ranges"]["speech"][1] - info["ranges"]["speech"][0] + 1 == SMALL["units"]
    for kind in DATASET_KINDS:
        d = info["datasets"][kind]
        assert d["modality"] == kind
        assert d["documents"] == summaries[kind]["documents"] and d["tokens"] == summaries[kind]["tokens"]
    assert info["datasets"]["text"]["documents"] == len(TEXT_DOCS) + 4
    assert info["datasets"]["image"]["documents"] == 12
    assert info["datasets"]["molecule"]["documents"] == len(SMILES_OK)
    assert summaries["molecule"]["skipped"] == 2
    assert any("m.smi:6: invalid SMILES 'CC(C'" in s for s in summaries["molecule"]["skipped_examples"])


def test_every_document_is_segments_in_sentinels_then_eos(built):
    _, data, _ = built
    vocab = Vocab.load(data / "vocab.json")
    for kind, modalities in DATASET_KINDS.items():
        ds = Dataset(data / kind)
        ds.verify()
        orders = set()
        for k in range(len(ds)):
            ids = ds.doc(k)
            assert ids[-1] == vocab.eos and vocab.eos not in ids[:-1].tolist()
            segments = split_document(vocab, ids)
            assert sorted(m for m, _ in segments) == sorted(modalities)
            orders.add(tuple(m for m, _ in segments))
            for m, local in segments:  # every id sits in its modality's range
                first, last = vocab.range_of(m)
                assert local.size and local.min() >= 0 and local.max() <= last - first
            np.testing.assert_array_equal(assemble_document(vocab, segments), ids)
            if "image" in modalities:
                assert len(next(seg for m, seg in segments if m == "image")) == (16 // 4) ** 2
        if len(modalities) == 2:
            assert orders == {modalities, modalities[::-1]}  # both directions occur
            meta = ds.meta["order"]
            assert sum(meta.values()) == len(ds)


def test_text_code_and_molecules_decode_back_exactly(built, tmp_path):
    corpus, data, _ = built
    ds = Dataset(data / "text")
    jsonl = [json.loads(line)["text"] for line in (corpus["text"][0] / "more.jsonl").read_text().splitlines()]
    got = [decode_document(data, "text", k, tmp_path / f"t{k}.txt")[0].read_text(encoding="utf-8") for k in range(len(ds))]
    assert got == TEXT_DOCS + jsonl  # files in sorted order: doc0..2.txt, then more.jsonl
    got = {decode_document(data, "code", k, tmp_path / f"c{k}.txt")[0].read_text() for k in range(3)}
    assert got == set(CODE_DOCS)
    got = [decode_document(data, "molecule", k, tmp_path / f"m{k}.smi")[0].read_text() for k in range(len(SMILES_OK))]
    assert got == SMILES_OK


def test_media_decode_to_png_and_wav_and_pairs_to_folders(built, tmp_path):
    import soundfile as sf
    from PIL import Image

    _, data, _ = built
    [png] = decode_document(data, "image", 0, tmp_path / "im.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (16, 16)
    [wav] = decode_document(data, "speech", 0, tmp_path / "u.wav")
    wave, sr = sf.read(wav)
    n_units = Dataset(data / "speech").doc(0).size - 3  # minus <speech>, </speech>, <eos>
    assert sr == 16000 and len(wave) == n_units * 320
    files = decode_document(data, "image-text", 0, tmp_path / "pair")
    assert sorted(p.suffix for p in files) == [".png", ".txt"]
    assert [p.name[0] for p in files] == ["1", "2"]
    caption = next(p for p in files if p.suffix == ".txt").read_text()
    assert caption in CAPTIONS
    files = decode_document(data, "speech-text", 1, tmp_path / "pair2")
    assert next(p for p in files if p.suffix == ".txt").read_text() in TRANSCRIPTS
    with pytest.raises(MmlmError, match="no document 99"):
        decode_document(data, "text", 99, tmp_path / "x.txt")
    with pytest.raises(MmlmError, match="no such dataset"):
        decode_document(data, "nothing", 0, tmp_path / "x.txt")
    with pytest.raises(MmlmError, match="is a folder"):
        decode_document(data, "image", 0, tmp_path)


def test_saved_tokenizers_are_reused_never_retrained(built):
    corpus, data, _ = built
    before = {p.name: p.read_bytes() for p in (data / "tokenizers").iterdir()}
    vocab_before = (data / "vocab.json").read_text()
    again = tokenize_dataset("text", corpus["text"], data, name="text-again")  # no settings: reuse
    assert again["trained"] == [] and again["reused"] == ["text"]
    np.testing.assert_array_equal(Dataset(data / "text-again").tokens, Dataset(data / "text").tokens)
    with pytest.raises(MmlmError, match="trained with vocab_size=300; --vocab-size 512 would retrain"):
        tokenize_dataset("code", corpus["code"], data, name="code2", vocab_size=512)
    with pytest.raises(MmlmError, match="trained with codebook=8"):
        tokenize_dataset("image", corpus["image"], data, name="im2", codebook=16)
    assert {p.name: p.read_bytes() for p in (data / "tokenizers").iterdir()} == before
    assert (data / "vocab.json").read_text() == vocab_before
    assert "code2" not in list_datasets(data) and "im2" not in list_datasets(data)


def test_unseen_smiles_tokens_become_unk_and_are_counted(built, tmp_path):
    _, data, _ = built
    (tmp_path / "new.smi").write_text("CC[Fe]C\nCCO\n")
    s = tokenize_dataset("molecule", [tmp_path / "new.smi"], data, name="mol-new")
    assert s["reused"] == ["molecule"]
    assert Dataset(data / "mol-new").meta["unknown_tokens"] == 1
    [out] = decode_document(data, "mol-new", 0, tmp_path / "m.txt")
    assert out.read_text() == "CC<unk>C"


def test_speech_and_images_reload_to_identical_ids(built):
    from mmlm.tokenizers.loading import load_tokenizer
    from mmlm import readers

    corpus, data, _ = built
    vocab = Vocab.load(data / "vocab.json")
    wav = sorted(corpus["speech"][0].glob("*.wav"))[0]
    tok = load_tokenizer(data, "speech")
    ids = tok.encode(readers.read_audio(wav)) + vocab.offset("speech")
    np.testing.assert_array_equal(Dataset(data / "speech").doc(1)[1:-2], ids)  # files sort: stereo.flac first
    img = sorted(corpus["image"][0].iterdir())[0]
    ids = load_tokenizer(data, "image").encode(readers.read_image(img)) + vocab.offset("image")
    np.testing.assert_array_equal(Dataset(data / "image").doc(0)[1:-2], ids)


def test_external_codes_and_units_are_imported(tmp_path):
    grids = np.random.default_rng(0).integers(0, 50, size=(6, 8, 8))
    np.save(tmp_path / "codes.npy", grids)
    s = tokenize_dataset("image", [tmp_path / "codes.npy"], tmp_path / "data", external=True, codebook=64)
    assert s["documents"] == 6 and s["tokens"] == 6 * (64 + 3)
    vocab = Vocab.load(tmp_path / "data" / "vocab.json")
    assert vocab.ranges["image"][1] - vocab.ranges["image"][0] + 1 == 64
    np.testing.assert_array_equal(Dataset(tmp_path / "data" / "image").doc(2)[1:-2],
                                  grids[2].reshape(-1) + vocab.offset("image"))
    units = {"a": np.array([1, 2, 3, 3]), "b": np.array([5, 0])}
    np.savez(tmp_path / "units.npz", **units)
    s = tokenize_dataset("speech", [tmp_path / "units.npz"], tmp_path / "data", external=True)
    np.testing.assert_array_equal(Dataset(tmp_path / "data" / "speech").doc(1)[1:-2],
                                  units["b"] + vocab.size)  # speech range appended after image
    with pytest.raises(MmlmError, match="big.npy: code 69 is outside a codebook of 64"):
        np.save(tmp_path / "big.npy", grids + 20)
        tokenize_dataset("image", [tmp_path / "big.npy"], tmp_path / "data", name="big", external=True)
    with pytest.raises(MmlmError, match="external codes can be imported for image and speech"):
        tokenize_dataset("text", [tmp_path / "codes.npy"], tmp_path / "data", external=True)


def test_strict_molecules_and_bad_options(built, tmp_path):
    corpus, data, _ = built
    with pytest.raises(MmlmError, match=r"m.smi:6: invalid SMILES 'CC\(C' \(unbalanced '\('\)"):
        tokenize_dataset("molecule", corpus["molecule"], tmp_path / "d", strict=True)
    assert list_datasets(tmp_path / "d") == []
    with pytest.raises(MmlmError, match="unknown dataset kind"):
        tokenize_dataset("video", corpus["text"], tmp_path / "d")
    with pytest.raises(MmlmError, match="--name"):
        tokenize_dataset("text", corpus["text"], tmp_path / "d", name="../escape")
    with pytest.raises(MmlmError, match="--codebook must be a positive integer"):
        tokenize_dataset("image", corpus["image"], tmp_path / "d", codebook=0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("  \n")
    with pytest.raises(MmlmError, match="no text documents found"):
        tokenize_dataset("text", [tmp_path / "empty"], tmp_path / "d")


def test_incompatible_data_root_is_refused(tmp_path, built):
    corpus, _, _ = built
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "vocab.json").write_text(json.dumps({"format": "mmlm-vocab/0", "size": 10}))
    with pytest.raises(MmlmError, match="vocab.json: written by an incompatible version"):
        tokenize_dataset("text", corpus["text"], tmp_path / "old")
    with pytest.raises(MmlmError, match="incompatible version"):
        data_info(tmp_path / "old")


def test_one_tokenize_at_a_time_per_data_root(built, tmp_path):
    import fcntl

    corpus, _, _ = built
    data = tmp_path / "locked"
    data.mkdir()
    with open(data / ".lock", "w") as f:  # as a running tokenize holds it
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(MmlmError, match="another tokenize is writing to this data root"):
            tokenize_dataset("text", corpus["text"], data, vocab_size=300)
    assert tokenize_dataset("text", corpus["text"], data, vocab_size=300)["documents"] == 7
