"""Training or reusing the tokenizer of each token space a dataset needs (`mmlm tokenize`).

A token space's tokenizer is trained the first time a dataset needs it (and recorded in vocab.json)
and reused from then on, never retrained: asking for different settings is an error.
"""
from __future__ import annotations

from pathlib import Path

from .errors import MmlmError
from .ingest import Docs, read_training_texts
from .modalities import SETTINGS, SPACES, tokenizer_class
from .progress import Progress
from .tokenizers.loading import load_tokenizer
from .vocab import SPACE_OF, Vocab


def _check_settings(space: str, saved: dict, opts: dict, where: Path) -> None:
    saved = SPACES[space].saved(saved)
    for opt, (sp, setting) in SETTINGS.items():
        key = setting.key
        if sp == space and opts.get(opt) is not None and key in saved and saved[key] != opts[opt]:
            flag = "--" + opt.replace("_", "-")
            raise MmlmError(
                f"{where}: the {space} tokenizer here was trained with {key}={saved[key]}; {flag} {opts[opt]} "
                f"would retrain it, which would change existing ids (use a new data root)")


def _train(space: str, items: list, opts: dict, user_opts: dict, external: bool, on_progress: Progress):
    """Train a tokenizer (opts: settings with defaults filled in), or set one up for external
    codes (sizes only when the user gave them, else inferred from the codes)."""
    record = SPACES[space]
    if not external and record.check_data:
        record.check_data(items, opts)
    return record.train(tokenizer_class(space), items, opts, user_opts, external, on_progress)


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

