"""`mmlm tokenize` end to end through the console entry point, including every kind of bad input."""
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from helpers import assert_clean_error, run_main

from mmlm.shards import Dataset, list_datasets

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def mmlm(*args, **kw):
    return subprocess.run([sys.executable, "-m", "mmlm.cli.main", *map(str, args)], capture_output=True,
                          text=True, env=ENV, **kw)


def test_text_info_and_decode_end_to_end(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    docs = ["Hello, world!\n", "Zweites Dokument: größer. 🎉", "third one\twith a tab"]
    for i, d in enumerate(docs):
        (tmp_path / "in" / f"{i}.txt").write_text(d, encoding="utf-8")
    data = tmp_path / "data"
    r = mmlm("tokenize", "text", tmp_path / "in", "--data", data, "--vocab-size", 300, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["documents"] == 3 and summary["trained"] == ["text"]

    r = mmlm("tokenize", "info", "--data", data, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert set(info) == {"vocab_size", "ranges", "special", "datasets"}
    first, last = info["ranges"]["text"]
    assert first == len(info["special"]) and last == info["vocab_size"] - 1
    assert info["datasets"] == {"text": {"modality": "text", "documents": 3, "tokens": summary["tokens"]}}
    assert info["special"]["<eos>"] != info["special"]["<pad>"]

    for k, d in enumerate(docs):
        run = mmlm if k == 0 else functools.partial(run_main, capsys)  # one real process, the rest in this one
        r = run("tokenize", "decode", "--data", data, "--dataset", "text", "--doc", k, "--out", tmp_path / f"{k}.out")
        assert r.returncode == 0, r.stderr
        assert (tmp_path / f"{k}.out").read_text(encoding="utf-8") == d

    r = run_main(capsys, "tokenize", "info", "--data", data)  # the human-readable table
    assert r.returncode == 0 and "text" in r.stdout and "<eos>" not in r.stdout


def test_skipped_smiles_are_reported_and_strict_fails(tmp_path, capsys):
    (tmp_path / "m.smi").write_text("CCO\nC1CC\nc1ccccc1\nCC(C\n")
    r = run_main(capsys, "tokenize", "molecule", tmp_path / "m.smi", "--data", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    assert "skipped 2" in r.stderr and "m.smi:2: invalid SMILES 'C1CC' (unclosed ring 1)" in r.stderr
    assert Dataset(tmp_path / "d" / "molecule").meta["skipped"]["count"] == 2
    r = run_main(capsys, "tokenize", "molecule", tmp_path / "m.smi", "--data", tmp_path / "d2", "--strict")
    assert_clean_error(r, "m.smi:2: invalid SMILES 'C1CC'")
    assert not (tmp_path / "d2").exists()


def _png(path, size=8):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def _wav(path, seconds=0.2, sr=16000):
    import soundfile as sf

    sf.write(path, (0.1 * np.sin(np.arange(int(seconds * sr)) / 5)).astype(np.float32), sr, subtype="PCM_16")


def _bad_inputs(tmp: Path) -> dict:
    """name -> (argv after `mmlm tokenize`, fragments the error must hold)."""
    cases = {}
    cases["missing file"] = (["text", tmp / "nope.txt"], ["nope.txt: no such file or folder"])

    (tmp / "img").mkdir()
    _png(tmp / "img" / "a.png")
    data = (tmp / "img" / "a.png").read_bytes()
    (tmp / "img" / "b.png").write_bytes(data[: len(data) // 2])
    cases["corrupt png"] = (["image", tmp / "img", "--codebook", 4], ["b.png: not a readable PNG/JPEG image"])
    (tmp / "jpg").mkdir()
    (tmp / "jpg" / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    cases["corrupt jpeg"] = (["image", tmp / "jpg"], ["x.jpg: not a readable PNG/JPEG image"])

    (tmp / "wav").mkdir()
    _wav(tmp / "wav" / "a.wav")
    data = (tmp / "wav" / "a.wav").read_bytes()
    (tmp / "wav" / "b.wav").write_bytes(data[: len(data) // 2])
    cases["truncated wav"] = (["speech", tmp / "wav"], ["b.wav: truncated WAV"])
    (tmp / "notaudio").mkdir()
    (tmp / "notaudio" / "c.wav").write_text("just some text pretending to be audio\n" * 10)
    cases["non-audio wav"] = (["speech", tmp / "notaudio"], ["c.wav: not a readable WAV/FLAC audio file"])

    (tmp / "empty").mkdir()
    cases["empty folder"] = (["text", tmp / "empty"], ["no text files found"])
    (tmp / "blank.smi").write_text("\n\n")
    cases["empty smiles file"] = (["molecule", tmp / "blank.smi"], ["no molecule documents found (empty input)"])

    (tmp / "latin1.txt").write_bytes(b"fine\nalso fine\nna\xefve\n")
    cases["not utf-8"] = (["text", tmp / "latin1.txt"], ["latin1.txt:3: not valid UTF-8"])

    (tmp / "bad.smi").write_text("CCO\nCC)C\n")
    cases["invalid smiles strict"] = (["molecule", tmp / "bad.smi", "--strict"], ["bad.smi:2: invalid SMILES 'CC)C'"])

    _png(tmp / "ok.png")
    (tmp / "pairs.jsonl").write_text(json.dumps({"image": "ok.png", "text": "fine"}) + "\n" +
                                     json.dumps({"image": "missing.png", "text": "gone"}) + "\n")
    cases["manifest missing file"] = (["image-text", tmp / "pairs.jsonl"], ["pairs.jsonl:2: image file 'missing.png' not found"])
    (tmp / "speech.jsonl").write_text(json.dumps({"audio": "notaudio/c.wav", "text": "x"}) + "\n")
    cases["manifest bad audio"] = (["speech-text", tmp / "speech.jsonl"], ["speech.jsonl:1:", "c.wav: not a readable WAV/FLAC"])

    cases["bad option"] = (["image", tmp / "img" / "a.png", "--patch", 0], ["--patch must be a positive integer"])
    return cases


def test_bad_inputs_give_one_line_errors_and_no_dataset(tmp_path, capsys):
    cases = _bad_inputs(tmp_path)
    for i, (name, (argv, fragments)) in enumerate(cases.items()):
        data = tmp_path / f"data-{name.replace(' ', '-')}"
        run = mmlm if i < 2 else functools.partial(run_main, capsys)  # a couple through a real process, the rest here
        r = run("tokenize", *argv, "--data", data)
        assert_clean_error(r, *fragments)
        assert list_datasets(data) == [], name
        assert not data.exists(), name  # a data root this run created is not left behind


def test_incompatible_data_root_and_bad_info_decode(tmp_path, capsys):
    mmlm = functools.partial(run_main, capsys)
    (tmp_path / "t.txt").write_text("hello")
    old = tmp_path / "old"
    old.mkdir()
    (old / "vocab.json").write_text(json.dumps({"format": "mmlm-vocab/0"}))
    assert_clean_error(mmlm("tokenize", "text", tmp_path / "t.txt", "--data", old), "incompatible version")
    assert_clean_error(mmlm("tokenize", "info", "--data", tmp_path / "none"), "no such data root")
    data = tmp_path / "data"
    assert mmlm("tokenize", "text", tmp_path / "t.txt", "--data", data, "--vocab-size", 260).returncode == 0
    assert_clean_error(mmlm("tokenize", "decode", "--data", data, "--dataset", "text", "--doc", 5, "--out",
                            tmp_path / "o.txt"), "no document 5")
    assert_clean_error(mmlm("tokenize", "text", tmp_path / "t.txt", "--data", data, "--name", "t2", "--vocab-size", 999),
                       "--vocab-size 999 would retrain")


def test_killed_tokenize_leaves_no_complete_dataset_and_rerun_finishes(tmp_path):
    data = tmp_path / "data"
    (tmp_path / "seed.txt").write_text("a small text to train the tokenizer on " * 20)
    assert mmlm("tokenize", "text", tmp_path / "seed.txt", "--data", data, "--name", "seed", "--vocab-size", 300).returncode == 0
    words = np.array("the of and to in is was for on that with as by at from it an be this are".split())
    rng = np.random.default_rng(0)
    rows = [json.dumps({"text": " ".join(rng.choice(words, 150))}) for _ in range(2000)]  # ~1.5 MB, 8 chunks
    (tmp_path / "big.jsonl").write_text("\n".join(rows) + "\n")

    argv = [sys.executable, "-m", "mmlm.cli.main", "tokenize", "text", str(tmp_path / "big.jsonl"), "--data", str(data)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 60
    killed = False
    while time.time() < deadline and proc.poll() is None:
        tmps = list(data.glob(".text.tmp-*"))
        if tmps and (tmps[0] / "tokens.bin").exists() and (tmps[0] / "tokens.bin").stat().st_size > 0:
            proc.send_signal(signal.SIGKILL)  # mid-way through writing tokens
            killed = True
            break
        time.sleep(0.002)
    proc.wait()
    assert killed, "tokenize finished before it could be killed; make the input bigger"
    assert proc.returncode == -signal.SIGKILL
    assert not (data / "text").exists()
    assert list_datasets(data) == ["seed"]
    assert list(data.glob(".text.tmp-*")), "the killed run's temporary folder should still be there"

    r = mmlm("tokenize", "text", tmp_path / "big.jsonl", "--data", data, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["documents"] == 2000
    ds = Dataset(data / "text")
    ds.verify()
    assert len(ds) == 2000
    assert not list(data.glob(".text.tmp-*")), "the rerun cleans up what the killed run left"


def test_demo_names_the_missing_package(tmp_path):
    code = ("import sys; sys.modules['espeakng_loader'] = None; sys.argv = ['mmlm', 'tokenize', 'demo', '--data', "
            f"{str(tmp_path / 'demo')!r}]; from mmlm.cli.main import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert_clean_error(r, "needs espeakng-loader", "pip install espeakng-loader")
    assert not (tmp_path / "demo").exists()
