"""Run every benchmark under bench/ and write bench/results.json and bench/RESULTS.md.

Each bench module exposes `run(quick=False) -> list[dict]` with entries
{"name", "value", "baseline", "ratio", "target", "unit", "meets"}; it measures the project and
its baseline side by side in the same process (interleaved repetitions, median of several).

    python bench/run_all.py [--quick] [--only NAME ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

import argparse
import datetime
import importlib.util
import json
import platform
import time
import traceback

HERE = Path(__file__).resolve().parent
SUITE = ["interleave", "aggregate", "train_step", "fit", "fit_pair", "generate", "tokenizers_speed", "tokenize_memory",
         "wsd", "vqvae", "gpu"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"mmlm_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def print_table(results: list[dict]) -> None:
    """The console table every bench file prints when run on its own."""
    width = max([len(r["name"]) for r in results] + [9])
    print(f"{'benchmark':{width}} {'value':>10} {'baseline':>10} {'unit':>9} {'ratio':>9} {'target':>7}  meets")
    for r in results:
        meets = "skipped" if r.get("skipped") else ("yes" if r["meets"] else "NO")
        print(f"{r['name']:{width}} {_fmt(r['value']):>10} {_fmt(r['baseline']):>10} {r['unit']:>9} "
              f"{_fmt(r['ratio']):>9} {_fmt(r['target']):>7}  {meets}")
    for r in results:
        if r.get("note"):
            print(f"  {r['name']}: {r['note']}")


def main_for(run) -> None:
    """`python bench/<file>.py [--quick]`: run one bench file and print its table."""
    print_table(run(quick="--quick" in sys.argv[1:]))


def write_markdown(results: dict, errors: dict, path: Path, machine: str, seconds: float) -> None:
    today = datetime.date.today().isoformat()
    lines = [
        "# Benchmark results",
        "",
        f"Measured {today} on {machine}; the whole suite took {seconds:.0f} s. "
        "Each ratio compares the project with a baseline measured in the same run (higher is better); "
        "`meets` says whether the ratio reaches the target. Regenerate with `make bench`.",
        "",
        "| benchmark | value | baseline | unit | ratio | target | meets |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        meets = "skipped" if r.get("skipped") else ("yes" if r["meets"] else "**no**")
        lines.append(
            f"| {name} | {_fmt(r['value'])} | {_fmt(r['baseline'])} | {r['unit']} | {_fmt(r['ratio'])} | {_fmt(r['target'])} | {meets} |"
        )
    notes = [(n, r["note"]) for n, r in results.items() if r.get("note")]
    if notes:
        lines += ["", "## Notes", ""] + [f"- **{n}**: {note}" for n, note in notes]
    for n, r in results.items():  # an entry may carry a markdown table of its own (lines)
        if r.get("table"):
            lines += ["", f"## {n}", ""] + list(r["table"])
    if errors:
        lines += ["", "## Benchmarks that failed to run", ""] + [f"- **{n}**: {e}" for n, e in errors.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    ap.add_argument("--only", nargs="*", default=None, help=f"subset of {SUITE}")
    ap.add_argument("--out", default=str(HERE), help="folder for results.json and RESULTS.md")
    args = ap.parse_args(argv)

    names = args.only or SUITE
    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    start = time.perf_counter()
    for name in names:
        if not (HERE / f"{name}.py").exists():
            errors[name] = "bench file missing"
            continue
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            for entry in _load(name).run(quick=args.quick):
                results[entry["name"]] = {k: v for k, v in entry.items() if k != "name"}
                print(f"   {entry['name']}: ratio {_fmt(entry['ratio'])} (target {_fmt(entry['target'])})", flush=True)
        except Exception as e:  # one broken benchmark must not hide the others
            errors[name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    seconds = time.perf_counter() - start

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_markdown(results, errors, out / "RESULTS.md", _machine(), seconds)
    measured = [r for r in results.values() if not r.get("skipped")]
    met = sum(bool(r["meets"]) for r in measured)
    print(f"wrote {out / 'results.json'} and {out / 'RESULTS.md'} ({seconds:.0f} s); "
          f"{met} of {len(measured)} measured benchmarks meet their target, {len(results) - len(measured)} skipped")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
