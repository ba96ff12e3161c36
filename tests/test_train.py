"""`mmlm train` end to end: outputs, bad input, restarts, and exact resume after SIGKILL."""
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmlm import checkpoint
from mmlm.errors import MmlmError
from mmlm.speed import SPEED_KEYS, SUMMARY_KEYS
from mmlm.train import TrainConfig, check, train
from test_train_data import make_root

TINY = ["--size", "pico", "--seq-len", "32", "--batch-tokens", "512", "--threads", "1", "--eval-tokens", "256"]


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "mmlm.cli.main", *map(str, args)], capture_output=True, text=True, **kw)


def popen(*args):
    return subprocess.Popen([sys.executable, "-m", "mmlm.cli.main", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tree_digest(folder: Path) -> dict:
    """Every file under a folder with its sha256 (to show nothing was touched)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics(run: Path, timing: bool = False) -> list[dict]:
    """metrics.jsonl's lines, without the wall-clock speed fields unless `timing`."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return lines if timing else [{k: v for k, v in m.items() if k not in SPEED_KEYS} for m in lines]


def untimed(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in SUMMARY_KEYS}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("data")
    make_root(r)
    return r


@pytest.fixture(scope="module")
def done_run(root, tmp_path_factory):
    """One complete small run through the CLI (shared by several tests)."""
    run = tmp_path_factory.mktemp("runs") / "a"
    r = cli("train", "--data", root, "--mix", "text=0.5,image=0.5", "--tokens", "1e4", "--out", run,
            "--eval-every", "5", "--ckpt-every", "4", "--json", *TINY)
    assert r.returncode == 0, r.stderr
    return run, json.loads(r.stdout)


def test_cli_run_writes_documented_outputs(done_run, root):
    run, summary = done_run
    steps = -(-10_000 // 512)
    assert json.loads((run / "summary.json").read_text()) == summary
    assert summary["status"] == "done" and summary["steps"] == steps and summary["tokens"] == steps * 512
    assert summary["flops"] == 6 * summary["n_params"] * summary["tokens"]
    assert set(summary["eval_loss"]) == {"text", "image"} and summary["restarts"] == 0
    tbd = summary["tokens_by_dataset"]
    assert abs(tbd["text"] + tbd["image"] - summary["tokens"]) <= 1
    assert abs(tbd["text"] - tbd["image"]) < 200  # 50/50 within about a document
    lines = metrics(run)
    assert [m["step"] for m in lines] == list(range(1, steps + 1))
    for m in lines:
        assert {"step", "tokens", "lr", "loss", "grad_norm", "loss/text", "loss/image"} <= set(m)
    evals = [m for m in lines if "eval/text" in m]
    assert [m["step"] for m in evals] == [5, 10, 15, 20]
    assert evals[-1]["eval/image"] == summary["eval_loss"]["image"]
    assert lines[-1]["loss"] < lines[0]["loss"] - 0.5  # it learns
    # the weighted per-dataset losses average to the step loss
    for m in lines[:3]:
        assert min(m["loss/text"], m["loss/image"]) <= m["loss"] <= max(m["loss/text"], m["loss/image"])
    config = json.loads((run / "config.json").read_text())
    assert config["vocab_sha256"] == hashlib.sha256((root / "vocab.json").read_bytes()).hexdigest()
    assert config["train"]["mix"] == "text=0.5,image=0.5" and config["model"]["seq_len"] == 32
    assert (run / "vocab.json").read_bytes() == (root / "vocab.json").read_bytes()
    # the published weights are the last checkpoint's, and load into the model
    model, _ = checkpoint.load_model(run)
    ckpts = checkpoint.checkpoints(run)
    assert [s for s, _ in ckpts] == [steps]
    assert (run / "model.safetensors").read_bytes() == (ckpts[0][1] / "model.safetensors").read_bytes()
    assert sum(p.numel() for p in model.parameters()) == summary["n_params"]


def test_list_sizes_json():
    r = cli("train", "--list-sizes", "--json")
    assert r.returncode == 0, r.stderr
    table = json.loads(r.stdout)
    assert set(table["pico"]) >= {"n_params", "n_params_nonembed", "layers", "d_model", "heads"}
    assert table["125M"]["layers"] == 12 and table["30B"]["d_model"] == 7168


def test_cli_bad_input_is_one_line_and_touches_nothing(done_run, root, tmp_path):
    run, _ = done_run
    before = tree_digest(run)
    base = ["train", "--data", root, "--tokens", "1e4", *TINY]
    cases = {
        "unknown size": (["--mix", "text=1", "--out", tmp_path / "r1", "--size", "huge"], "--size 'huge'"),
        "weight not positive": (["--mix", "text=1,image=0", "--out", tmp_path / "r2"], "must be positive"),
        "budget below one step": (["--mix", "text=1", "--out", tmp_path / "r3", "--tokens", "100"], "too small for one step"),
        "existing run": (["--mix", "text=0.5,image=0.5", "--out", run], "use --resume"),
    }
    procs = {name: popen(*base, *args) for name, (args, _) in cases.items()}
    for name, p in procs.items():
        out, err = p.communicate()
        assert p.returncode == 1, (name, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and cases[name][1] in lines[0], (name, err)
        assert "Traceback" not in err and out == ""
    for i in range(1, 4):
        assert not (tmp_path / f"r{i}").exists()
    assert tree_digest(run) == before


def test_bad_data_is_refused_before_anything_is_written(done_run, root, tmp_path):
    import shutil

    with pytest.raises(MmlmError, match="no dataset 'code'"):
        train(_small_cfg(root, tmp_path / "a", mix="text=1,code=1"))
    with pytest.raises(MmlmError, match="no such folder"):
        train(_small_cfg(tmp_path / "missing", tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    # resuming with a data root of another vocabulary
    run = tmp_path / "copy"
    shutil.copytree(done_run[0], run)
    before = tree_digest(run)
    other = tmp_path / "other"
    make_root(other, extra_space="molecule")
    with pytest.raises(MmlmError, match="vocab.json differs"):
        train(TrainConfig(**{**_resume_cfg(root, run).__dict__, "data": str(other)}))
    assert tree_digest(run) == before


def test_cli_refuses_corrupt_checkpoint(done_run, root, tmp_path):
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(done_run[0], corrupt)
    opt = checkpoint.latest(corrupt) / "optimizer.safetensors"
    data = bytearray(opt.read_bytes())
    data[-5] ^= 0xFF
    opt.write_bytes(bytes(data))
    before = tree_digest(corrupt)
    r = cli("train", "--data", root, "--out", corrupt, "--resume")
    assert r.returncode == 1 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "optimizer.safetensors: corrupt checkpoint (checksum mismatch)" in r.stderr
    assert tree_digest(corrupt) == before


def _kill_when(proc, run: Path, min_step: int, timeout=120):
    """SIGKILL proc once a checkpoint of at least min_step exists (or proc ends)."""
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout:
        found = checkpoint.checkpoints(run)
        if found and found[-1][0] >= min_step:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()


def test_sigkilled_run_resumes_to_identical_weights(root, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    opts = dict(mix="text=0.3,image=0.7", tokens=12000, ckpt_every=3, eval_every=7, objective="cm3")
    args = ["--data", root, "--mix", opts["mix"], "--tokens", opts["tokens"], "--ckpt-every", 3, "--eval-every", 7,
            "--objective", "cm3", *TINY]
    pb = popen("train", *args, "--out", b)
    sa = train(_small_cfg(root, a, **opts))  # the uninterrupted run, here while b runs
    _kill_when(pb, b, 6)  # mid-run, after some checkpoints
    assert pb.returncode == -signal.SIGKILL
    assert checkpoint.checkpoints(b)[-1][0] < sa["steps"]
    r = cli("train", "--out", b, "--resume", "--data", root, "--json")  # settings come from config.json
    assert r.returncode == 0, r.stderr
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert metrics(a) == metrics(b)  # every step once, same losses, same evals
    assert untimed(sa) == untimed(json.loads(r.stdout)) == untimed(json.loads((b / "summary.json").read_text()))


def _resume_cfg(root, run):
    return TrainConfig(data=str(root), out=str(run), mix="text=0.5,image=0.5", tokens=1e4, size="pico", seq_len=32,
                       batch_tokens=512, eval_tokens=256, eval_every=5, ckpt_every=4, resume=True, threads=1)


def test_resume_of_a_finished_run_changes_nothing_and_other_settings_are_refused(done_run, root, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(done_run[0], run)
    weights = (run / "model.safetensors").read_bytes()
    cfg = _resume_cfg(root, run)
    # as a kill can leave them: published weights missing, a half-written checkpoint folder
    (run / "model.safetensors").unlink()
    stale = run / "state" / ".step-000000099.tmp-999999-x"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    summary = train(cfg)
    assert summary == done_run[1]
    assert (run / "model.safetensors").read_bytes() == weights
    assert not stale.exists()
    with pytest.raises(MmlmError, match="--resume: lr is 0.1"):
        check(TrainConfig(**{**cfg.__dict__, "lr": 0.1}))
    with pytest.raises(MmlmError, match="--resume: mix"):
        check(TrainConfig(**{**cfg.__dict__, "mix": "text=0.7,image=0.3"}))


def _small_cfg(root, out, **kw):
    base = dict(data=str(root), out=str(out), mix="text=1,image=1", size="pico", seq_len=32, batch_tokens=512,
                tokens=512 * 12, eval_tokens=256, ckpt_every=4, threads=1)
    return TrainConfig(**{**base, **kw})


def test_check_rejects_impossible_settings(root, tmp_path):
    with pytest.raises(MmlmError, match="do not split evenly over 3 processes"):
        check(_small_cfg(root, tmp_path / "x", nproc=3))
    with pytest.raises(MmlmError, match="less than one row"):
        check(_small_cfg(root, tmp_path / "x", batch_tokens=16))
    with pytest.raises(MmlmError, match="--objective 'mlm'"):
        check(_small_cfg(root, tmp_path / "x", objective="mlm"))
    with pytest.raises(MmlmError, match="xformers: needs a CUDA"):
        check(_small_cfg(root, tmp_path / "x", attention="xformers", device="cpu"))
    assert not (tmp_path / "x").exists()


def _poison_forward(monkeypatch, calls_to_poison):
    """Make some forward passes return NaN logits (a diverging run, on demand)."""
    from mmlm.model import GPT

    real = GPT.forward
    count = {"n": 0}

    def forward(self, idx, kv_cache=None, last_only=False):
        logits, cache = real(self, idx, kv_cache, last_only)
        if self.training:
            count["n"] += 1
            if count["n"] in calls_to_poison:
                logits = logits * float("nan")
        return logits, cache

    monkeypatch.setattr(GPT, "forward", forward)


def test_nan_loss_restores_last_checkpoint_with_lower_lr(root, tmp_path, monkeypatch):
    _poison_forward(monkeypatch, {7})  # the 7th update (one micro-batch per update)
    events = []
    s = train(_small_cfg(root, tmp_path / "r"), on_log=events.append)
    assert s["status"] == "done" and s["restarts"] == 1 and s["steps"] == 12
    restart = [e for e in events if e["event"] == "restart"]
    assert len(restart) == 1 and restart[0]["step"] == 4 and "loss was nan at step 7" in restart[0]["reason"]
    lines = metrics(tmp_path / "r")
    assert [m["step"] for m in lines] == list(range(1, 13))  # replayed steps appear once
    assert "restarts" not in lines[3] and lines[4]["restarts"] == 1
    ref = [e for e in events if e["event"] == "step" and e["step"] == 5]
    assert ref[1]["lr"] == pytest.approx(0.8 * ref[0]["lr"])  # the same step again, at 0.8x


def test_unrecoverable_run_stops_with_last_good_checkpoint(root, tmp_path, monkeypatch):
    _poison_forward(monkeypatch, set(range(6, 100)))
    run = tmp_path / "r"
    s = train(_small_cfg(root, run, max_restarts=2))
    assert s["status"].startswith("stopped: loss was nan at step 5") and "gave up after 2 restart(s)" in s["status"]
    assert s["steps"] == 4 and json.loads((run / "summary.json").read_text())["status"] == s["status"]
    (step, ckpt), = checkpoint.checkpoints(run)
    assert step == 4
    checkpoint.verify(ckpt)
    assert (run / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()
    assert all(torch.isfinite(v).all() for v in checkpoint.load(ckpt)[0].values())


def test_stall_rule_restarts(root, tmp_path):
    # a learning rate too small to move the loss: the smoothed loss stalls
    s = train(_small_cfg(root, tmp_path / "r", lr=1e-9, stall_tokens=512 * 3, max_restarts=1, tokens=512 * 30))
    assert s["restarts"] == 1 and s["status"].startswith("stopped: training loss stalled")


def test_gradient_accumulation_matches_one_big_batch(root, tmp_path):
    a = train(_small_cfg(root, tmp_path / "a", tokens=512 * 3))
    b = train(_small_cfg(root, tmp_path / "b", tokens=512 * 3, micro_batch=3))  # 16 rows as 3+3+3+3+3+1
    la, lb = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    for x, y in zip(la, lb):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["loss/text"] == pytest.approx(y["loss/text"], rel=1e-5)
    assert a["eval_loss"]["text"] == pytest.approx(b["eval_loss"]["text"], rel=1e-4)


def _compare_runs(a: Path, b: Path, sa: dict, sb: dict, rel: float) -> None:
    ma, mb = metrics(a), metrics(b)
    assert len(ma) == len(mb) > 0
    for x, y in zip(ma, mb):
        for k in ("loss", "loss/text", "loss/image", "grad_norm"):
            assert x[k] == pytest.approx(y[k], rel=rel, abs=1e-6), (x["step"], k)
    assert sa["tokens_by_dataset"] == sb["tokens_by_dataset"]
    for k in sa["eval_loss"]:
        assert sa["eval_loss"][k] == pytest.approx(sb["eval_loss"][k], rel=rel)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one(root, tmp_path, mode):
    one = train(_small_cfg(root, tmp_path / "one", tokens=512 * 8, mix="text=0.5,image=0.5"))
    args = ["--data", root, "--mix", "text=0.5,image=0.5", "--tokens", 512 * 8, "--ckpt-every", "4", *TINY]
    extra = ["--fsdp"] if mode == "fsdp" else []
    two = cli("train", *args, "--out", tmp_path / "two", "--nproc", "2", "--json", *extra)
    assert two.returncode == 0, two.stderr
    _compare_runs(tmp_path / "one", tmp_path / "two", one, json.loads(two.stdout), rel=1e-4)
    if mode == "fsdp":  # the sharded checkpoint loads back (resume of the finished run)
        weights = (tmp_path / "two" / "model.safetensors").read_bytes()
        again = cli("train", "--out", tmp_path / "two", "--data", root, "--resume", "--nproc", "2", "--json", *extra)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout) == json.loads(two.stdout)
        assert (tmp_path / "two" / "model.safetensors").read_bytes() == weights


@pytest.mark.slow
def test_fsdp2_run_killed_mid_run_resumes_to_the_uninterrupted_weights(root, tmp_path):
    """FSDP2 (fully_shard per block) over two gloo processes: a SIGKILL mid-run, then --resume through
    torch.distributed.checkpoint's state-dict helpers, ends with the weights of an uninterrupted run."""
    args = ["--data", root, "--mix", "text=0.5,image=0.5", "--tokens", 512 * 12, "--ckpt-every", 3, "--fsdp",
            "--nproc", 2, *TINY]
    whole = cli("train", *args, "--out", tmp_path / "whole", "--json")
    assert whole.returncode == 0, whole.stderr
    import os

    pb = subprocess.Popen([sys.executable, "-m", "mmlm.cli.main", "train", *map(str, args), "--out", str(tmp_path / "b")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    while pb.poll() is None and time.time() - t0 < 300:
        found = checkpoint.checkpoints(tmp_path / "b")
        if found and found[-1][0] >= 6:
            os.killpg(pb.pid, signal.SIGKILL)  # the launcher and both torchrun workers
            break
        time.sleep(0.05)
    pb.wait()
    time.sleep(1)
    assert checkpoint.checkpoints(tmp_path / "b")[-1][0] < 12
    again = cli("train", "--out", tmp_path / "b", "--data", root, "--resume", "--nproc", 2, "--fsdp", "--json")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert metrics(tmp_path / "whole") == metrics(tmp_path / "b")
