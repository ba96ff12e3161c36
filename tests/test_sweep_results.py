"""Run-folder states, the sweep plan and results.csv, from run folders laid out as train writes them."""
import csv
import json

import pytest

from mmlm.sweep import RunSpec, collect_results, plan_sweep, write_results
from mmlm.sweep.grid import Grid
from mmlm.sweep.run_folders import clear_error, is_busy, last_metrics, run_dir, run_lock, RunBusy, state_of, write_error, write_spec


def spec(rid, size="pico", mixture="text", mix=None, tokens=4096):
    return RunSpec(id=rid, size=size, mixture=mixture, mix=mix or {"text": 1.0}, tokens=tokens, n_params=1000, data="/data")


def finish(out, s, eval_loss, by_dataset, status="done"):
    folder = run_dir(out, s.id)
    write_spec(out, s)
    summary = {"n_params": 1000, "n_params_nonembed": 800, "tokens": sum(by_dataset.values()),
               "tokens_by_dataset": by_dataset, "flops": 6000 * sum(by_dataset.values()), "eval_loss": eval_loss,
               "steps": 8, "spikes": 0, "restarts": 0, "status": status, "size": s.size, "mix": s.mix}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_results_have_one_row_per_run_and_eval_dataset(tmp_path):
    out = tmp_path / "sweep"
    a = spec("a", mixture="text")
    b = spec("b", size="nano", mixture="text+code", mix={"text": 0.5, "code": 0.5}, tokens=8192)
    c = spec("c", mixture="molecule", mix={"molecule": 1.0})  # planned, never finished
    finish(out, a, {"text": 3.5}, {"text": 4096})
    finish(out, b, {"text": 3.1, "code": 2.9}, {"text": 4100, "code": 4092})
    summary_b = run_dir(out, b.id) / "summary.json"
    summary_b.write_text(json.dumps({**json.loads(summary_b.read_text()), "eval_loss_se": {"text": 0.003, "code": 0.002}}))
    write_spec(out, c)
    d = spec("d")
    finish(out, d, {"text": 9.9}, {"text": 4096}, status="stopped: loss was nan")

    columns, rows = collect_results(out)
    assert columns[:10] == ["run_id", "size", "n_params", "n_params_nonembed", "mixture", "tokens", "flops", "eval_dataset", "loss",
                            "loss_se"]
    assert columns[10:] == ["tokens_code", "tokens_molecule", "tokens_text"]  # every dataset a run draws from
    assert [(r["run_id"], r["eval_dataset"]) for r in rows] == [("a", "text"), ("b", "code"), ("b", "text")]
    b_code = rows[1]
    assert b_code["loss"] == 2.9 and b_code["size"] == "nano" and b_code["mixture"] == "text+code"
    assert b_code["loss_se"] == 0.002 and rows[0]["loss_se"] is None  # a's summary has no standard errors
    assert (b_code["tokens_text"], b_code["tokens_code"], b_code["tokens_molecule"]) == (4100, 4092, 0)
    assert b_code["tokens"] == 8192 and b_code["flops"] == 6000 * 8192

    path, n = write_results(out)
    assert n == 3
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert [r["run_id"] for r in read] == ["a", "b", "b"]
    assert float(read[2]["loss"]) == 3.1 and read[0]["tokens_text"] == "4096"
    assert not list(out.glob(".results.csv.tmp*"))


def test_states_of_run_folders(tmp_path):
    out = tmp_path / "sweep"
    s = spec("r")
    folder = run_dir(out, s.id)
    assert state_of(folder)[0] == "new"
    write_spec(out, s)
    assert state_of(folder)[0] == "new"
    write_error(folder, "RuntimeError: boom\nsecond line", "Traceback ...")
    assert state_of(folder) == ("failed", "RuntimeError: boom second line")
    clear_error(folder)
    assert state_of(folder)[0] == "new"
    finish(out, s, {"text": 3.0}, {"text": 4096}, status="stopped: gave up after 3 restart(s)")
    assert state_of(folder) == ("failed", "stopped: gave up after 3 restart(s)")
    finish(out, s, {"text": 3.0}, {"text": 4096})
    assert state_of(folder) == ("done", "")


def test_last_metrics_skips_a_line_cut_short(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "tokens": 512}\n{"step": 2, "tokens": 1024}\n{"step": 3, "tok')
    assert last_metrics(tmp_path) == {"step": 2, "tokens": 1024}
    assert last_metrics(tmp_path / "nowhere") is None


def test_run_lock_is_exclusive_between_processes(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "run"
    assert not is_busy(folder)
    with run_lock(folder):
        assert is_busy(folder)  # a separate open file description: flock conflicts even in one process
        code = ("import sys; from pathlib import Path; from mmlm.sweep.run_folders import run_lock, RunBusy\n"
                "try:\n    with run_lock(Path(sys.argv[1]), wait_s=0.3): print('got')\n"
                "except RunBusy: print('busy')")
        r = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)
        assert r.stdout.strip() == "busy", r.stderr
    assert not is_busy(folder)
    with pytest.raises(RunBusy):
        with run_lock(folder):
            with run_lock(folder, wait_s=0.2):
                pass


def test_plan_says_what_happens_to_each_run(tmp_path):
    out = tmp_path / "sweep"
    done, failed, fresh = spec("done"), spec("failed"), spec("fresh")
    finish(out, done, {"text": 3.0}, {"text": 4096})
    write_spec(out, failed)
    write_error(run_dir(out, "failed"), "MmlmError: corrupt dataset")
    grid = Grid(data=tmp_path, sizes=["pico"], mixtures={"text": {"text": 1.0}}, tokens=[4096], runs=[done, failed, fresh])
    plan = {p["id"]: p for p in plan_sweep(grid, out)}
    assert (plan["done"]["action"], plan["failed"]["action"], plan["fresh"]["action"]) == ("skip", "failed", "new")
    assert plan["failed"]["detail"] == "MmlmError: corrupt dataset"
    assert plan_sweep(grid, out, retry_failed=True)[1]["action"] == "retry"
    with run_lock(run_dir(out, "fresh")):
        assert plan_sweep(grid, out)[2]["action"] == "busy"
