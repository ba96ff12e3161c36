"""bench/gpu_check.sh on a machine without CUDA: argument handling, every step skipped, one table, the JSON."""
import json
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def sh(*args, **kw):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120, **kw)


def test_bad_arguments_are_one_line_errors(tmp_path):
    for args, msg in (((), "give the wheel folder"), ((tmp_path / "nope",), "does not exist"),
                      ((tmp_path,), "no .whl files"), (("--frobnicate",), "unknown option --frobnicate"),
                      (("--skip-install", "--out"), "--out needs a value")):
        r = sh(*args)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and msg in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    r = sh("--help")
    assert r.returncode == 0 and "WHEEL_DIR" in r.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_without_cuda_every_step_is_skipped_and_reported(tmp_path):
    out = tmp_path / "results-gpu.json"
    r = sh("--skip-install", "--quick", "--out", out)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    names = set(doc["results"])
    assert {"gpu tests: pytest -m gpu", "gpu attention fwd+bwd: xformers vs sdpa", "gpu mini-sweep: 4 runs to results.csv",
            "gpu bf16 train 350M compiled: MFU", "gpu bf16 train 125M eager: MFU"} <= names
    assert all(v["skipped"] and v["note"] == "no CUDA device" for v in doc["results"].values())
    table = r.stdout.splitlines()
    assert table[0].startswith("GPU check on no CUDA device") and table[1].split()[0] == "benchmark"
    assert sum(line.endswith("skipped") for line in table) == len(names)


@pytest.mark.slow
def test_the_cuda_path_of_the_check_runs_its_steps_in_order(tmp_path):
    """check() as on a GPU machine (has_cuda forced): pytest -m gpu runs (its tests skip here), the
    benchmarks run in a child process, the sweep step reports; every entry has the documented keys."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gc", SCRIPT.with_name("gpu_check.py"))
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    entries = gc.check(quick=True, budget=400, work=tmp_path, has_cuda=True)
    names = [e["name"] for e in entries]
    assert names[0] == "gpu tests: pytest -m gpu" and names[-1] == "gpu mini-sweep: 4 runs to results.csv"
    assert entries[0]["meets"] is True and "skipped" in entries[0]["note"]  # the gpu tests skip without CUDA
    assert all({"value", "baseline", "ratio", "target", "unit", "meets", "note"} <= e.keys() for e in entries)
