"""The built-in demo corpus: its raw files (mmlm.demo_data), then each of the seven datasets tokenized."""
from __future__ import annotations

import time
from pathlib import Path

from . import demo_data
from . import dataset_build  # looked up per call: tests replace dataset_build.tokenize_dataset
from .modalities import KINDS
from .progress import Progress, silent
from .shards import Dataset, list_datasets

def build_demo(data_root: str | Path, on_progress: Progress | None = None, image_tokenizer: str = "kmeans") -> dict:
    """Build the demo corpus: raw files under DATA/raw/, then each of the seven datasets through
    `mmlm.dataset_build.tokenize_dataset`. Parts already built (raw folders, complete datasets) are kept, so a
    killed build finishes when run again. Returns {"datasets": {name: summary}, "seconds"}.
    `image_tokenizer` "vqvae" trains the learnt image tokenizer (minutes on CPU) instead of k-means."""
    on_progress = on_progress or silent
    root = Path(data_root)
    t0 = time.perf_counter()
    demo_data.check_requirements()
    raw = demo_data.build_raw(root / "raw", on_progress=on_progress)
    have = set(list_datasets(root)) if root.is_dir() else set()
    opts = {"text": {"vocab_size": demo_data.BPE_VOCAB, "train_on": raw["code"]},
            "image": {"image_size": 32, "patch": 4, "codebook": 256}, "speech": {"units": 100}}
    if image_tokenizer != "kmeans":  # the VQ-VAE at its defaults: 32 px, 8x8 codes of 256, like the k-means grid
        opts["image"] = {"image_size": 32, "codebook": 256, "tokenizer": image_tokenizer}
    results = {}
    for kind in demo_data.PARTS:
        if kind in have:
            ds = Dataset(root / kind)
            results[kind] = {"name": kind, "kind": kind, "documents": len(ds), "tokens": int(ds.offsets[-1]),
                             "kept": True}
            continue
        # a pair takes the settings of its media (its first segment), whose tokenizer it reuses
        kind_opts = dict(opts.get(kind) or opts.get(KINDS[kind].segments[0], {}))

        def progress(stage, done, total, tokens=0, _kind=kind):
            on_progress(f"{_kind}: {stage}", done, total, tokens)

        results[kind] = dataset_build.tokenize_dataset(kind, raw[kind], root, name=kind, on_progress=progress,
                                                       **kind_opts)
    return {"datasets": results, "seconds": round(time.perf_counter() - t0, 2)}
