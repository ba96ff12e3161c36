"""`make bench` runs bench/run_all.py: it must write results.json in the documented schema and RESULTS.md."""
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
KEYS = {"value", "baseline", "ratio", "target", "unit", "meets"}


def test_suite_writes_results_json_and_markdown(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", "interleave", "gpu",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    interleave = {k: v for k, v in results.items() if k.startswith("interleave")}
    assert len(interleave) >= 3
    for entry in interleave.values():
        assert KEYS <= entry.keys()
        assert entry["value"] > 0 and entry["baseline"] > 0
        assert abs(entry["ratio"] - entry["value"] / entry["baseline"]) <= 1e-6 * entry["ratio"]
        assert entry["meets"] == (entry["ratio"] >= entry["target"])
    gpu = [v for k, v in results.items() if k.startswith("gpu")]
    assert gpu and all(v.get("skipped") or v["value"] > 0 for v in gpu)
    table = (tmp_path / "RESULTS.md").read_text()
    for name in interleave:
        assert f"| {name} |" in table


def test_suite_reports_a_missing_benchmark(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--only", "no_such_bench", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "no_such_bench" in (tmp_path / "RESULTS.md").read_text()
