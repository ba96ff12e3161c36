"""Training or reusing the tokenizer of each token space a dataset needs (`mmlm tokenize`).

A token space's tokenizer is trained the first time a dataset needs it (and recorded in vocab.json)
and reused from then on, never retrained: asking for different settings is an error.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path

from .errors import MmlmError
from .ingest import Docs, read_training_texts
from .modalities import SPACES, tokenizer_class
from .progress import Progress
from .tokenizers.loading import load_tokenizer
from .vocab import SPACE_OF, Vocab

# CLI option -> (token space, key in the tokenizer's settings), to catch a request to retrain
_SETTING_KEYS = {
    "vocab_size": ("text", "vocab_size"),
    "image_size": ("image", "size"),
    "patch": ("image", "patch"),
    "codebook": ("image", "codebook"),
    "units": ("speech", "units"),
    "tokenizer": ("image", "tokenizer"),
    "downsample": ("image", "downsample"),
    "train_steps": ("image", "steps"),
}


def _check_settings(space: str, saved: dict, opts: dict, where: Path) -> None:
    if space == "image" and saved.get("mode") != "external":
        saved = {"tokenizer": "kmeans", **saved}  # k-means files predate the tokenizer key
    for opt, (sp, key) in _SETTING_KEYS.items():
        if sp == space and opts.get(opt) is not None and key in saved and saved[key] != opts[opt]:
            flag = "--" + opt.replace("_", "-")
            raise MmlmError(
                f"{where}: the {space} tokenizer here was trained with {key}={saved[key]}; {flag} {opts[opt]} "
                f"would retrain it, which would change existing ids (use a new data root)")


def _train(space: str, items: list, opts: dict, user_opts: dict, external: bool, on_progress: Progress):
    """Train a tokenizer (opts: settings with defaults filled in), or set one up for external
    codes (sizes only when the user gave them, else inferred from the codes)."""
    if not external:
        _check_codes_fit_data(space, items, opts)
    return SPACES[space].train(tokenizer_class(space), items, opts, user_opts, external, on_progress)


def _sample_limit(space: str) -> int:
    """How many vectors (patches, frames) k-means of `space` learns from at most (its `sample` default)."""
    return int(inspect.signature(tokenizer_class(space).train).parameters["sample"].default)


def check_bounds(opts: dict) -> None:
    """Settings checked before any input is read: sizes whose work or memory has no upper bound."""
    from .bounds import check_memory

    size, patch = opts["image_size"], opts["patch"]
    if patch > size:
        raise MmlmError(f"--patch {patch}: larger than --image-size {size}")
    per_image = (size // patch) ** 2
    keep = math.ceil(4 * _sample_limit("image") / per_image)  # training images ImageTokenizer.train reads at most
    check_memory(size * size * 3 * 4 * (keep + 2), f"--image-size {size}",
                 f"{keep} training image(s) of {size}x{size} pixels in float32")
    for opt, space, what in (("codebook", "image", "image patches"), ("units", "speech", "speech frames")):
        limit = _sample_limit(space)
        if opts[opt] > limit:
            raise MmlmError(f"--{opt} {opts[opt]}: more than the {limit:,} {what} k-means learns from; "
                            f"use at most {limit:,}")


def _check_codes_fit_data(space: str, items: list, opts: dict) -> None:
    """A codebook needs at least as many training vectors as codes (k-means on fewer has nothing to learn);
    the VQ-VAE checks its own codebook against its latent vectors."""
    if space == "image" and opts.get("tokenizer", "kmeans") == "kmeans":
        per_image = (opts["image_size"] // opts["patch"]) ** 2
        have, k, opt, what = len(items) * per_image, opts["codebook"], "--codebook", f"patches ({len(items)} image(s) x {per_image})"
    elif space == "speech":
        from .tokenizers.speech import HOP, SR

        seconds = sum(len(w[0]) / w[1] for w in items)
        have, k, opt, what = int(seconds * SR / HOP), opts["units"], "--units", f"20 ms frames ({seconds:.1f} s of audio)"
    else:
        return
    if k > have:
        raise MmlmError(f"{opt} {k}: the training data holds only {have:,} {what}; use at most {have:,} codes, or more data")


def ensure_tokenizers(root: Path, vocab: Vocab, spaces: list[str], docs: Docs, opts: dict, user_opts: dict,
                       external: bool, train_on: list[Path], on_progress: Progress) -> tuple[dict, list[str]]:
    """Load each needed tokenizer, training (and recording in vocab.json) the ones not there yet."""
    toks, trained = {}, []
    for space in spaces:
        if space in vocab.ranges:
            entry = vocab.tokenizers.get(space, {})
            where = root / entry.get("file", f"tokenizers/{space}.json")
            _check_settings(space, entry, user_opts, where)
            tok = load_tokenizer(root, space, vocab)
            if SPACES[space].media and bool(getattr(tok, "external", False)) != external:
                have = "external codes" if getattr(tok, "external", False) else "a trained codebook"
                raise MmlmError(f"{where}: the {space} tokens here come from {have}; "
                                f"{'importing external codes' if external else 'raw media'} would need a new data root")
            toks[space] = tok
            continue
        on_progress(f"train {space}", 0, 0, 0)
        items = [item for doc in docs.docs for m, item in doc if SPACE_OF[m] == space]
        if space == "text" and train_on:
            items = items + read_training_texts(train_on)
        tok = _train(space, items, opts, user_opts, external, on_progress)
        rel = f"tokenizers/{space}.json"
        tok.save(root / rel)
        vocab.add_space(space, tok.n_tokens, {"kind": space, "file": rel, **tok.settings})
        vocab.save(root / "vocab.json")
        toks[space] = tok
        trained.append(space)
        on_progress(f"train {space}", 1, 1, 0)
    return toks, trained

