"""Caption-conditioned digit generation, scored: can a run draw the digit its caption names?

    result = score_digits("runs/demo/runs/<image-text run>", "data/demo", per_digit=6, seed=0)
    result["accuracy"], result["chance"], result["n"]        # also written to OUT/digits.json

The judge is a scikit-learn classifier (logistic regression on 16x16 grey pixels) trained on the real
digit images of the data root's image-text dataset, each passed through the same image tokenizer and
decoded back, so it sees the codebook's artefacts as the samples do; its accuracy on real images it was
not trained on is reported too (`classifier_accuracy`), so a reader knows how far to trust the judge.
The run then draws `per_digit` images from the caption "a handwritten digit k" for each k (the image
part of the document after the caption, the order the demo's caption->image documents have), and
accuracy is the share the judge labels k. Chance is 1/10.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from . import atomic
from .errors import MmlmError

CAPTION = "a handwritten digit {k}"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SIDE = 16  # classifier input: SIDE x SIDE grey pixels


def _label(caption: str) -> int | None:
    """The digit a caption names: its last digit or number word ("an 8 by 8 pixel image of a 5" -> 5)."""
    found = [(m.start(), int(m.group(1))) for m in re.finditer(r"\b(\d)\b", caption)]
    found += [(m.start(), k) for k, w in enumerate(WORDS) for m in re.finditer(rf"\b{w}\b", caption)]
    return max(found)[1] if found else None


def _features(images: list[np.ndarray]) -> np.ndarray:
    from PIL import Image

    out = []
    for img in images:
        g = Image.fromarray(np.asarray(img, dtype=np.uint8)).convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        out.append(np.asarray(g, dtype=np.float32).reshape(-1) / 255.0)
    return np.stack(out)


def real_digits(data_root: str | Path, dataset: str = "image-text") -> tuple[list[np.ndarray], np.ndarray]:
    """(decoded images, labels) of every captioned digit in the data root's image-text dataset."""
    from .shards import Dataset
    from .documents import split_document
    from .tokenizers.loading import load_tokenizer
    from .vocab import Vocab

    root = Path(data_root)
    vocab = Vocab.load(root / "vocab.json")
    ds = Dataset(root / dataset)
    text_tok, image_tok = load_tokenizer(root, "text", vocab), load_tokenizer(root, "image", vocab)
    images, labels = [], []
    for k in range(len(ds)):
        parts = dict(split_document(vocab, ds.doc(k)))
        if "text" not in parts or "image" not in parts or parts["image"].size != image_tok.codes_per_image:
            continue
        label = _label(text_tok.decode(parts["text"]))
        if label is not None:
            images.append(image_tok.decode(parts["image"]))
            labels.append(label)
    if len(set(labels)) < 10:
        raise MmlmError(f"{root / dataset}: needs captioned images of all ten digits to train the judge")
    return images, np.asarray(labels)


def train_judge(images: list[np.ndarray], labels: np.ndarray, seed: int = 0):
    """(classifier, its accuracy on a held-out fifth of the real images)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x = _features(images)
    xa, xb, ya, yb = train_test_split(x, labels, test_size=0.2, random_state=seed, stratify=labels)
    clf = LogisticRegression(max_iter=2000, C=0.5).fit(xa, ya)
    held_out = float(clf.score(xb, yb))
    return LogisticRegression(max_iter=2000, C=0.5).fit(x, labels), held_out


def judge_rows(judge, rows: list[list[np.ndarray]]) -> dict:
    """{"accuracy", "chance", "n", "per_digit"} of images meant to show digit k in rows[k]."""
    pred = judge.predict(_features([img for row in rows for img in row]))
    want = np.concatenate([np.full(len(row), k) for k, row in enumerate(rows)])
    hits = pred == want
    per = [float(hits[want == k].mean()) for k in range(len(rows))]
    return {"accuracy": float(hits.mean()), "chance": 1.0 / len(rows), "n": int(hits.size), "per_digit": per}


def largest_run(sweep: str | Path, dataset: str = "image-text") -> Path:
    """The finished run of a sweep folder trained on `dataset` alone with the most parameters x tokens."""
    from .analysis.run_records import read_json_or_empty as read_obj

    base = Path(sweep) / "runs" if (Path(sweep) / "runs").is_dir() else Path(sweep)
    best, key = None, None
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        s = read_obj(folder / "summary.json") if folder.is_dir() else {}
        if s.get("status") == "done" and list(s.get("mix") or {}) == [dataset]:
            k = (s.get("n_params", 0) * s.get("tokens", 0), folder.name)
            if key is None or k > key:
                best, key = folder, k
    if best is None:
        raise MmlmError(f"{sweep}: no finished run trained on {dataset} alone")
    return best


def score_digits(run_dir: str | Path, data_root: str | Path, out: str | Path | None = None, per_digit: int = 6,
                 seed: int = 0, temperature: float = 1.0, top_k: int = 0) -> dict:
    """Draw `per_digit` images per digit from its caption, judge them; with `out`, write digits.json and
    digits.png (a grid: one row per digit) there."""
    import torch

    from .generate import SampleSettings, generate, load_run

    if per_digit < 1:
        raise MmlmError(f"--per-digit {per_digit}: must be at least 1")
    images, labels = real_digits(data_root)
    judge, judge_acc = train_judge(images, labels, seed)
    run = load_run(run_dir, device="cpu")
    drawn: list[list[np.ndarray]] = []
    for k in range(10):
        torch.manual_seed(seed + k)
        samples = generate(run, [("text", CAPTION.format(k=k))], "image",
                           SampleSettings(num_samples=per_digit, seed=seed * 10 + k, temperature=temperature, top_k=top_k))
        drawn.append([next(s["item"] for s in smp["segments"] if s["modality"] == "image") for smp in samples])
    result = {**judge_rows(judge, drawn), "classifier_accuracy": judge_acc,
              "classifier": f"logistic regression on {SIDE}x{SIDE} grey pixels of {len(labels)} real digits",
              "run": str(run_dir), "caption": CAPTION, "seed": seed, "temperature": temperature, "top_k": top_k}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(out / "digits.json", result)
        _write_grid(out / "digits.png", drawn)
    return result


def _write_grid(path: Path, rows: list[list[np.ndarray]]) -> None:
    """One row per digit 0..9, the samples side by side, 2 px gaps, x2 nearest-neighbour upscale."""
    from PIL import Image

    h, w = np.asarray(rows[0][0]).shape[:2]
    gap = 2
    grid = np.full((len(rows) * (h + gap), max(len(r) for r in rows) * (w + gap), 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            a = np.asarray(img, dtype=np.uint8)
            grid[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = a if a.ndim == 3 else a[..., None]
    im = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST)
    with atomic.atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
