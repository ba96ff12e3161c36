"""The GPU check in one go (run by bench/gpu_check.sh after it installed the GPU extra).

Steps, each with its own time limit, all inside `--budget` seconds (default 480: the 8 minutes):
  1. `pytest -m gpu` (xformers vs SDPA parity, a bf16 training step, FSDP2 with one process);
  2. the GPU benchmarks of bench/gpu.py (attention speed and parity; bf16 MFU at 125M and 350M,
     eager and compiled);
  3. a four-run GPU mini-sweep to a results.csv.
Writes bench/results-gpu.json (or --out) and prints one table. Without CUDA every step is reported
as skipped (that path is what the CPU tests exercise).

    python bench/gpu_check.py [--quick] [--out FILE] [--budget SECONDS] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"mmlm_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pytest_entry(timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", str(HERE.parent / "tests")],
                           capture_output=True, text=True, timeout=timeout)
        last = (r.stdout.strip().splitlines() or ["no output"])[-1]
        ok = r.returncode == 0
    except subprocess.TimeoutExpired:
        last, ok = f"timed out after {timeout:.0f} s", False
    return {"name": "gpu tests: pytest -m gpu", "value": 1.0 if ok else 0.0, "baseline": None, "ratio": None,
            "target": None, "unit": "pass", "meets": ok, "note": f"{last} ({time.perf_counter() - t0:.0f} s)"}


def _benchmarks(gpu, quick: bool, work: Path, timeout: float) -> list[dict]:
    """bench/gpu.py's entries, run in a child process so that a slow compile cannot eat the sweep's time."""
    names = [gpu.ATTENTION_NAME, *gpu.train_names()]
    out = work / "gpu-bench.json"
    work.mkdir(parents=True, exist_ok=True)
    code = ("import json, sys, importlib.util as u; s = u.spec_from_file_location('g', sys.argv[1]); g = u.module_from_spec(s); "
            "s.loader.exec_module(g); open(sys.argv[2], 'w').write(json.dumps(g.run(quick=sys.argv[3] == '1')))")
    try:
        r = subprocess.run([sys.executable, "-c", code, str(HERE / "gpu.py"), str(out), "1" if quick else "0"],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return gpu._skipped(names, f"timed out after {timeout:.0f} s")
    if r.returncode != 0 or not out.is_file():
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return gpu._skipped(names, f"failed: {tail}")
    return json.loads(out.read_text())


def check(quick: bool, budget: float, work: Path, has_cuda: bool | None = None) -> list[dict]:
    """Every entry of the check (skipped ones included), within `budget` seconds where CUDA runs."""
    import torch

    gpu = _load("gpu")
    has_cuda = torch.cuda.is_available() if has_cuda is None else has_cuda
    names = ["gpu tests: pytest -m gpu", gpu.ATTENTION_NAME, *gpu.train_names(), gpu.SWEEP_NAME]
    if not has_cuda:
        return gpu._skipped(names, "no CUDA device")
    t0 = time.perf_counter()
    def left():
        return budget - (time.perf_counter() - t0)
    entries = [_pytest_entry(timeout=min(150, left()))]
    entries += _benchmarks(gpu, quick, work, timeout=max(30.0, left() - 120))  # leave the sweep its time
    if left() > 60:
        try:
            entries.append(gpu.mini_sweep(work, quick=quick or left() < 150))
        except Exception as e:  # noqa: BLE001
            entries += gpu._skipped([gpu.SWEEP_NAME], f"failed: {type(e).__name__}: {e}")
    else:
        entries += gpu._skipped([gpu.SWEEP_NAME], f"no time left ({left():.0f} s of the budget)")
    return entries


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"no CUDA device, torch {torch.__version__}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="mmlm's GPU check: tests, benchmarks and a mini-sweep")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sweep")
    ap.add_argument("--out", default=str(HERE / "results-gpu.json"), help="where to write the results (JSON)")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check (default 480)")
    ap.add_argument("--work", default=None, help="folder for the mini-sweep (default: a temporary folder)")
    args = ap.parse_args(argv)
    if args.budget <= 0:
        ap.error(f"--budget {args.budget}: must be positive")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        entries = check(args.quick, args.budget, work)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine(), "seconds": seconds, "results": {e["name"]: {k: v for k, v in e.items() if k != "name"} for e in entries}}
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    from run_all import print_table

    print(f"GPU check on {doc['machine']}: {seconds:.0f} s; wrote {out}")
    print_table(entries)
    measured = [e for e in entries if not e.get("skipped")]
    return 1 if any(e["meets"] is False and e["unit"] in ("pass", "runs") for e in measured) else 0


if __name__ == "__main__":
    sys.exit(main())
