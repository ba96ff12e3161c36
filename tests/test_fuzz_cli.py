"""Every command over a table of bad inputs (issue 13's cases and earlier ones). Each must end with a
non-zero exit, no traceback, exactly one `error: ...` line naming the file or option, nothing
half-written and nothing of the user's deleted or changed.

The CLI runs in this process (`mmlm.cli.main.run`, the console script's own code path), so a case
costs milliseconds; the few that must start processes or train are marked slow."""
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from test_train_data import make_root

DEEP = "[" * 100_000 + "]" * 100_000


def _snapshot(folder: Path) -> dict:
    """Every entry under `folder` -> sha256 of a file's bytes ("dir" for a folder). Hidden lock files
    are left out: an exclusive lock is a (hidden, empty) file by nature."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.name.endswith(".lock"):
            continue
        out[str(p.relative_to(folder))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder of inputs shared by all cases (read-only for them): a data root, a run folder with
    hostile weights, bad CSVs, images, audio, manifests, JSON."""
    from PIL import Image

    w = tmp_path_factory.mktemp("fuzz")
    make_root(w / "data")
    (w / "bracket[/x]").mkdir(parents=True)
    (w / "bracket[/x]" / "a.txt").write_bytes(b"\xe9\n")
    (w / "bad.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    (w / "deep.jsonl").write_text(DEEP + "\n")
    (w / "null.jsonl").write_text('{"text": null}\n')
    (w / "img").mkdir()
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(w / "img" / "one.png")
    (w / "corrupt").mkdir()
    (w / "corrupt" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (w / "noaudio.wav").write_bytes(b"RIFF????WAVEjunk" * 8)
    (w / "mol.smi").write_text("C[nH]1cc(\n")
    (w / "m").mkdir()
    (w / "m" / "out.jsonl").write_text(json.dumps({"image": "../img/one.png", "text": "x"}) + "\n")
    (w / "m" / "etc.jsonl").write_text(json.dumps({"image": "/etc/hostname", "text": "x"}) + "\n")
    (w / "m" / "missing.jsonl").write_text(json.dumps({"image": "nope.png", "text": "x"}) + "\n")
    (w / "bom.csv").write_bytes("\ufeffN,D,Loss [nats]\n1,2,3\n".encode())
    (w / "cols.csv").write_text("size[n],D,loss\n1,2,3\n")
    (w / "ok.csv").write_text("N,D,loss\n" + "".join(f"{n},{d},{3 + 1e3 / n + 1e4 / d}\n" for n in (1e6, 2e6, 4e6) for d in (1e8, 2e8)))
    (w / "deep.json").write_text(DEEP)
    (w / "grid-bad.toml").write_text("sizes = [\n")
    (w / "grid-mix.toml").write_text(f'data = "{w / "data"}"\nsizes = ["pico"]\ntokens = [1024]\n[mixtures.a]\nnosuch = 1.0\n')
    (w / "file").write_text("a file, not a folder")
    (w / "foreign").mkdir()
    (w / "foreign" / "model.safetensors").write_bytes(b"not ours")
    (w / "foreign" / "notes.txt").write_text("mine")
    # run folders whose weights must never be loaded as they are
    cfg = {"n_layer": 1, "n_head": 1, "d_model": 8, "vocab_size": 16, "seq_len": 8}
    for name, weights in (("pickle-run", pickle.dumps({"w": 1})), ("zip-run", b"PK\x03\x04rest-of-a-torch-zip")):
        (w / name).mkdir()
        (w / name / "config.json").write_text(json.dumps({"model": cfg, "train": {"size": "pico"}}))
        (w / name / "vocab.json").write_bytes((w / "data" / "vocab.json").read_bytes())
        (w / name / "model.safetensors").write_bytes(weights)
    (w / "deep-run").mkdir()
    (w / "deep-run" / "config.json").write_text(DEEP)
    (w / "deep-run" / "vocab.json").write_bytes((w / "data" / "vocab.json").read_bytes())
    (w / "deep-run" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (w / "metrics-run").mkdir()
    (w / "metrics-run" / "metrics.jsonl").write_text(DEEP + "\n" + '{"step": 1}\n')
    return w


TRAIN = ["--size", "pico", "--seq-len", "32", "--batch-tokens", "512", "--eval-tokens", "256", "--tokens", "2048"]

# (case id, argv with {w} for the world folder, what the error line must name)
CASES = [
    # tokenize
    ("tokenize missing input", ["tokenize", "text", "{w}/nope.txt", "--data", "{w}/new-data"], "nope.txt"),
    ("tokenize bracket path not utf-8", ["tokenize", "text", "{w}/bracket[/x]", "--data", "{w}/new-data"], "bracket[/x]/a.txt:1"),
    ("tokenize bad jsonl", ["tokenize", "text", "{w}/bad.jsonl", "--data", "{w}/new-data"], "bad.jsonl:2"),
    ("tokenize deep jsonl", ["tokenize", "text", "{w}/deep.jsonl", "--data", "{w}/new-data"], "deep.jsonl:1"),
    ("tokenize null text", ["tokenize", "text", "{w}/null.jsonl", "--data", "{w}/new-data"], "'text' is null"),
    ("tokenize vocab-size 0", ["tokenize", "text", "{w}/null.jsonl", "--data", "{w}/new-data", "--vocab-size", "0"], "--vocab-size"),
    ("tokenize data is a file", ["tokenize", "text", "{w}/null.jsonl", "--data", "{w}/file"], "file"),
    ("tokenize corrupt png", ["tokenize", "image", "{w}/corrupt", "--data", "{w}/new-data"], "b.png"),
    ("tokenize image-size 100000", ["tokenize", "image", "{w}/img", "--data", "{w}/new-data", "--image-size", "100000"], "--image-size 100000"),
    ("tokenize codebook 1e6", ["tokenize", "image", "{w}/img", "--data", "{w}/new-data", "--codebook", "1000000"], "--codebook 1000000"),
    ("tokenize patch > size", ["tokenize", "image", "{w}/img", "--data", "{w}/new-data", "--patch", "64"], "--patch 64"),
    ("tokenize not audio", ["tokenize", "speech", "{w}/noaudio.wav", "--data", "{w}/new-data"], "noaudio.wav"),
    ("tokenize units 1e6", ["tokenize", "speech", "{w}/noaudio.wav", "--data", "{w}/new-data", "--units", "1000000"], "--units 1000000"),
    ("tokenize smiles with brackets", ["tokenize", "molecule", "{w}/mol.smi", "--data", "{w}/new-data", "--strict"], "C[nH]1cc("),
    ("tokenize manifest ../", ["tokenize", "image-text", "{w}/m/out.jsonl", "--data", "{w}/new-data"], "--allow-outside"),
    ("tokenize manifest /etc", ["tokenize", "image-text", "{w}/m/etc.jsonl", "--data", "{w}/new-data"], "/etc/hostname"),
    ("tokenize manifest missing media", ["tokenize", "image-text", "{w}/m/missing.jsonl", "--data", "{w}/new-data"], "nope.png"),
    ("tokenize info no root", ["tokenize", "info", "--data", "{w}/nope"], "nope"),
    ("tokenize bad option value", ["tokenize", "text", "{w}/null.jsonl", "--data", "{w}/d", "--vocab-size", "many"], "--vocab-size"),
    # train
    ("train lr inf", ["train", "--data", "{w}/data", "--mix", "text=1", "--out", "{w}/new-run", "--lr", "inf", *TRAIN], "--lr inf"),
    ("train tokens nan", ["train", "--data", "{w}/data", "--mix", "text=1", "--out", "{w}/new-run", *TRAIN, "--tokens", "nan"], "--tokens nan"),
    ("train tokens inf", ["train", "--data", "{w}/data", "--mix", "text=1", "--out", "{w}/new-run", *TRAIN, "--tokens", "inf"], "--tokens inf"),
    ("train negligible mix", ["train", "--data", "{w}/data", "--mix", "text=1e-300,image=1e300", "--out", "{w}/new-run", *TRAIN], "--mix"),
    ("train unknown dataset", ["train", "--data", "{w}/data", "--mix", "nosuch=1", "--out", "{w}/new-run", *TRAIN], "nosuch"),
    ("train out is a file", ["train", "--data", "{w}/data", "--mix", "text=1", "--out", "{w}/file", *TRAIN], "--out"),
    ("train foreign folder", ["train", "--data", "{w}/data", "--mix", "text=1", "--out", "{w}/foreign", *TRAIN], "--out"),
    ("train missing data", ["train", "--data", "{w}/nope", "--mix", "text=1", "--out", "{w}/new-run", *TRAIN], "nope"),
    ("train size unknown", ["train", "--data", "{w}/data", "--mix", "text=1", "--out", "{w}/new-run", "--size", "huge"], "--size"),
    ("train 30B on this machine", ["train", "--data", "{w}/data", "--mix", "text=1", "--out", "{w}/new-run", "--size", "30B", "--seq-len", "32", "--device", "cpu"], "--size 30B"),
    # sweep
    ("sweep missing grid", ["sweep", "{w}/nope.toml", "--out", "{w}/new-sweep"], "nope.toml"),
    ("sweep bad toml", ["sweep", "{w}/grid-bad.toml", "--out", "{w}/new-sweep"], "grid-bad.toml"),
    ("sweep bracket in grid error", ["sweep", "{w}/grid-mix.toml", "--out", "{w}/new-sweep", "--dry-run"], "nosuch"),
    ("sweep out is a file", ["sweep", "{w}/grid-mix.toml", "--out", "{w}/file"], "--out"),
    # fit
    ("fit missing file", ["fit", "{w}/nope.csv", "--out", "{w}/new-laws"], "nope.csv"),
    ("fit a folder", ["fit", "{w}", "--out", "{w}/new-laws"], "is a folder"),
    ("fit bom and bracket column", ["fit", "{w}/bom.csv", "--out", "{w}/new-laws"], "Loss [nats]"),
    ("fit bracket column", ["fit", "{w}/cols.csv", "--out", "{w}/new-laws"], "size[n]"),
    ("fit bootstrap -1", ["fit", "{w}/ok.csv", "--out", "{w}/new-laws", "--bootstrap", "-1"], "--bootstrap"),
    ("fit out is a file", ["fit", "{w}/ok.csv", "--out", "{w}/file"], "file"),
    # law
    ("law deep laws.json", ["law", "predict", "{w}/deep.json", "--n", "1e6", "--d", "1e9"], "deep.json"),
    ("law missing laws.json", ["law", "optimal", "{w}/nope.json", "--flops", "1e20"], "nope.json"),
    # generate
    ("generate missing run", ["generate", "{w}/nope-run", "--out", "{w}/new-samples"], "nope-run"),
    ("generate out is cwd", ["generate", "{w}/pickle-run", "--out", "."], "--out ."),
    ("generate out is a file", ["generate", "{w}/pickle-run", "--out", "{w}/file"], "--out"),
    ("generate out holds user files", ["generate", "{w}/pickle-run", "--out", "{w}/foreign"], "notes.txt"),
    ("generate pickle weights", ["generate", "{w}/pickle-run", "--out", "{w}/new-samples", "--device", "cpu"], "pickle"),
    ("generate torch zip weights", ["generate", "{w}/zip-run", "--out", "{w}/new-samples", "--device", "cpu"], "zip"),
    ("generate deep config", ["generate", "{w}/deep-run", "--out", "{w}/new-samples", "--device", "cpu"], "config.json"),
    ("generate num-samples 0", ["generate", "{w}/pickle-run", "--out", "{w}/new-samples", "--num-samples", "0"], "--num-samples"),
    ("generate top-p 2", ["generate", "{w}/pickle-run", "--out", "{w}/new-samples", "--top-p", "2"], "--top-p"),
    # analyze
    ("analyze missing folder", ["analyze", "{w}/nope-run", "--out", "{w}/new-analysis"], "nope-run"),
    ("analyze deep metrics line", ["analyze", "{w}/metrics-run", "--out", "{w}/new-analysis"], "metrics.jsonl:1"),
    ("analyze modality pickle", ["analyze", "modality", "--data", "{w}/data", "--a", "text", "--b", "image", "--run", "{w}/pickle-run"], "pickle"),
    ("analyze modality zip", ["analyze", "modality", "--data", "{w}/data", "--a", "text", "--b", "image", "--run", "{w}/zip-run"], "zip"),
]


@pytest.mark.parametrize("argv,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_harmless(world, argv, needle, capsys, monkeypatch):
    from mmlm.cli.main import run

    monkeypatch.chdir(world)
    monkeypatch.setenv("MMLM_MEMORY_LIMIT", str(8 << 30))  # the memory checks refuse the same way on any machine
    before = _snapshot(world)
    capsys.readouterr()
    rc = run([a.replace("{w}", str(world)) for a in argv])
    out, err = capsys.readouterr()
    assert rc != 0, (out, err)
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    after = _snapshot(world)
    assert {k: v for k, v in before.items() if after.get(k) != v} == {}, "a file of the user's was changed or deleted"
    assert sorted(set(after) - set(before)) == [], "something was left half-written"


@pytest.mark.slow
def test_a_run_whose_first_batch_fails_leaves_nothing_resumable(tmp_path, capsys):
    """Subprocess-free but trains: every id outside the vocabulary; the rerun sees the same error."""
    from mmlm.cli.main import run
    from mmlm.shards import DatasetWriter

    vocab = make_root(tmp_path / "data")
    with DatasetWriter(tmp_path / "data" / "bad") as w:
        for _ in range(40):
            w.add([vocab.size + 1] * 60)
        w.meta.update(kind="text")
    for _ in range(2):
        rc = run(["train", "--data", str(tmp_path / "data"), "--mix", "bad=1", "--out", str(tmp_path / "run"), *TRAIN])
        err = capsys.readouterr().err
        assert rc == 1 and "token ids outside the vocabulary" in err and "Traceback" not in err
        assert not (tmp_path / "run").exists() or not (tmp_path / "run" / "state").exists()
