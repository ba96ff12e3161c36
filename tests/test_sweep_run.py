"""`mmlm sweep` end to end with real (tiny) training: local pool, SIGKILL and resume, submitit, failures."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_sweep_grid import MIXTURES, make_data

from mmlm.sweep import load_grid, plan_sweep, run_sweep
from mmlm.sweep.run_folders import has_checkpoint

GRID = """
data = "{data}"
sizes = ["pico"]
tokens = [{tokens}]
""" + MIXTURES + """[train]
seq_len = 32
batch_tokens = 256
eval_tokens = 256
ckpt_every = 4
"""


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "mmlm.cli.main", *args], capture_output=True, text=True, **kw)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def expected_rows(grid):
    return sorted((r.id, ds) for r in grid.runs for ds in r.mix)


def wait_for(predicate, timeout, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        assert proc.poll() is None, f"sweep ended early: {proc.stderr.read() if proc.stderr else ''}"
        time.sleep(0.2)
    return False


def test_killed_sweep_resumes_without_losing_or_repeating_rows(tmp_path):
    data = make_data(tmp_path / "data")
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(data=data, tokens="2048, 6144"))
    grid = load_grid(path)
    out = tmp_path / "out"
    runs = [out / "runs" / r.id for r in grid.runs]
    assert len(runs) == 4

    # one worker: the runs go one after another, so one is done while the next is mid-way for most of its
    # steps (with two, the pairs of equal runs finish together and the window was a fraction of a second)
    proc = subprocess.Popen([sys.executable, "-m", "mmlm.cli.main", "sweep", str(path), "--out", str(out), "--jobs", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        def done():
            return [r for r in runs if (r / "summary.json").is_file()]
        def started():  # mid-way: a checkpoint written (what makes it resumable), no summary yet
            return [r for r in runs if has_checkpoint(r) and not (r / "summary.json").is_file()]
        assert wait_for(lambda: done() and started(), 120, proc), "no run finished while another was mid-way"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-way
        proc.wait()
        gone_by = time.monotonic() + 10
        while time.monotonic() < gone_by:  # until the workers are gone too
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    n_done_before = len(done())
    assert 1 <= n_done_before < 4
    rows = read_csv(out / "results.csv")  # whatever was there when it died is whole
    assert len({(r["run_id"], r["eval_dataset"]) for r in rows}) == len(rows)

    actions = [p["action"] for p in plan_sweep(grid, out)]
    assert actions.count("skip") == n_done_before and "resume" in actions

    report = run_sweep(grid, out, jobs=1)  # the same sweep again (in-process: spares a CLI start-up)
    assert report["counts"]["done"] == 4 and report["rows"] == 6
    rows = read_csv(out / "results.csv")
    assert sorted((x["run_id"], x["eval_dataset"]) for x in rows) == expected_rows(grid)
    for x in rows:
        assert float(x["loss"]) > 0 and int(x["n_params"]) > int(x["n_params_nonembed"]) > 0
        run = next(s for s in grid.runs if s.id == x["run_id"])
        per = {ds: int(x[f"tokens_{ds}"]) for ds in ("text", "code")}
        assert int(x["tokens"]) >= run.tokens and abs(sum(per.values()) - int(x["tokens"])) <= 1  # rows overlap by one
        assert (per["code"] > 0) == ("code" in run.mix)
    for folder in runs:  # a resumed run's log has each step exactly once
        steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, len(steps) + 1))

    before = (out / "results.csv").read_bytes()
    report = run_sweep(grid, out)  # again: nothing left to do
    assert {p["action"] for p in report["runs"]} == {"skip"} and report["rows"] == 6
    assert (out / "results.csv").read_bytes() == before


def test_submitit_local_failures_and_retry(tmp_path):
    data = make_data(tmp_path / "data")
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(data=data, tokens="1024").replace('[mixtures."text+code"]\ntext = 0.5\ncode = 0.5',
                                                                   "[mixtures.code]\ncode = 1.0"))
    grid = load_grid(path)
    code_run = next(r.id for r in grid.runs if r.mixture == "code")
    out = tmp_path / "out"
    tokens_bin = data / "code" / "tokens.bin"
    good = tokens_bin.read_bytes()
    tokens_bin.write_bytes(good[:-4])  # corrupt after the grid was checked: this run fails when it starts

    r = cli("sweep", str(path), "--out", str(out), "--launcher", "submitit-local", "--jobs", "2")
    assert r.returncode == 1
    assert f"failed {code_run}" in r.stdout and "corrupt dataset" in r.stdout
    error = (out / "runs" / code_run / "error.txt").read_text()
    assert "size does not match offsets.npy" in error.splitlines()[0]
    assert list((out / "submitit").iterdir()), "submitit wrote no job folders"
    assert [x["eval_dataset"] for x in read_csv(out / "results.csv")] == ["text"]

    plan = {p["id"]: p for p in plan_sweep(grid, out)}
    assert plan[code_run]["action"] == "failed" and "corrupt dataset" in plan[code_run]["detail"]

    tokens_bin.write_bytes(good)
    report = run_sweep(grid, out, launcher="submitit-local")  # in-process from here: spares CLI start-ups
    assert {r["id"]: r["state"] for r in report["runs"]}[code_run] == "failed"  # not retried without retry_failed
    assert len(list((out / "submitit").glob("*_result.pkl"))) == 2  # and nothing was submitted
    report = run_sweep(grid, out, launcher="submitit-local", retry_failed=True)
    assert report["counts"] == {"done": 2, "failed": 0, "interrupted": 0, "new": 0, "busy": 0}
    assert not (out / "runs" / code_run / "error.txt").exists()
    assert sorted((x["run_id"], x["eval_dataset"]) for x in read_csv(out / "results.csv")) == expected_rows(grid)


@pytest.mark.slow
def test_demo_preset_builds_its_data_and_runs(tmp_path):
    """The whole demo sweep (about 840 CPU-seconds, 7 minutes on an idle 2-core CPU, plus the demo data; docs/demo.md)."""
    data, out = tmp_path / "data", tmp_path / "out"
    t0 = time.monotonic()
    r = cli("sweep", "--preset", "demo", "--data", str(data), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    from mmlm.sweep.demo import PRESETS, preset_grid

    runs = preset_grid("demo", data).runs
    assert report["counts"]["done"] == len(runs) and report["rows"] == sum(len(x.mix) for x in runs)
    rows = read_csv(out / "results.csv")
    assert {x["eval_dataset"] for x in rows} == {*PRESETS["demo"].unimodal, "image-text"}  # + the digits model
    print(f"demo data + sweep: {time.monotonic() - t0:.0f} s")
