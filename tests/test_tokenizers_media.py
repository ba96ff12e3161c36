"""Image and speech tokenizers: shapes, round trips, files, baselines, determinism, bad input."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmlm.errors import MmlmError
from mmlm.tokenizers import image as img
from mmlm.tokenizers import speech as sp
from mmlm.tokenizers.image import ImageTokenizer
from mmlm.tokenizers.kmeans import kmeans, nearest
from mmlm.tokenizers.speech import SpeechTokenizer


# --- data ------------------------------------------------------------------------------------------

def shapes(n: int, seed: int) -> list[np.ndarray]:
    """Random rectangles and ellipses on a flat background, in varied sizes and channel layouts."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(16, 64, size=2))
        im = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 4))):
            x0, x1 = sorted(rng.integers(0, w, 2))
            y0, y1 = sorted(rng.integers(0, h, 2))
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            (d.rectangle if rng.random() < 0.5 else d.ellipse)([x0, y0, x1, y1], fill=fill)
        a = np.asarray(im)
        if i % 3 == 1:
            a = a.mean(axis=2).astype(np.uint8)  # grey HxW
        elif i % 3 == 2:
            a = np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])  # opaque RGBA
        out.append(a)
    return out


@pytest.fixture(scope="module")
def digits() -> list[np.ndarray]:
    """sklearn's 8x8 digits (real scans), read from its bundled file as load_digits does,
    without the second or two that importing sklearn costs."""
    path = Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "data" / "digits.csv.gz"
    pixels = np.loadtxt(path, delimiter=",")[:, :64].reshape(-1, 8, 8)
    return [np.rint(x * 255 / 16).astype(np.uint8) for x in pixels]


@pytest.fixture(scope="module")
def digit_tok(digits) -> ImageTokenizer:
    return ImageTokenizer.train(digits[:1000], codebook=64, sample=8000, seed=0)


@pytest.fixture(scope="module")
def shape_tok() -> ImageTokenizer:
    return ImageTokenizer.train(shapes(120, seed=1), size=16, patch=4, codebook=32, sample=4000, seed=3)


def sound(kind: str, sr: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    if kind == "tone":
        x = 0.5 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
    elif kind == "chirp":
        f0, f1 = rng.uniform(150, 3000, 2)
        x = 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))
    else:
        x = 0.2 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def sounds(n: int, seed: int) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sr = int(rng.choice([8000, 16000, 22050, 48000]))
        out.append((sound(("tone", "chirp", "noise")[i % 3], sr, float(rng.uniform(0.4, 1.0)), rng), sr))
    return out


@pytest.fixture(scope="module")
def speech_tok() -> SpeechTokenizer:
    return SpeechTokenizer.train(sounds(30, seed=0), units=24, seed=0, gl_iters=16)


# --- k-means ---------------------------------------------------------------------------------------

def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 3)) * 20
    x = np.concatenate([c + rng.normal(size=(200, 3)) for c in centres])
    c = kmeans(x, 5, seed=1)
    labels, dist = nearest(centres, c)
    assert sorted(labels.tolist()) == [0, 1, 2, 3, 4]  # one learnt centroid per true centre
    assert dist.max() < 0.5
    assert np.array_equal(c, kmeans(x, 5, seed=1))


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(1)
    x, c = rng.normal(size=(300, 7)), rng.normal(size=(11, 7))
    d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    labels, dist = nearest(x, c)
    assert np.array_equal(labels, d.argmin(1))
    assert np.allclose(dist, d.min(1), rtol=1e-4, atol=1e-4)


# --- image -----------------------------------------------------------------------------------------

def test_image_encode_decode_shapes(digit_tok, digits):
    assert digit_tok.n_tokens == 64 and digit_tok.codes_per_image == 64 and digit_tok.grid == (8, 8)
    ids = digit_tok.encode(digits[1500])
    assert ids.dtype == np.int64 and ids.shape == (64,)
    assert ids.min() >= 0 and ids.max() < 64
    out = digit_tok.decode(ids)
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    assert np.array_equal(digit_tok.decode(ids.reshape(8, 8)), out)
    json.dumps(digit_tok.settings)


def test_image_trained_codebook_beats_random_on_held_out_digits(digit_tok, digits):
    held_out = digits[1500:]
    trained = img.reconstruction_error(digit_tok, held_out)
    uniform = img.reconstruction_error(ImageTokenizer.random(codebook=64, seed=0), held_out)
    gauss = img.reconstruction_error(ImageTokenizer.random(digits[:1000], codebook=64, seed=0), held_out)
    assert trained < 0.2 * gauss < 0.2 * uniform
    assert trained < 0.01


def test_image_reconstruction_is_close_and_decode_re_encodes(shape_tok):
    test = shapes(30, seed=99)
    err = img.reconstruction_error(shape_tok, test)
    assert err < 0.5 * img.reconstruction_error(ImageTokenizer.random(shapes(120, 1), size=16, codebook=32), test)
    ids = np.concatenate([shape_tok.encode(x) for x in test])
    again = np.concatenate([shape_tok.encode(shape_tok.decode(shape_tok.encode(x))) for x in test])
    assert np.mean(ids == again) > 0.95  # a decoded image reads back as (nearly) the same codes


def test_image_channel_layouts(shape_tok):
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    ids = shape_tok.encode(rgb)
    assert np.array_equal(shape_tok.encode(grey), ids)
    assert np.array_equal(shape_tok.encode(grey[:, :, None]), ids)
    assert np.array_equal(shape_tok.encode(np.dstack([rgb, np.full((20, 24), 255, np.uint8)])), ids)
    clear = np.dstack([rgb, np.zeros((20, 24), np.uint8)])  # fully transparent -> white
    assert np.array_equal(shape_tok.encode(clear), shape_tok.encode(np.full((20, 24, 3), 255, np.uint8)))


def test_image_save_load_identical(tmp_path, digit_tok, digits):
    path = tmp_path / "tok" / "image.json"
    digit_tok.save(path)
    assert path.exists() and path.with_suffix(".safetensors").exists()
    back = ImageTokenizer.load(path)
    assert back.settings == digit_tok.settings
    for x in digits[1500:1600]:
        assert np.array_equal(back.encode(x), digit_tok.encode(x))
    assert np.array_equal(back.decode(np.arange(64)), digit_tok.decode(np.arange(64)))


def test_image_load_rejects_corrupt_or_foreign_files(tmp_path, digit_tok, speech_tok):
    path = tmp_path / "image.json"
    digit_tok.save(path)
    arr = path.with_suffix(".safetensors")
    blob = bytearray(arr.read_bytes())
    blob[-1] ^= 0xFF
    arr.write_bytes(bytes(blob))
    with pytest.raises(MmlmError, match="checksum"):
        ImageTokenizer.load(path)
    arr.unlink()
    with pytest.raises(MmlmError, match="missing"):
        ImageTokenizer.load(path)
    with pytest.raises(MmlmError, match="not found"):
        ImageTokenizer.load(tmp_path / "nope.json")
    speech_tok.save(tmp_path / "speech.json")
    with pytest.raises(MmlmError, match="expected a image tokenizer"):
        ImageTokenizer.load(tmp_path / "speech.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(MmlmError, match="junk.json"):
        ImageTokenizer.load(tmp_path / "junk.json")


def test_image_training_is_seeded(digits):
    a = ImageTokenizer.train(digits[:300], codebook=16, sample=3000, seed=7)
    b = ImageTokenizer.train(digits[:300], codebook=16, sample=3000, seed=7)
    c = ImageTokenizer.train(digits[:300], codebook=16, sample=3000, seed=8)
    assert np.array_equal(a.codebook_, b.codebook_)
    assert not np.array_equal(a.codebook_, c.codebook_)


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((8, 8), np.float32), "uint8"),
    ([[0, 1], [2, 3]], "numpy array"),
    (np.zeros(16, np.uint8), "shape"),
    (np.zeros((8, 8, 2), np.uint8), "shape"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
])
def test_image_bad_pixels(shape_tok, bad, msg):
    with pytest.raises(MmlmError, match=msg):
        shape_tok.encode(bad)


def test_image_bad_ids_and_settings(shape_tok):
    with pytest.raises(MmlmError, match="codes"):
        shape_tok.decode(np.zeros(15, np.int64))
    with pytest.raises(MmlmError, match="0..31"):
        shape_tok.decode(np.full(16, 32))
    with pytest.raises(MmlmError, match="integers"):
        shape_tok.decode(np.zeros(16, np.float32))
    with pytest.raises(MmlmError, match="multiple"):
        ImageTokenizer.train(shapes(2, 0), size=30, patch=4)
    with pytest.raises(MmlmError, match="no training images"):
        ImageTokenizer.train([])


def test_external_image_codes(tmp_path):
    rng = np.random.default_rng(0)
    grids = rng.integers(0, 1000, (5, 16, 16))
    np.save(tmp_path / "codes.npy", grids)
    loaded = img.load_codes(tmp_path / "codes.npy", codebook=1024)
    assert loaded.dtype == np.int64 and np.array_equal(loaded, grids)
    tok = ImageTokenizer.from_codes(loaded, codebook=1024)
    assert tok.n_tokens == 1024 and tok.codes_per_image == 256 and tok.external
    assert ImageTokenizer.from_codes(loaded).n_tokens == grids.max() + 1
    ids = tok.encode(grids[2])
    assert np.array_equal(ids, grids[2].reshape(-1))
    pic = tok.decode(ids)
    assert pic.dtype == np.uint8 and pic.shape == (256, 256, 3)
    cells = pic[::16, ::16].reshape(-1, 3)  # one pixel per code cell
    same = ids[:, None] == ids[None, :]
    assert np.array_equal(same, (cells[:, None] == cells[None, :]).all(-1))  # same code <=> same colour
    tok.save(tmp_path / "ext.json")
    back = ImageTokenizer.load(tmp_path / "ext.json")
    assert back.settings == tok.settings and np.array_equal(back.decode(ids), pic)
    with pytest.raises(MmlmError, match="grid shape"):
        tok.encode(grids[2][:8])
    with pytest.raises(MmlmError, match="no decoder"):
        img.reconstruction_error(tok, [np.zeros((4, 4), np.uint8)])


@pytest.mark.parametrize("array, msg", [
    (np.zeros((2, 4, 4), np.float32), "integers"),
    (np.zeros((4, 4), np.int64), "n_images, h, w"),
    (np.full((1, 2, 2), -1), "non-negative"),
    (np.full((1, 2, 2), 9), "outside a codebook of 8"),
])
def test_external_image_codes_bad_files(tmp_path, array, msg):
    np.save(tmp_path / "c.npy", array)
    with pytest.raises(MmlmError, match=msg):
        img.load_codes(tmp_path / "c.npy", codebook=8)


def test_external_image_codes_refuse_pickles_and_junk(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MmlmError, match="obj.npy"):
        img.load_codes(tmp_path / "obj.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(MmlmError, match="junk.npy"):
        img.load_codes(tmp_path / "junk.npy")
    with pytest.raises(MmlmError, match="not found"):
        img.load_codes(tmp_path / "missing.npy")


# --- speech ----------------------------------------------------------------------------------------

def test_speech_units_at_50_per_second(speech_tok):
    rng = np.random.default_rng(3)
    for sr, seconds in ((16000, 1.0), (48000, 0.5), (8000, 0.31)):
        ids = speech_tok.encode((sound("chirp", sr, seconds, rng), sr))
        assert ids.dtype == np.int64 and len(ids) == int(np.ceil(seconds * 50))
        assert ids.min() >= 0 and ids.max() < speech_tok.n_tokens == 24
    json.dumps(speech_tok.settings)


def test_speech_input_layouts_agree(speech_tok):
    rng = np.random.default_rng(4)
    x = sound("chirp", 16000, 1.0, rng)
    ids = speech_tok.encode(x)
    assert np.array_equal(speech_tok.encode((x, 16000)), ids)
    assert np.array_equal(speech_tok.encode(np.stack([x, x], axis=1)), ids)  # stereo -> mean
    pcm = np.rint(x * 32767).astype(np.int16)
    assert np.mean(speech_tok.encode(pcm) == ids) > 0.95
    from scipy.signal import resample_poly
    x48 = resample_poly(x, 3, 1).astype(np.float32)
    assert np.mean(speech_tok.encode((x48, 48000)) == ids) > 0.9


def test_speech_decode_is_audio_of_the_right_length(speech_tok):
    ids = speech_tok.encode(sound("noise", 16000, 0.6, np.random.default_rng(0)))
    y, sr = speech_tok.decode(ids)
    assert sr == 16000 and y.dtype == np.float32 and y.shape == (len(ids) * 320,)
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0 and np.abs(y).max() > 0.01
    assert speech_tok.decode([])[0].shape == (0,)


def test_speech_decode_keeps_the_pitch_of_a_tone():
    sr, t = 16000, np.arange(16000) / 16000
    tones = [(0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (300, 700, 1500, 3000)]
    tok = SpeechTokenizer.train(tones, units=16, seed=0, gl_iters=16)
    for f, x in zip((300, 700, 1500, 3000), tones):
        y, _ = tok.decode(tok.encode(x))
        spec = np.abs(np.fft.rfft(y[1600:-1600]))
        peak = np.argmax(spec) * sr / (2 * (len(spec) - 1))
        assert abs(peak - f) < 40, (f, peak)


def test_speech_trained_units_beat_random_on_held_out(speech_tok):
    train, held_out = sounds(30, seed=0), sounds(9, seed=1)
    trained = sp.reconstruction_error(speech_tok, held_out)
    random = sp.reconstruction_error(SpeechTokenizer.random(train, units=24, seed=0, gl_iters=16), held_out)
    assert trained < 0.7 * random


def test_speech_save_load_identical(tmp_path, speech_tok):
    speech_tok.save(tmp_path / "speech.json")
    back = SpeechTokenizer.load(tmp_path / "speech.json")
    assert back.settings == speech_tok.settings
    for w in sounds(6, seed=5):
        assert np.array_equal(back.encode(w), speech_tok.encode(w))
    ids = np.arange(24)
    assert np.array_equal(back.decode(ids)[0], speech_tok.decode(ids)[0])


def test_speech_training_is_seeded():
    data = sounds(9, seed=2)
    a = SpeechTokenizer.train(data, units=8, seed=1)
    b = SpeechTokenizer.train(data, units=8, seed=1)
    c = SpeechTokenizer.train(data, units=8, seed=2)
    assert np.array_equal(a.centroids_, b.centroids_) and np.array_equal(a.spectra_, b.spectra_)
    assert not np.array_equal(a.centroids_, c.centroids_)


def test_speech_dedup_collapses_runs():
    data = sounds(9, seed=2)
    tok = SpeechTokenizer.train(data, units=8, seed=1, dedup=True, features="logmel", deltas=False)
    for w in data[:4]:
        full, ids = tok.frame_units(w), tok.encode(w)
        assert np.all(ids[1:] != ids[:-1]) and len(ids) < len(full)
        assert np.array_equal(ids, np.array([u for i, u in enumerate(full) if i == 0 or u != full[i - 1]]))


@pytest.mark.parametrize("bad, msg", [
    (np.array([0.0, np.nan, 0.1], np.float32), "NaN"),
    (np.zeros(0, np.float32), "empty"),
    (np.zeros((2, 3, 4), np.float32), "shape"),
    (np.zeros((2, 1000), np.float32), "shape"),
    (np.zeros(100, bool), "dtype"),
    ([0.0, 0.1], "numpy array"),
    ((np.zeros(100, np.float32), 0), "sample rate"),
    ((np.zeros(100, np.float32), 16000, 1), "tuple"),
])
def test_speech_bad_audio(speech_tok, bad, msg):
    with pytest.raises(MmlmError, match=msg):
        speech_tok.encode(bad)


def test_speech_bad_ids_and_settings(speech_tok):
    with pytest.raises(MmlmError, match="0..23"):
        speech_tok.decode([0, 24])
    with pytest.raises(MmlmError, match="no training"):
        SpeechTokenizer.train([])
    with pytest.raises(MmlmError, match="features"):
        SpeechTokenizer.train(sounds(1, 0), features="spectrogram")
    with pytest.raises(MmlmError, match="units"):
        SpeechTokenizer.train(sounds(1, 0), units=0)


def test_external_speech_units(tmp_path):
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 100, (3, 40))
    np.save(tmp_path / "u.npy", grid)
    np.savez(tmp_path / "u.npz", a=np.array([5, 5, 9]), b=np.arange(50))
    rows = sp.load_units(tmp_path / "u.npy", units=100)
    assert len(rows) == 3 and all(np.array_equal(r, g) for r, g in zip(rows, grid))
    seqs = sp.load_units(tmp_path / "u.npz")
    assert [s.tolist() for s in seqs] == [[5, 5, 9], list(range(50))]
    tok = SpeechTokenizer.from_units(rows + seqs, units=100)
    assert tok.external and tok.n_tokens == 100
    assert SpeechTokenizer.from_units(seqs).n_tokens == 50
    assert np.array_equal(tok.encode(seqs[0]), seqs[0])
    y, sr = tok.decode(np.array([10, 90]))
    assert sr == 16000 and y.dtype == np.float32 and y.shape == (640,)
    low = np.argmax(np.abs(np.fft.rfft(y[:320])))
    high = np.argmax(np.abs(np.fft.rfft(y[320:])))
    assert high > low  # a higher unit plays a higher tone
    tok.save(tmp_path / "ext.json")
    assert SpeechTokenizer.load(tmp_path / "ext.json").settings == tok.settings
    with pytest.raises(MmlmError, match="no decoder"):
        sp.reconstruction_error(tok, [np.zeros(100, np.float32)])
    with pytest.raises(MmlmError, match="no encoder"):
        tok.frame_units(np.zeros(100, np.float32))


@pytest.mark.parametrize("write, msg", [
    (lambda p: np.save(p / "x.npy", np.zeros((2, 3), np.float32)), "integers"),
    (lambda p: np.save(p / "x.npy", np.zeros(5, np.int64)), "2-D"),
    (lambda p: np.save(p / "x.npy", np.full((1, 3), -2)), "non-negative"),
    (lambda p: np.save(p / "x.npy", np.full((1, 3), 8)), "outside 8 units"),
    (lambda p: np.savez(p / "x.npz", a=np.zeros((2, 2), np.int64)), "1-D"),
    (lambda p: np.savez(p / "x.npz"), "no unit arrays"),
    (lambda p: np.savez(p / "x.npz", a=np.array([{"x": 1}], dtype=object)), "pickle"),
])
def test_external_speech_units_bad_files(tmp_path, write, msg):
    write(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(MmlmError, match=msg):
        sp.load_units(path, units=8)
