"""The learnt image tokenizer (mmlm.tokenizers.vqvae): shapes, seeds, files, code-use monitoring,
bad input, and the tokenize -> decode -> generate path."""
import functools
import json
import shutil

import numpy as np
import pytest
import torch

from helpers import assert_clean_error, run_main

from mmlm.errors import MmlmError
from mmlm.tokenizers import vqvae
from mmlm.tokenizers.vqvae import VQVAETokenizer
from mmlm.tokenizers.vqvae_net import Quantizer

# tiny: 8 px images, a 4 x 4 code grid of 8 codes, narrow network, a few steps
TINY = dict(size=8, downsample=2, codebook=8, channels=16, latent_dim=4, steps=6, batch=8)


def blobs(n=24, size=8, seed=0):
    """Planted images: a bright square of a random colour at a random place on a dark background."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        im = np.full((size, size, 3), 20, np.uint8)
        y, x = rng.integers(0, size - 3, 2)
        im[y:y + 3, x:x + 3] = rng.integers(120, 256, 3)
        out.append(im)
    return out


@pytest.fixture(scope="module")
def tok():
    return VQVAETokenizer.train(blobs(), seed=1, held_out=0.25, **{k: v for k, v in TINY.items()})


def test_round_trip_shapes_and_report(tok):
    ids = tok.encode(blobs(1, seed=5)[0])
    assert ids.shape == (16,) and ids.dtype == np.int64 and 0 <= ids.min() and ids.max() < 8
    assert tok.grid == (4, 4) and tok.codes_per_image == 16 and tok.n_tokens == 8
    img = tok.decode(ids)
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(tok.encode_batch(blobs(3, seed=5)), np.stack([tok.encode(b) for b in blobs(3, seed=5)]))
    # a larger input is resized first, as the k-means tokenizer does
    assert tok.encode(np.zeros((20, 30), np.uint8)).shape == (16,)
    rep = tok.report
    assert rep["eval_on"] == "held-out" and rep["images"] == 6 and rep["train_images"] == 18
    assert rep["codes_per_image"] == 16 and rep["bits_per_image"] == 16 * 3
    assert 0 < rep["usage"] <= 1 and 1 <= rep["perplexity"] <= 8 and -1 <= rep["ssim"] <= 1 and rep["psnr"] > 0
    assert tok.settings["tokenizer"] == "vqvae" and tok.settings["downsample"] == 2


def test_same_seed_same_weights_other_seed_differs(tok):
    again = VQVAETokenizer.train(blobs(), seed=1, held_out=0.25, **TINY)
    for k, v in tok.state().items():
        np.testing.assert_array_equal(again.state()[k], v, err_msg=k)
    assert again.report["psnr"] == tok.report["psnr"]
    other = VQVAETokenizer.train(blobs(), seed=2, held_out=0.25, **TINY)
    assert not np.array_equal(other.state()["codebook"], tok.state()["codebook"])


def test_save_load_identity(tok, tmp_path):
    tok.save(tmp_path / "image.json")
    meta = json.loads((tmp_path / "image.json").read_text())
    assert meta["format"] == vqvae.FORMAT and meta["report"] == tok.report and meta["arrays"] == "image.safetensors"
    back = VQVAETokenizer.load(tmp_path / "image.json")
    assert back.settings == tok.settings and back.report == tok.report
    for k, v in tok.state().items():
        np.testing.assert_array_equal(back.state()[k], v, err_msg=k)
    for im in blobs(5, seed=9):
        ids = tok.encode(im)
        np.testing.assert_array_equal(back.encode(im), ids)
        np.testing.assert_array_equal(back.decode(ids), tok.decode(ids))


def test_dead_codes_are_restarted_onto_encoder_outputs():
    """Entries far from every input are never assigned; the restart moves them onto inputs."""
    data = torch.randn(200, 4)
    embed = torch.cat([data[:2].clone(), torch.full((6, 4), 100.0)])  # 6 entries no input is near
    q = Quantizer(embed, decay=0.5, dead_below=0.2)
    idx = q.assign(data)
    assert set(idx.tolist()) <= {0, 1}
    gen = torch.Generator().manual_seed(0)
    restarted = 0
    for _ in range(4):
        restarted += q.update(data, q.assign(data), gen)
    assert restarted >= 6
    assert (q.embed.abs() < 50).all()  # every entry now lies among the data
    assert len(set(q.assign(data).tolist())) > 2
    # without restarts (threshold 0) the far entries stay dead
    q0 = Quantizer(torch.cat([data[:2].clone(), torch.full((6, 4), 100.0)]), decay=0.5, dead_below=0.0)
    for _ in range(4):
        assert q0.update(data, q0.assign(data), gen) == 0
    assert set(q0.assign(data).tolist()) <= {0, 1}


def test_bad_input_is_a_one_line_error(tok, tmp_path):
    with pytest.raises(MmlmError, match="larger than the data can train"):
        VQVAETokenizer.train(blobs(4), **{**TINY, "codebook": 512})
    with pytest.raises(MmlmError, match="--image-size 10 cannot be taken .* downsamples by 4"):
        VQVAETokenizer.train(blobs(4), **{**TINY, "size": 10, "downsample": 4})
    with pytest.raises(MmlmError, match="--downsample 3 is not one of"):
        VQVAETokenizer.train(blobs(4), **{**TINY, "downsample": 3})
    with pytest.raises(MmlmError, match="at least 2"):
        VQVAETokenizer.train(blobs(1), **TINY)
    with pytest.raises(MmlmError, match="ids must lie in 0..7"):
        tok.decode(np.full(16, 8))
    with pytest.raises(MmlmError, match="got 15 codes"):
        tok.decode(np.zeros(15, int))
    tok.save(tmp_path / "t.json")
    meta = json.loads((tmp_path / "t.json").read_text())
    (tmp_path / "old.json").write_text(json.dumps({**meta, "format": "mmlm-vqvae/0"}))
    with pytest.raises(MmlmError, match="incompatible version"):
        VQVAETokenizer.load(tmp_path / "old.json")
    (tmp_path / "wide.json").write_text(json.dumps({**meta, "settings": {**meta["settings"], "channels": 32}}))
    with pytest.raises(MmlmError, match="weights do not match its settings"):
        VQVAETokenizer.load(tmp_path / "wide.json")
    (tmp_path / "t.safetensors").write_bytes(b"x" + (tmp_path / "t.safetensors").read_bytes()[1:])
    with pytest.raises(MmlmError, match="checksum"):
        VQVAETokenizer.load(tmp_path / "t.json")


# ---- through the CLI ---------------------------------------------------------------------------

@pytest.fixture
def mmlm(capsys):
    """The console entry point run in this process (no interpreter start-up): exit code and output."""
    return functools.partial(run_main, capsys)


def write_pngs(folder, images):
    from PIL import Image

    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i}.png")


def test_cli_tokenize_decode_and_generate_with_a_vqvae(tmp_path, mmlm):
    from PIL import Image

    from mmlm.generate import load_run
    from mmlm.model import GPT, GPTConfig
    from mmlm.shards import Dataset
    from mmlm.vocab import Vocab

    write_pngs(tmp_path / "img", blobs(12, size=16))
    data = tmp_path / "data"
    r = mmlm("tokenize", "image", tmp_path / "img", "--data", data, "--tokenizer", "vqvae", "--image-size", 16,
             "--downsample", 4, "--codebook", 16, "--train-steps", 5, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    rep = summary["reports"]["image"]
    assert summary["trained"] == ["image"] and rep["codes_per_image"] == 16 and rep["bits_per_image"] == 64
    vocab = json.loads((data / "vocab.json").read_text())
    assert vocab["tokenizers"]["image"]["tokenizer"] == "vqvae"
    assert json.loads((data / "tokenizers/image.json").read_text())["report"] == rep
    ds = Dataset(data / "image")
    assert len(ds) == 12 and len(ds.doc(0)) == 16 + 3  # <image>, 16 codes, </image>, <eos>

    r = mmlm("tokenize", "decode", "--data", data, "--dataset", "image", "--doc", 0, "--out", tmp_path / "d.png")
    assert r.returncode == 0, r.stderr
    tok = VQVAETokenizer.load(data / "tokenizers/image.json")
    with Image.open(tmp_path / "d.png") as im:
        assert im.size == (16, 16)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), tok.decode(ds.doc(0)[1:-2] - vocab["ranges"]["image"][0]))

    # the data root remembers its tokenizer: a k-means request, or a k-means-only option, is refused
    assert_clean_error(mmlm("tokenize", "image", tmp_path / "img", "--data", data, "--name", "b", "--tokenizer", "kmeans"),
                       "tokenizer=vqvae", "--tokenizer kmeans")
    assert_clean_error(mmlm("tokenize", "image", tmp_path / "img", "--data", data, "--name", "b", "--tokenizer", "vqvae",
                            "--downsample", 2), "downsample=4")
    assert not (data / "b").exists()

    # image-text reuses the data root's VQ-VAE; a pair decodes to the caption and the code grid's picture
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"image": f"img/{i}.png", "text": f"a square {i}"}) + "\n"
                                                  for i in range(4)))
    r = mmlm("tokenize", "image-text", tmp_path / "pairs.jsonl", "--data", data, "--vocab-size", 300, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reused"] == ["image"] and json.loads(r.stdout)["reports"] == {}
    r = mmlm("tokenize", "decode", "--data", data, "--dataset", "image-text", "--doc", 1, "--out", tmp_path / "pair")
    assert r.returncode == 0, r.stderr
    png = next((tmp_path / "pair").glob("*-image.png"))
    with Image.open(png) as im:
        assert im.size == (16, 16)

    # a run folder over this data root (untrained model: sampling and decoding need no trained one)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(data / "vocab.json", run)
    shutil.copytree(data / "tokenizers", run / "tokenizers")
    cfg = GPTConfig(n_layer=1, n_head=2, d_model=16, vocab_size=Vocab.load(data / "vocab.json").size, seq_len=64)
    torch.manual_seed(0)
    from safetensors.torch import save_file

    save_file(GPT(cfg).state_dict(), str(run / "model.safetensors"))
    (run / "config.json").write_text(json.dumps({"format": "mmlm-run/1", "model": cfg.to_json(), "vocab": vocab}))
    r = mmlm("generate", run, "--out", tmp_path / "samples", "--modality", "image", "--num-samples", 2, "--seed", 0,
             "--prompt-image", tmp_path / "img/3.png", "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    loaded = load_run(run, "cpu").tokenizer("image")
    assert isinstance(loaded, VQVAETokenizer)
    for k, rec in enumerate(records, 1):
        codes = np.array(rec["tokens"][:-1]) - vocab["ranges"]["image"][0]
        with Image.open(tmp_path / "samples" / f"sample-{k}.png") as im:
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), loaded.decode(codes))


def test_cli_bad_vqvae_options(tmp_path, mmlm):
    write_pngs(tmp_path / "img", blobs(3, size=16))
    data = tmp_path / "data"
    assert_clean_error(mmlm("tokenize", "image", tmp_path / "img", "--data", data, "--tokenizer", "vqvae",
                            "--image-size", 16, "--codebook", 512, "--train-steps", 2), "--codebook 512", "larger than the data")
    assert_clean_error(mmlm("tokenize", "image", tmp_path / "img", "--data", data, "--tokenizer", "vqvae",
                            "--image-size", 18, "--downsample", 4), "--image-size 18")
    assert_clean_error(mmlm("tokenize", "image", tmp_path / "img", "--data", data, "--downsample", 4), "--tokenizer vqvae")
    assert_clean_error(mmlm("tokenize", "image", tmp_path / "img", "--data", data, "--tokenizer", "vqvae", "--patch", 4),
                       "--patch")
    assert_clean_error(mmlm("tokenize", "image", tmp_path / "img", "--data", data, "--tokenizer", "vq"), "--tokenizer 'vq'")
    assert not data.exists()


def test_demo_option_trains_the_vqvae_for_both_image_datasets(tmp_path, monkeypatch):
    """build_demo(image_tokenizer="vqvae") asks tokenize_dataset for the VQ-VAE (the build itself is slow)."""
    from mmlm import dataset_build, demo_build, demo_data

    calls = {}
    monkeypatch.setattr(demo_data, "check_requirements", lambda: None)
    monkeypatch.setattr(demo_data, "build_raw", lambda raw, on_progress=None: {k: [raw / k] for k in demo_data.PARTS})
    monkeypatch.setattr(dataset_build, "tokenize_dataset", lambda kind, inputs, root, name, on_progress, **opts:
                        calls.setdefault(kind, opts))
    demo_build.build_demo(tmp_path / "demo", image_tokenizer="vqvae")
    for kind in ("image", "image-text"):
        assert calls[kind]["tokenizer"] == "vqvae" and "patch" not in calls[kind]
    calls.clear()
    demo_build.build_demo(tmp_path / "demo2")
    assert "tokenizer" not in calls["image"] and calls["image"]["patch"] == 4


def test_demo_digits_are_the_demo_pngs(tmp_path, monkeypatch):
    from PIL import Image

    from mmlm.demo_data import images

    first = images.digits()[0][:5], images.digits()[1][:5]
    monkeypatch.setattr(images, "digits", lambda: first)  # five digits and no photos: fast
    monkeypatch.setattr(images, "N_PHOTO_CROPS", 0)
    digits = images.demo_digits()
    images.build_image(tmp_path, lambda *a: None)
    assert len(digits) == 5 and digits[0].shape == (32, 32, 3)
    for i in range(5):
        with Image.open(tmp_path / f"digit_{i:04d}.png") as im:
            np.testing.assert_array_equal(np.asarray(im), digits[i])
