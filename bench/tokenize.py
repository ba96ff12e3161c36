"""Throughput of the tokenizers per modality, and reconstruction quality of the image and speech
codebooks, each against a baseline measured in the same run (interleaved repetitions, medians).

- text, code: byte-level BPE `encode_batch` over many documents (what `mmlm tokenize` runs) in
  MB/s, against encoding the same documents one at a time; target >= 1. The note also gives the
  speed of a bare pure-Python `re.findall` word split of the same text, the least any tokenizer
  must do (HF tokenizers' byte-level pipeline runs at a fraction of it on one core).
- molecule: SMILES regex tokenization in molecules/s against RDKit parsing the same SMILES (the
  validity check the pipeline runs before it); target >= 1 (tokenizing is not the bottleneck).
- image, speech encode: items/s with BLAS held to one thread (as `tokenize_dataset` does) against
  BLAS's default threads; target >= 1 (the per-item products are too small to gain from threads).
- image, speech reconstruction: error of the trained codebook against a random codebook of the
  same size on held-out items (MSE in [0,1] pixel units; log-spectral distance in dB); ratio =
  random error / trained error, target > 1.

Data: Python's own documentation (pydoc_data topics) and standard-library source; scikit-learn's
digits at 32x32; RDKit's bundled NCI SMILES (skipped without RDKit); eSpeak NG utterances
(synthetic chirps without espeakng-loader).

    python bench/tokenize.py [--quick]
"""
from __future__ import annotations

import sys

if __name__ == "tokenize":
    # bench/ is on sys.path (`python bench/...`), so `import tokenize` (the standard library's, which
    # linecache and inspect import) found this file: hand over the real module instead. Nothing below
    # imports anything heavy at module level, so this stays safe mid-way through any import.
    import importlib.util
    import sysconfig

    _spec = importlib.util.spec_from_file_location("tokenize", f"{sysconfig.get_paths()['stdlib']}/tokenize.py")
    _real = importlib.util.module_from_spec(_spec)
    sys.modules["tokenize"] = _real
    _spec.loader.exec_module(_real)

import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

WORD_SPLIT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\w+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+""")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interleaved(*fns, reps: int) -> list[float]:
    """Median seconds of each function, all run in turn `reps` times."""
    times = [[] for _ in fns]
    for _ in range(reps):
        for t, fn in zip(times, fns):
            t.append(_timed(fn))
    return [statistics.median(t) for t in times]


def _entry(name, value, baseline, ratio, target, unit, note="") -> dict:
    e = {"name": name, "value": float(value), "baseline": float(baseline), "ratio": float(ratio),
         "target": float(target), "unit": unit, "meets": bool(ratio >= target)}
    if note:
        e["note"] = note
    return e


def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


# --- text and code -----------------------------------------------------------------------------

def _texts(quick: bool) -> tuple[list[str], list[str]]:
    import sysconfig
    from pathlib import Path

    from pydoc_data.topics import topics

    limit = 200_000 if quick else 450_000  # characters of each
    prose, size = [], 0
    for k in sorted(topics):
        prose.append(topics[k])
        size += len(topics[k])
        if size > limit:
            break
    root = Path(sysconfig.get_paths()["stdlib"])
    code, size = [], 0
    for p in sorted(root.glob("*.py")):
        src = p.read_text(encoding="utf-8", errors="replace")
        code.append(src)
        size += len(src)
        if size > limit:
            break
    return prose, code


def bench_bpe(quick: bool, reps: int) -> list[dict]:
    from mmlm.tokenizers.text import BPETokenizer

    prose, code = _texts(quick)
    tok = BPETokenizer.train(prose + code, vocab_size=4096)
    out = []
    for name, docs in (("text", prose), ("code", code)):
        mb = sum(len(d.encode()) for d in docs) / 1e6
        n_tokens = sum(len(ids) for ids in tok.encode_batch(docs))
        ours, base, split = _interleaved(lambda: tok.encode_batch(docs), lambda: [tok.encode(d) for d in docs],
                                         lambda: [WORD_SPLIT.findall(d) for d in docs], reps=reps)
        out.append(_entry(f"tokenize {name}: BPE batch vs one by one", mb / ours, mb / base, base / ours, 1.0, "MB/s",
                          f"{len(docs)} documents, {mb:.2f} MB, {n_tokens:,} tokens ({mb * 1e6 / n_tokens:.2f} "
                          f"bytes/token), {n_tokens / ours:,.0f} tokens/s; a bare regex split: {mb / split:.3g} MB/s"))
    return out


# --- molecules -------------------------------------------------------------------------------------

def bench_smiles(quick: bool, reps: int) -> list[dict]:
    from pathlib import Path

    try:
        import rdkit
        from rdkit import Chem, RDLogger
    except ImportError:
        return [dict(_entry("tokenize molecule: SMILES vs RDKit parse", 0, 0, 0, 1, "mol/s"), skipped=True,
                     note="RDKit not installed (pip install rdkit)")]
    from mmlm.tokenizers.molecule import SmilesTokenizer

    RDLogger.DisableLog("rdApp.*")
    path = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"
    smiles = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    smiles = smiles[:1000] if quick else smiles[:3000]
    tok = SmilesTokenizer.train(smiles)
    ours, base = _interleaved(lambda: [tok.encode(s) for s in smiles], lambda: [Chem.MolFromSmiles(s) for s in smiles],
                              reps=reps)
    n = len(smiles)
    return [_entry("tokenize molecule: SMILES vs RDKit parse", n / ours, n / base, base / ours, 1.0, "mol/s",
                   f"{n:,} SMILES from RDKit's NCI sample")]


# --- images ----------------------------------------------------------------------------------------

def _digits(n: int) -> list:
    import numpy as np
    from PIL import Image

    from mmlm.demo_data import digits

    images = digits()[0][:n]
    return [np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.BICUBIC).convert("RGB")) for im in images]


def bench_image(quick: bool, reps: int) -> list[dict]:
    from mmlm.tokenizers.image import ImageTokenizer, reconstruction_error

    images = _digits(400 if quick else 1000)
    split = int(0.8 * len(images))
    with _one_blas_thread():
        tok = ImageTokenizer.train(images[:split], size=32, patch=4, codebook=256, seed=0)
        rand = ImageTokenizer.random(images[:split], size=32, patch=4, codebook=256, seed=0)
        trained_err = reconstruction_error(tok, images[split:])
        random_err = reconstruction_error(rand, images[split:])

    def one_thread():
        with _one_blas_thread():
            [tok.encode(im) for im in images]

    ours, base = _interleaved(one_thread, lambda: [tok.encode(im) for im in images], reps=reps)
    n = len(images)
    return [
        _entry("tokenize image: encode, 1 BLAS thread vs default", n / ours, n / base, base / ours, 1.0, "images/s",
               f"32x32 digits, 64 codes each, codebook 256: {64 * n / ours:,.0f} tokens/s"),
        _entry("tokenize image: reconstruction, random/trained", trained_err, random_err, random_err / trained_err,
               1.0, "MSE", f"held-out {len(images) - split} digits; Gaussian-matched random codebook"),
    ]


# --- speech ------------------------------------------------------------------------------------------

def _utterances(n: int) -> tuple[list, str]:
    import numpy as np

    try:
        from mmlm.demo_data import Espeak
        import espeakng_loader  # noqa: F401
    except ImportError:
        rng = np.random.default_rng(0)
        waves = []
        for _ in range(n):
            t = np.arange(int(rng.uniform(1.0, 2.5) * 16000)) / 16000
            f = rng.uniform(100, 300) * (1 + t)  # rising chirp with harmonics and noise
            w = sum(np.sin(2 * np.pi * k * np.cumsum(f) / 16000) / k for k in (1, 2, 3))
            waves.append(((0.2 * w + 0.01 * rng.standard_normal(t.size)).astype(np.float32), 16000))
        return waves, "synthetic chirps (espeakng-loader not installed)"
    tts = Espeak.get()
    sentences = ["The quick brown fox jumps over the lazy dog.", "Return the number of items in the container.",
                 "Open a file and return a stream.", "Raise an error when the value is not valid.",
                 "Read all remaining bytes from the socket.", "Convert a string to a floating point number."]
    voices = ["en-us", "en", "en-gb-scotland", "en-us+f2", "en+m3"]
    waves = [(tts.say(sentences[i % len(sentences)], voices[i % len(voices)], 150 + 7 * (i % 6), 50)
              .astype(np.float32) / 32768.0, tts.sample_rate) for i in range(n)]
    return waves, "eSpeak NG utterances"


def bench_speech(quick: bool, reps: int) -> list[dict]:
    from mmlm.tokenizers.speech import SpeechTokenizer, reconstruction_error, to_mono16k

    waves, source = _utterances(20 if quick else 40)
    waves = [(to_mono16k(w), 16000) for w in waves]  # resampling once, outside the timed part
    split = int(0.8 * len(waves))
    with _one_blas_thread():
        tok = SpeechTokenizer.train(waves[:split], units=100, seed=0)
        rand = SpeechTokenizer.random(waves[:split], units=100, seed=0)
        trained_err = reconstruction_error(tok, waves[split:])
        random_err = reconstruction_error(rand, waves[split:])

    def one_thread():
        with _one_blas_thread():
            [tok.encode(w) for w in waves]

    ours, base = _interleaved(one_thread, lambda: [tok.encode(w) for w in waves], reps=reps)
    seconds = sum(len(w) for w, _ in waves) / 16000
    return [
        _entry("tokenize speech: encode, 1 BLAS thread vs default", seconds / ours, seconds / base, base / ours, 1.0,
               "audio s/s", f"{len(waves)} {source}, {seconds:.0f} s of audio, 100 units"),
        _entry("tokenize speech: reconstruction, random/trained", trained_err, random_err, random_err / trained_err,
               1.0, "dB LSD", f"held-out {len(waves) - split} utterances; units decoded with Griffin-Lim"),
    ]


def run(quick: bool = False) -> list[dict]:
    reps = 3
    return bench_bpe(quick, reps) + bench_smiles(quick, reps) + bench_image(quick, reps) + bench_speech(quick, reps)


if __name__ == "__main__":
    results = run(quick="--quick" in sys.argv)
    print(f"{'benchmark':50} {'value':>10} {'baseline':>10} {'unit':>9} {'ratio':>7} {'target':>7}  meets")
    for r in results:
        print(f"{r['name']:50} {r['value']:10.4g} {r['baseline']:10.4g} {r['unit']:>9} {r['ratio']:7.3g} "
              f"{r['target']:7.3g}  {'skipped' if r.get('skipped') else ('yes' if r['meets'] else 'NO')}")
    for r in results:
        if r.get("note"):
            print(f"  {r['name']}: {r['note']}")
