"""The paper's modality test: dataset B is a distinct modality from A when B's perplexity under a
model trained on A exceeds sigma (default 3) times that model's mean perplexity on A.

Perplexities are per document, on held-out documents (the same split rule as training,
`mmlm.data.heldout_split`, with the run's eval_tokens and split_seed), and the rule compares mean
per-document perplexities: distinct when mean_ppl(B) > sigma * mean_ppl(A).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MmlmError
from ..progress import Progress
from .run_records import find_setting

DEFAULT_SIGMA = 3.0


def modality_verdict(ppl_a, ppl_b, sigma: float = DEFAULT_SIGMA) -> dict:
    """Apply the rule to per-document perplexities of A and B under a model trained on A."""
    ppl_a, ppl_b = np.asarray(ppl_a, float), np.asarray(ppl_b, float)
    if not sigma > 0:
        raise MmlmError(f"--sigma must be positive, got {sigma}")
    for name, p in (("A", ppl_a), ("B", ppl_b)):
        if p.size == 0:
            raise MmlmError(f"modality test: no perplexities for dataset {name}")
        if not np.all(np.isfinite(p)) or np.any(p < 1):
            raise MmlmError(f"modality test: perplexities of dataset {name} must be finite and >= 1")
    mean_a, mean_b = float(ppl_a.mean()), float(ppl_b.mean())
    threshold = sigma * mean_a
    return {
        "sigma": float(sigma),
        "mean_ppl_a": mean_a,
        "mean_ppl_b": mean_b,
        "ratio": mean_b / mean_a,
        "threshold": threshold,
        "share_b_above": float(np.mean(ppl_b > threshold)),
        "distinct": bool(mean_b > threshold),
    }


def _load_model(run_dir: Path, vocab_size: int, device: str):
    """(model, config) through the one model loader (mmlm.checkpoint: config.json checked, safetensors header
    checked before anything loads), as generate loads it; the model must be built for the data's vocabulary."""
    import torch

    from ..checkpoint import load_model

    model, config = load_model(run_dir, torch.device(device))
    if model.cfg.vocab_size != vocab_size:
        raise MmlmError(f"{run_dir}: the model was built for {model.cfg.vocab_size} ids, "
                        f"but the data root's vocabulary has {vocab_size}")
    return model, config


def _doc_ppl(model, doc: np.ndarray, eos: int, device) -> float:
    """exp(mean NLL) of every token of a document, each chunk of seq_len targets read from scratch;
    the first token is predicted after <eos>, as it is in training's packed rows."""
    import torch
    import torch.nn.functional as F

    seq = torch.from_numpy(np.concatenate([[eos], doc]).astype(np.int64)).to(device)
    T = model.cfg.seq_len
    total, count = 0.0, 0
    for k in range(0, len(seq) - 1, T):
        x = seq[k : k + T][None]
        y = seq[k + 1 : k + T + 1][None]
        x = x[:, : y.shape[1]]
        logits, _ = model(x)
        total += float(F.cross_entropy(logits[0].float(), y[0], reduction="sum"))
        count += y.shape[1]
    return float(np.exp(total / count))


def _open(run_dir: Path, data_root: str | Path, device: str):
    from ..data import open_root

    root, vocab, _ = open_root(data_root)
    model, config = _load_model(Path(run_dir), vocab.size, device)
    return model, config, root, vocab


def _heldout_ppl(model, config: dict, root: Path, vocab, dataset: str, max_docs: int,
                 on_progress: Progress | None) -> np.ndarray:
    import torch

    from ..data import heldout_split
    from ..shards import Dataset, list_datasets

    if dataset not in list_datasets(root):
        raise MmlmError(f"--data {root}: no dataset {dataset!r} (it has: {', '.join(list_datasets(root)) or 'none'})")
    ds = Dataset(root / dataset)
    eval_tokens, split_seed = find_setting(config, "eval_tokens"), find_setting(config, "split_seed")
    split = heldout_split(ds, int(eval_tokens or 16384), int(split_seed or 0))
    docs = [int(k) for k in split.eval[:max_docs] if ds.offsets[k + 1] > ds.offsets[k]]
    out = np.empty(len(docs))
    dev = next(model.parameters()).device
    with torch.no_grad():
        for n, k in enumerate(docs):
            out[n] = _doc_ppl(model, ds.doc(k), vocab.eos, dev)
            if on_progress:
                on_progress(f"scoring {dataset}", n + 1, len(docs))
    return out


def doc_perplexities(run_dir: str | Path, data_root: str | Path, dataset: str, max_docs: int = 200,
                     device: str = "cpu", on_progress: Progress | None = None) -> np.ndarray:
    """Per-document perplexity of the run's model on up to `max_docs` held-out documents of `dataset`."""
    model, config, root, vocab = _open(run_dir, data_root, device)
    return _heldout_ppl(model, config, root, vocab, dataset, max_docs, on_progress)


def modality_test(run: str | Path, data_root: str | Path, a: str, b: str, sigma: float = DEFAULT_SIGMA,
                  max_docs: int = 200, device: str = "cpu",
                  on_progress: Progress | None = None) -> dict:
    """Is B a distinct modality from A, judged by a model trained on A (and not on B)?"""
    run = Path(run)
    if a == b:
        raise MmlmError(f"--a and --b are both {a!r}: the modality test needs a pair of datasets")
    if max_docs < 1:
        raise MmlmError(f"--max-docs must be at least 1, got {max_docs}")
    modality_verdict([1.0], [1.0], sigma)  # checks sigma before any work
    model, config, root, vocab = _open(run, data_root, device)
    mix = config.get("mix") if isinstance(config.get("mix"), dict) else {}
    if a not in mix:
        raise MmlmError(f"--run {run}: trained on {', '.join(mix) or 'unknown data'}, not on --a {a!r}")
    if b in mix:
        raise MmlmError(f"--run {run}: its training mixture includes --b {b!r}; the test needs a model that never saw B")
    ppl = {name: _heldout_ppl(model, config, root, vocab, name, max_docs, on_progress) for name in (a, b)}
    verdict = modality_verdict(ppl[a], ppl[b], sigma)
    return {
        "run": run.resolve().name,
        "trained_on": list(mix),
        "a": a,
        "b": b,
        "datasets": {name: {"documents": int(p.size), "mean_ppl": float(p.mean()), "median_ppl": float(np.median(p))}
                     for name, p in ppl.items()},
        **verdict,
    }
