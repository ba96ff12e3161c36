"""Issue 13, item by item: nothing a user owns is lost, and every failure is one clear line.
Each test names its item; docs/guarantees.md lists the guarantees they check."""
import configparser
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmlm import atomic, readers
from mmlm.errors import MmlmError
from mmlm.train import TrainConfig, check, train
from test_train_data import make_root

REPO = Path(__file__).resolve().parents[1]
TINY = dict(size="pico", seq_len=32, batch_tokens=512, threads=1, eval_tokens=256, tokens=2048)


def mmlm(capsys, *args):
    """The CLI in this process: (exit code, stdout, stderr)."""
    from mmlm.cli.main import run

    rc = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(rc, err, *needles):
    assert rc != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("data")
    make_root(r)
    return r


def _samples(n=1):
    return [{"tokens": [1, 2], "segments": [{"modality": "text", "start": 0, "end": 2, "item": f"hello {k}"}],
             "settings": {}} for k in range(n)]


# ---- 1. an output folder never loses files mmlm did not write --------------------------------------

def test_01_generate_output_keeps_user_files(tmp_path):
    from mmlm.generate import write_samples

    out = tmp_path / "out"
    write_samples(_samples(3), out)
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "keep.txt").write_text("mine too")
    with pytest.raises(MmlmError, match="files mmlm did not write"):
        write_samples(_samples(1), out)
    assert (out / "notes.txt").read_text() == "mine" and (out / "sub" / "keep.txt").read_text() == "mine too"
    assert (out / "sample-3.txt").is_file()  # the earlier output is untouched too
    (out / "notes.txt").unlink()
    (out / "sub" / "keep.txt").unlink()
    (out / "sub").rmdir()
    write_samples(_samples(1), out)  # an earlier output alone is replaced whole
    assert sorted(p.name for p in out.iterdir()) == ["sample-1.txt", "samples.jsonl"]


# ---- 2. one training per run folder ---------------------------------------------------------------

def test_02_second_writer_of_a_run_folder_is_refused_naming_the_holder(root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from mmlm import atomic\n"
                               f"with atomic.exclusive({str(run / '.train.lock')!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MmlmError, match=rf"another training is writing to this run folder \(pid {holder.pid} "):
            train(TrainConfig(data=str(root), out=str(run), mix="text=1", **TINY))
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in run.iterdir()) == [".train.lock"]  # nothing written by the refused run


def test_02_lock_is_exclusive_and_goes_with_its_holder(tmp_path):
    lock = tmp_path / "x.lock"
    with atomic.exclusive(lock):
        with pytest.raises(atomic.Locked, match=r"locked by pid \d+ on "):
            with atomic.exclusive(lock):
                pass
    with atomic.exclusive(lock):  # released
        pass
    killed = subprocess.Popen([sys.executable, "-c", f"from mmlm import atomic; import os\nwith atomic.exclusive({str(lock)!r}): os._exit(9)"])
    killed.wait()
    with atomic.exclusive(lock):  # a killed holder leaves no stale lock
        pass


# ---- 3. a non-empty folder that is not this run is never replaced -----------------------------------

def test_03_train_refuses_a_foreign_folder(root, tmp_path, capsys):
    out = tmp_path / "other"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"someone else's weights")
    rc, _, err = mmlm(capsys, "train", "--data", root, "--mix", "text=1", "--out", out, "--size", "pico",
                      "--seq-len", 32, "--batch-tokens", 512, "--tokens", 2048, "--eval-tokens", 256)
    one_line(rc, err, "--out", "not empty", "model.safetensors")
    assert (out / "model.safetensors").read_bytes() == b"someone else's weights"
    assert sorted(p.name for p in out.iterdir()) == [".train.lock", "model.safetensors"]  # only the (hidden, empty) lock file added


# ---- 4. 16-bit PNG is scaled, not clipped ---------------------------------------------------------

def test_04_sixteen_bit_png_is_scaled(tmp_path):
    from PIL import Image

    grey = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (4, 1))
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode.startswith("I")
    rgb = readers.read_image(tmp_path / "g.png")
    np.testing.assert_allclose(rgb[0, :, 0], np.linspace(0, 255, 16), atol=1)  # clipping gave 255 for all but 0


# ---- 5. a run that never trained leaves nothing resumable ------------------------------------------

def test_05_failed_first_batch_leaves_no_checkpoint(tmp_path):
    from mmlm.shards import DatasetWriter

    data = tmp_path / "data"
    vocab = make_root(data)
    with DatasetWriter(data / "bad") as w:  # every id outside the vocabulary
        for _ in range(40):
            w.add([vocab.size + 5] * 60)
        w.meta.update(kind="text")
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), mix="bad=1", **TINY)
    for _ in range(2):  # the rerun gets the same real error, not "already holds a run"
        with pytest.raises(MmlmError, match="token ids outside the vocabulary"):
            train(cfg)
        assert not (tmp_path / "run" / "state").exists()


# ---- 6. brackets in user text survive every message --------------------------------------------------

def test_06_brackets_in_paths_smiles_and_columns(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "w[/x]"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"\xe9\n")
    rc, _, err = mmlm(capsys, "tokenize", "text", folder, "--data", tmp_path / "d")
    one_line(rc, err, "w[/x]/a.txt:1: not valid UTF-8")
    (tmp_path / "m.smi").write_text("C[nH]1cc(\n")
    rc, _, err = mmlm(capsys, "tokenize", "molecule", tmp_path / "m.smi", "--data", tmp_path / "d", "--strict")
    one_line(rc, err, "C[nH]1cc(")
    (tmp_path / "r.csv").write_text("[size],D,loss\n1,2,3\n")
    rc, _, err = mmlm(capsys, "fit", tmp_path / "r.csv", "--out", tmp_path / "laws")
    one_line(rc, err, "[size]")
    (tmp_path / "ok.txt").write_text("hello [demo] world\n")  # success output (a rich table) keeps them too
    monkeypatch.chdir(tmp_path)  # a short path: the table must not wrap it
    rc, out, err = mmlm(capsys, "tokenize", "text", "ok.txt", "--data", "d[/y]", "--vocab-size", 300)
    assert rc == 0 and "d[/y]/text" in out, err


# ---- 7. a failed trainer build reports its real error -------------------------------------------------

def test_07_failed_build_shows_its_own_error(root, tmp_path, monkeypatch):
    import mmlm.train.trainer as T

    def broken(*a, **k):
        raise MmlmError("the real reason")

    monkeypatch.setattr(T, "GPT", broken)
    with pytest.raises(MmlmError, match="the real reason"):
        train(TrainConfig(data=str(root), out=str(tmp_path / "r"), mix="text=1", **TINY))
    with pytest.raises(MmlmError, match="--mix .*negligible share"):
        check(TrainConfig(data=str(root), out=str(tmp_path / "r2"), mix="text=1e-300,image=1e300", **TINY))


# ---- 8. OS errors are one line naming the path --------------------------------------------------------

def test_08_os_errors_are_one_line(root, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    rc, _, err = mmlm(capsys, "train", "--data", root, "--mix", "text=1", "--out", tmp_path / "file")
    one_line(rc, err, "file: exists and is not a folder")
    (tmp_path / "grid.toml").write_text(f'data = "{root}"\nsizes = ["pico"]\ntokens = [1024]\n[mixtures.text]\ntext = 1.0\n')
    rc, _, err = mmlm(capsys, "sweep", tmp_path / "grid.toml", "--out", tmp_path / "file")
    one_line(rc, err, "file", "not a folder")
    monkeypatch.chdir(tmp_path)
    rc, _, err = mmlm(capsys, "generate", tmp_path / "norun", "--out", ".")
    one_line(rc, err, "--out .", "current")
    # what an unwritable folder (chattr +i) raises, wherever it is raised
    import mmlm.cli.fit as fit_cli

    def denied(*a, **k):
        raise PermissionError(1, "Operation not permitted", str(tmp_path / "laws" / "laws.json"))

    monkeypatch.setattr(fit_cli, "read_table", denied, raising=False)
    import mmlm.laws.table as table

    monkeypatch.setattr(table, "read_table", denied)
    (tmp_path / "r.csv").write_text("N,D,loss\n1,2,3\n")
    rc, _, err = mmlm(capsys, "fit", tmp_path / "r.csv", "--out", tmp_path / "laws")
    one_line(rc, err, "laws.json: Operation not permitted")


# ---- 9. one JSON reader: deep nesting, non-UTF-8 --------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("what", ["vocab", "meta", "config", "text", "metrics", "laws"])
def test_09_deep_or_non_utf8_json_is_one_line(what, tmp_path, root):
    from mmlm.analysis.run_records import read_metrics
    from mmlm.checkpoint import load_model
    from mmlm.laws.fitted import load_laws as read_laws
    from mmlm.shards import Dataset
    from mmlm.tokenizers.text import BPETokenizer
    from mmlm.vocab import Vocab

    path = tmp_path / {"vocab": "vocab.json", "meta": "ds/meta.json", "config": "config.json",
                       "text": "text.json", "metrics": "metrics.jsonl", "laws": "laws.json"}[what]
    path.parent.mkdir(exist_ok=True)
    load = {"vocab": lambda: Vocab.load(path), "meta": lambda: Dataset(path.parent), "config": lambda: load_model(tmp_path),
            "text": lambda: BPETokenizer.load(path), "metrics": lambda: read_metrics(path), "laws": lambda: read_laws(path)}[what]
    for content in (DEEP.encode(), b'{"format": "\xe9"}'):
        path.write_bytes(content + (b"\n{}\n" if what == "metrics" else b""))
        with pytest.raises(MmlmError, match=str(path.name)):
            load()


# ---- 10. one model loader: analyze refuses a pickle as generate does -----------------------------------

def test_10_analyze_refuses_pickled_weights(tmp_path):
    import pickle

    from mmlm.analysis.modality import _load_model

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"n_layer": 1, "n_head": 1, "d_model": 8, "vocab_size": 16, "seq_len": 8}}))
    (run / "model.safetensors").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(MmlmError, match="not a safetensors file .*pickle"):
        _load_model(run, 16, "cpu")


# ---- 11. workers import the installed package, and their error reaches the parent -----------------------

def test_11_workers_cannot_import_the_current_folder_and_report_their_error():
    from mmlm import distributed
    from mmlm.errors import last_error_line
    from mmlm.subprocs import SAFE_ENV, SAFE_PYTHON

    assert distributed.torchrun_command(2, [])[1] == "-P" and SAFE_ENV == {"PYTHONSAFEPATH": "1"}
    assert SAFE_PYTHON.endswith(" -P")
    r = subprocess.run([sys.executable, "-P", "-c", "import sys; print('' in sys.path)"], capture_output=True,
                       text=True, env={"PYTHONSAFEPATH": "1"}, cwd=REPO)
    assert r.stdout.strip() == "False"
    torchrun_stderr = """[rank0]: Traceback (most recent call last):
[rank0]:   File "x.py", line 3, in <module>
ModuleNotFoundError: No module named 'mmlm.kernels.aggregate'
E1201 12:00:00 torch/distributed/elastic/multiprocessing/api.py:874] failed (exitcode: 1)
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
"""
    assert last_error_line(torchrun_stderr) == "ModuleNotFoundError: No module named 'mmlm.kernels.aggregate'"
    assert last_error_line("noise\nerror: data/x: no such file\n====\n") == "data/x: no such file"


# ---- 12. sizes checked before allocating ---------------------------------------------------------------

def test_12_image_size_codebook_units_are_bounded(tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("MMLM_MEMORY_LIMIT", str(8 << 30))
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    t0 = time.perf_counter()
    for args, needle in ((["--image-size", 100000], "--image-size 100000: would need about"),
                         (["--codebook", 1000000], "--codebook 1000000"),
                         (["--codebook", 100], "only 64 patches")):
        rc, _, err = mmlm(capsys, "tokenize", "image", tmp_path / "img", "--data", tmp_path / "d", *args)
        one_line(rc, err, needle)
    rc, _, err = mmlm(capsys, "tokenize", "speech", tmp_path / "img", "--data", tmp_path / "d", "--units", 1000000)
    one_line(rc, err, "--units 1000000")
    assert time.perf_counter() - t0 < 20 and not (tmp_path / "d").exists()


def test_12_vocab_size_from_config_checked_against_the_weights_header(tmp_path):
    import torch
    from safetensors.torch import save_file

    from mmlm.checkpoint import load_model
    from mmlm.model import GPT, GPTConfig

    cfg = GPTConfig(n_layer=1, n_head=1, d_model=8, vocab_size=16, seq_len=8)
    save_file({k: v.contiguous() for k, v in GPT(cfg).state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model": {**cfg.to_json(), "vocab_size": 1_000_000_000}}))
    t0 = time.perf_counter()
    with pytest.raises(MmlmError, match=r"wte.weight has shape \(16, 8\)"):
        load_model(tmp_path)
    assert time.perf_counter() - t0 < 10  # refused from the header, nothing of a billion rows allocated
    (tmp_path / "config.json").write_text(json.dumps({"model": cfg.to_json()}))
    model, _ = load_model(tmp_path)
    assert isinstance(model, torch.nn.Module)


def test_12_num_samples_memory_is_estimated(monkeypatch):
    from mmlm.generate import SampleSettings, _check_batch_memory
    from mmlm.model import GPTConfig

    cfg = GPTConfig(n_layer=2, n_head=2, d_model=48, vocab_size=500, seq_len=256)
    monkeypatch.setenv("MMLM_MEMORY_LIMIT", str(1 << 30))
    _check_batch_memory(cfg, SampleSettings(num_samples=4), 10, 100, False)
    with pytest.raises(MmlmError, match=r"--num-samples 100000000: would need about .* GB"):
        _check_batch_memory(cfg, SampleSettings(num_samples=100_000_000), 10, 100, False)


# ---- 13. text is tokenized in bounded pieces, with the same result -------------------------------------

def test_13_text_pieces_bound_memory_and_keep_the_ids(monkeypatch, tmp_path):
    import random

    from mmlm.encode import encode_texts
    from mmlm.tokenizers.text import TEXT_PIECE, BPETokenizer, text_pieces

    rnd = random.Random(0)
    words = ["".join(rnd.choice("abcdefgh") for _ in range(rnd.randint(1, 7))) for _ in range(300)]
    text = "".join(rnd.choice(words) + rnd.choice([" ", " ", "  ", "\n", ", ", "\n\n"]) for _ in range(20000))
    assert "".join(text_pieces(text, 4096)) == text
    whole = BPETokenizer.train([text], vocab_size=300)
    pieces = BPETokenizer.train(text_pieces(text, 4096), vocab_size=300)
    assert whole._tok.to_str() == pieces._tok.to_str()  # the same merges
    seen = []
    orig = BPETokenizer.encode_batch
    monkeypatch.setattr(BPETokenizer, "encode_batch", lambda self, texts: seen.append(max(map(len, texts))) or orig(self, texts))
    np.testing.assert_array_equal(next(encode_texts(whole, [text])), whole.encode(text))
    assert max(seen) <= TEXT_PIECE < len(text)  # never the whole document at once


# ---- 14. infinite and NaN settings -----------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [("lr", float("inf")), ("tokens", float("nan")), ("tokens", float("inf"))])
def test_14_non_finite_settings_are_refused(root, tmp_path, key, value):
    with pytest.raises(MmlmError, match=f"--{key} {value}: must be a finite number"):
        check(TrainConfig(data=str(root), out=str(tmp_path / "r"), mix="text=1", **{**TINY, key: value}))


# ---- 15. JSONL lines end at "\n" only ----------------------------------------------------------------------

def test_15_jsonl_with_unicode_line_separators(tmp_path):
    texts = ["a\u2028b", "c\u0085d\u2029e", "f\x1cg"]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert readers.read_text_documents(tmp_path / "t.jsonl") == texts


# ---- 16. fit: BOM, duplicated rows, a folder -----------------------------------------------------------------

def test_16_fit_csv_bom_duplicates_and_folder(tmp_path, capsys):
    from mmlm.laws.table import read_table

    (tmp_path / "r.csv").write_bytes("\ufeffN,D,loss\n1e6,1e8,3.1\n1e6,1e8,3.1\n2e6,1e8,3.0\n".encode())
    table = read_table(tmp_path / "r.csv")
    assert len(table.records) == 3 and table.duplicates == 1
    rc, _, err = mmlm(capsys, "fit", tmp_path / "r.csv", "--out", tmp_path / "laws")
    assert "1 duplicated row(s)" in err and "\\ufeff" not in err
    rc, _, err = mmlm(capsys, "fit", tmp_path, "--out", tmp_path / "laws")
    one_line(rc, err, "is a folder")


# ---- 17. manifest paths stay in the manifest's folder -----------------------------------------------------------

def test_17_manifest_outside_paths_need_allow_outside(tmp_path):
    from PIL import Image

    (tmp_path / "m").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "outside.png")
    for media in ("../outside.png", str(tmp_path / "outside.png")):
        (tmp_path / "m" / "pairs.jsonl").write_text(json.dumps({"image": media, "text": "x"}) + "\n")
        with pytest.raises(MmlmError, match="outside the manifest's folder .*--allow-outside"):
            readers.read_manifest(tmp_path / "m" / "pairs.jsonl", "image")
        assert len(readers.read_manifest(tmp_path / "m" / "pairs.jsonl", "image", allow_outside=True)) == 1


# ---- 18. messages ---------------------------------------------------------------------------------------------

def test_18_messages(tmp_path, capsys):
    (tmp_path / "t.jsonl").write_text('{"text": null}\n{"other": 1}\n')
    with pytest.raises(MmlmError, match="field 'text' is null, not a string"):
        readers.read_text_documents(tmp_path / "t.jsonl")
    (tmp_path / "u.jsonl").write_text('{"other": 1}\n')
    with pytest.raises(MmlmError, match="field 'text' is missing"):
        readers.read_text_documents(tmp_path / "u.jsonl")
    (tmp_path / "a.wav").write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(MmlmError) as e:
        readers.read_audio(tmp_path / "a.wav")
    assert "<_io" not in str(e.value) and "0x" not in str(e.value) and "a.wav" in str(e.value)
    (tmp_path / "r.csv").write_text("N,D,loss\n1,2,3\n")
    rc, _, err = mmlm(capsys, "fit", tmp_path / "r.csv", "--bootstrap", -1)
    one_line(rc, err, "--bootstrap")


# ---- Python version ---------------------------------------------------------------------------------------------

def test_python_version_is_required_everywhere():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["options"]["python_requires"].strip() == ">=3.11"
    assert "3, 11" in (REPO / ".ci" / "run").read_text()
    assert sys.version_info >= (3, 11)


def test_01_tokenize_never_replaces_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    (tmp_path / "data" / "mine").mkdir(parents=True)
    (tmp_path / "data" / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "a.txt").write_text("some text to tokenize\n")
    rc, _, err = mmlm(capsys, "tokenize", "text", tmp_path / "a.txt", "--data", tmp_path / "data", "--name", "mine")
    one_line(rc, err, "mine: exists and is not a dataset")
    assert (tmp_path / "data" / "mine" / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["mine"]


def test_08_immutable_folder_is_one_line(root, tmp_path, capsys):
    """A real `chattr +i` folder (skipped where chattr is not allowed, e.g. without root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        (tmp_path / "a.txt").write_text("some text\n")
        rc, _, err = mmlm(capsys, "tokenize", "text", tmp_path / "a.txt", "--data", ro / "d", "--vocab-size", 300)
        one_line(rc, err, "ro/d: Operation not permitted")
        rc, _, err = mmlm(capsys, "train", "--data", root, "--mix", "text=1", "--out", ro / "run")
        one_line(rc, err, "ro/run: Operation not permitted")
    finally:
        subprocess.run(["chattr", "-i", str(ro)])
    assert list(ro.iterdir()) == []
