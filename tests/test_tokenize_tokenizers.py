"""The text BPE and the SMILES tokenizer, and the raw-input readers."""
import struct

import numpy as np
import pytest

from helpers import assert_bad_json_rejected

from mmlm import readers
from mmlm.errors import MmlmError
from mmlm.tokenizers.molecule import SmilesTokenizer, check_smiles, rdkit_available, split_smiles
from mmlm.tokenizers.text import BPETokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.\n",
    "def f(x):\n\treturn x ** 2  # squares\r\n",
    "  leading spaces, trailing spaces   ",
    "Ünïcödé: naïve café, 日本語, emoji 🎉, zero-width \u200b, NUL \x00 end",
    "<eos> <text> look like special tokens but are plain text",
    "",
]


@pytest.fixture(scope="module")
def bpe():
    corpus = [t * 3 for t in TEXTS] + ["the cat sat on the mat " * 20, "for i in range(10):\n    print(i)\n" * 10]
    return BPETokenizer.train(corpus, vocab_size=320)


def test_bpe_round_trip_is_exact(bpe):
    for t in TEXTS + ["unseen: ∮ E⋅da = Q,  n → ∞, ∑ f(i) = ∏ g(i)", "\n\n\n", "a" * 1000]:
        ids = bpe.encode(t)
        assert ids.dtype == np.int64
        assert ids.size == 0 or (ids.min() >= 0 and ids.max() < bpe.n_tokens)
        assert bpe.decode(ids) == t
    # batch encoding gives the same ids as one at a time
    for a, b in zip(bpe.encode_batch(TEXTS), [bpe.encode(t) for t in TEXTS]):
        np.testing.assert_array_equal(a, b)


def test_bpe_learns_merges_and_reloads_identically(bpe, tmp_path):
    assert 256 < bpe.n_tokens <= 320
    text = "the cat sat on the mat"
    assert len(bpe.encode(text)) < len(text.encode())  # merges compress the training text
    bpe.save(tmp_path / "text.json")
    again = BPETokenizer.load(tmp_path / "text.json")
    assert again.n_tokens == bpe.n_tokens and again.settings == bpe.settings
    for t in TEXTS:
        np.testing.assert_array_equal(again.encode(t), bpe.encode(t))


def test_bpe_bad_files_and_settings(tmp_path):
    with pytest.raises(MmlmError, match="at least 256"):
        BPETokenizer.train(["x"], vocab_size=100)
    assert_bad_json_rejected(BPETokenizer.load, tmp_path / "text.json", {"format": "mmlm-bpe/0"}, "{",
                             tmp_path / "none.json", "none.json: no such file")


SMILES = ["CC(=O)Oc1ccccc1C(=O)O", "C[C@@H](N)C(=O)O", "c1ccc2ccccc2c1", "[Na+].[Cl-]", "BrCCCl",
          "C1CC%10CCC1CC%10", "O=C=O", "N#N", "C/C=C/C", "[13CH4]"]


def test_smiles_split_covers_atoms_bonds_rings():
    assert split_smiles("CC(=O)Oc1ccccc1") == ["C", "C", "(", "=", "O", ")", "O", "c", "1", "c", "c", "c", "c", "c", "1"]
    assert split_smiles("BrC[C@@H]%12Cl") == ["Br", "C", "[C@@H]", "%12", "Cl"]
    for s in SMILES:
        assert "".join(split_smiles(s)) == s


@pytest.mark.parametrize("smiles,why", [
    ("", "empty"),
    ("CC(C", "unbalanced '('"),
    ("CC)C", "unbalanced ')'"),
    ("C1CC", "unclosed ring 1"),
    ("CC[NH3+", "unexpected character '['"),
    ("C C", "unexpected character ' '"),
    ("CXC", "unexpected character 'X'"),
])
def test_invalid_smiles_are_named(smiles, why):
    assert why in check_smiles(smiles, rdkit=False)


def test_valid_smiles_pass_regex_and_rdkit_checks():
    for s in SMILES:
        assert check_smiles(s, rdkit=False) is None, s
        if rdkit_available():
            assert check_smiles(s, rdkit=True) is None, s
    if rdkit_available():  # balanced and regex-clean, but chemically impossible (5-valent carbon)
        assert check_smiles("C(C)(C)(C)(C)C", rdkit=False) is None
        assert "RDKit" in check_smiles("C(C)(C)(C)(C)C", rdkit=True)


def test_smiles_tokenizer_round_trip_unk_and_reload(tmp_path):
    tok = SmilesTokenizer.train(SMILES)
    assert tok.tokens[0] == "<unk>" and len(set(tok.tokens)) == tok.n_tokens
    for s in SMILES:
        ids = tok.encode(s)
        assert 0 not in ids.tolist()
        assert tok.decode(ids) == s
    ids = tok.encode("CC[Fe]C")  # [Fe] never seen in training
    assert ids.tolist().count(0) == 1
    assert tok.decode(ids) == "CC<unk>C"
    tok.save(tmp_path / "molecule.json")
    again = SmilesTokenizer.load(tmp_path / "molecule.json")
    assert again.tokens == tok.tokens
    np.testing.assert_array_equal(again.encode(SMILES[0]), tok.encode(SMILES[0]))
    with pytest.raises(MmlmError, match="empty input"):
        SmilesTokenizer.train(["", ""])


# --- readers ---------------------------------------------------------------------------------

def test_find_files_and_missing_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    (tmp_path / "a" / "y.png").write_bytes(b"")
    (tmp_path / "a" / ".hidden.txt").write_text("h")
    assert readers.find_files([tmp_path / "a"], (".txt",), "text") == [tmp_path / "a" / "x.txt"]
    with pytest.raises(MmlmError, match="no such file or folder"):
        readers.find_files([tmp_path / "nope"], (".txt",), "text")
    with pytest.raises(MmlmError, match="no image files found"):
        readers.find_files([tmp_path / "a"], (".jpg",), "image")


def test_non_utf8_text_names_the_line(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("line one\nline two\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(MmlmError, match=r"latin1.txt:3: not valid UTF-8"):
        readers.read_text_documents(p)


def test_jsonl_rows_are_checked(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert readers.read_text_documents(p) == ["one", "two"]
    p.write_text('{"text": "one"}\n{"txt": "two"}\n')
    with pytest.raises(MmlmError, match=r"d.jsonl:2: field 'text' is missing"):
        readers.read_text_documents(p)
    p.write_text('{"text": "one"}\n{oops\n')
    with pytest.raises(MmlmError, match=r"d.jsonl:2: not valid JSON"):
        readers.read_text_documents(p)


def test_images_read_as_rgb_and_corrupt_ones_fail(tmp_path):
    from PIL import Image

    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    arr = readers.read_image(tmp_path / "a.png")
    assert arr.shape == (5, 7, 3) and arr.dtype == np.uint8
    assert tuple(arr[0, 0]) == (200, 0, 0) and tuple(arr[1, 1]) == (255, 255, 255)  # transparent -> white
    Image.fromarray(np.full((8, 8), 9, np.uint8), "L").save(tmp_path / "g.jpg")
    assert readers.read_image(tmp_path / "g.jpg").shape == (8, 8, 3)
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MmlmError, match="cut.png: not a readable PNG/JPEG"):
        readers.read_image(tmp_path / "cut.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(MmlmError, match="text.png: not a readable PNG/JPEG"):
        readers.read_image(tmp_path / "text.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "b.gif")
    with pytest.raises(MmlmError, match="GIF image; expected PNG or JPEG"):
        readers.read_image(tmp_path / "b.gif")


def test_audio_mono_stereo_and_bad_files(tmp_path):
    import soundfile as sf

    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1).astype(np.float32) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 8000, subtype="PCM_16")
    sf.write(tmp_path / "m.flac", stereo[:, 0], 22050)
    wave, sr = readers.read_audio(tmp_path / "s.wav")
    assert sr == 8000 and wave.shape == (8000,) and wave.dtype == np.float32
    assert abs(np.abs(wave).max() - 0.25) < 0.01  # the two channels averaged
    assert readers.read_audio(tmp_path / "m.flac")[1] == 22050
    data = (tmp_path / "s.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(MmlmError, match="cut.wav: truncated WAV"):
        readers.read_audio(tmp_path / "cut.wav")
    (tmp_path / "noise.wav").write_bytes(b"this is not audio at all" * 20)
    with pytest.raises(MmlmError, match="noise.wav: not a readable WAV/FLAC"):
        readers.read_audio(tmp_path / "noise.wav")
    header = data[:12] + b"data" + struct.pack("<I", 0)
    (tmp_path / "empty.wav").write_bytes(header)
    with pytest.raises(MmlmError, match="empty.wav"):
        readers.read_audio(tmp_path / "empty.wav")


def test_smiles_files_smi_and_csv(tmp_path):
    (tmp_path / "a.smi").write_text("SMILES name\nCCO ethanol\n\n# comment\nc1ccccc1\tbenzene\n")
    assert list(readers.iter_smiles(tmp_path / "a.smi")) == [(2, "CCO"), (5, "c1ccccc1")]
    (tmp_path / "b.csv").write_text('id,SMILES\n1,CCO\n2,"C(=O)O"\n')
    assert list(readers.iter_smiles(tmp_path / "b.csv")) == [(2, "CCO"), (3, "C(=O)O")]
    (tmp_path / "c.csv").write_text("id,formula\n1,H2O\n")
    with pytest.raises(MmlmError, match=r"c.csv:1: no 'smiles' column \(columns: id, formula\)"):
        list(readers.iter_smiles(tmp_path / "c.csv"))


def test_manifest_paths_are_relative_and_must_exist(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.png").write_bytes(b"")
    m = tmp_path / "sub" / "m.jsonl"
    m.write_text('{"image": "x.png", "text": "a thing"}\n')
    assert readers.read_manifest(m, "image") == [(1, tmp_path / "sub" / "x.png", "a thing")]
    m.write_text('{"image": "x.png", "text": "a thing"}\n{"image": "gone.png", "text": "b"}\n')
    with pytest.raises(MmlmError, match=r"m.jsonl:2: image file 'gone.png' not found"):
        readers.read_manifest(m, "image")
    m.write_text("\n")
    with pytest.raises(MmlmError, match="manifest has no rows"):
        readers.read_manifest(m, "image")
