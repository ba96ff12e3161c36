"""Peak memory of `mmlm tokenize text` per input byte, against tokenizing whole documents at once.

Each measurement runs in a fresh process (peak RSS is a high-water mark) that tokenizes one .txt
file of synthetic prose (seeded random words and punctuation, one document) with
`tokenize_dataset`: BPE training and encoding in bounded pieces (`mmlm.tokenizers.text.text_pieces`).
The baseline process does what the pipeline did before: BPE training on the whole document and one
`encode_batch` over it. Two file sizes are run; the value is the slope, (peak(big) - peak(small)) /
(big - small) in bytes of peak memory per input byte, so the interpreter's fixed cost cancels.
Target: <= 10 bytes per input byte, whatever the file size (the issue's "<= 10x the input").
ratio = baseline slope / our slope.

    python bench/tokenize_memory.py [--quick]
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET = 10.0

_CHILD = r"""
import json, resource, sys
from pathlib import Path
mode, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "ours":
    from mmlm.dataset_build import tokenize_dataset
    tokenize_dataset("text", [path], out, vocab_size=4096)
else:
    from mmlm.tokenizers.text import BPETokenizer
    text = Path(path).read_text(encoding="utf-8")
    tok = BPETokenizer.train([text], vocab_size=4096)
    ids = tok.encode_batch([text])
print(json.dumps({"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def make_text(path: Path, n_bytes: int, seed: int = 0) -> None:
    import random

    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rnd.choice(letters) for _ in range(rnd.randint(1, 10))) for _ in range(20000)]
    parts, size = [], 0
    while size < n_bytes:
        line = " ".join(rnd.choice(words) for _ in range(rnd.randint(5, 20))) + rnd.choice([".", ",", ";", "!", "?"]) + "\n"
        parts.append(line)
        size += len(line)
    path.write_text("".join(parts), encoding="utf-8")


def _peak(mode: str, path: Path, tmp: Path) -> int:
    out = tmp / f"data-{mode}-{path.stem}"
    r = subprocess.run([sys.executable, "-c", _CHILD, mode, str(path), str(out)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["peak"]


def run(quick: bool = False) -> list[dict]:
    small, big = (1 << 20, 4 << 20) if quick else (2 << 20, 10 << 20)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {}
        for n in (small, big):
            files[n] = tmp / f"text-{n}.txt"
            make_text(files[n], n)
        sizes = {n: files[n].stat().st_size for n in files}
        peaks = {(mode, n): _peak(mode, files[n], tmp) for n in (small, big) for mode in ("ours", "whole")}
    span = sizes[big] - sizes[small]
    ours = (peaks[("ours", big)] - peaks[("ours", small)]) / span
    whole = (peaks[("whole", big)] - peaks[("whole", small)]) / span
    return [{
        "name": "tokenize text: peak memory per input byte",
        "value": round(ours, 2), "baseline": round(whole, 2), "ratio": round(whole / ours, 2) if ours > 0 else None,
        "target": TARGET, "unit": "B/B", "meets": ours <= TARGET,
        "note": (f"slope between {sizes[small] / 1e6:.1f} MB and {sizes[big] / 1e6:.1f} MB files; peak RSS "
                 f"{peaks[('ours', big)] / 1e6:.0f} MB for the big file (whole-document baseline "
                 f"{peaks[('whole', big)] / 1e6:.0f} MB); target: value <= {TARGET:g} bytes per input byte"),
    }]


if __name__ == "__main__":
    import importlib.util

    spec = importlib.util.spec_from_file_location("mmlm_bench_run_all", Path(__file__).resolve().parent / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    run_all.main_for(run)
