"""Building token datasets (`mmlm tokenize`): raw files -> token datasets that share one vocabulary.

    tokenize_dataset(kind, inputs, data_root, ...)   read, (train or reuse tokenizers), encode, write
    data_info(data_root)                             what `mmlm tokenize info --json` prints
    (a document back to files: mmlm.media.decode_document; the built-in demo corpus:
    mmlm.demo_build.build_demo, which calls tokenize_dataset per kind)

One job per module: mmlm.modalities (what each kind and modality needs), mmlm.ingest (reading raw
inputs), mmlm.tokenizer_setup (training or reusing tokenizers), mmlm.encode and mmlm.documents (the
document format), mmlm.media (decoded files), mmlm.demo_build; this module runs them in order.

A data root holds `vocab.json` (mmlm.vocab), `tokenizers/<space>.json` (+ arrays beside it) and one
folder per dataset (mmlm.shards). A token space's tokenizer is trained the first time a dataset
needs it and reused from then on, never retrained: asking for different settings is an error.
Only one tokenize runs in a data root at a time (a lock file, `.lock`).

Progress: `on_progress(stage, done, total, tokens)` (mmlm.progress) is called as work advances; `stage`
names what is running ("read", "train text", "encode"), `done`/`total` count files or documents
(total 0 when unknown), `tokens` counts tokens written so far.
"""
from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import __version__, atomic
from .encode import ENCODE_CHUNK as _ENCODE_CHUNK
from .encode import encoded_documents
from .errors import MmlmError
from .ingest import read_inputs
from .modalities import KINDS, SETTINGS, SPACES, spaces_of
from .progress import Progress, silent
from .shards import Dataset, DatasetWriter, list_datasets
from .tokenizer_setup import ensure_tokenizers
from .vocab import DATASET_KINDS, Vocab

# every tokenizer setting with its default (each token space declares its own: mmlm.modalities), and the seed
DEFAULTS = {**{opt: s.default for opt, (_, s) in SETTINGS.items()}, "seed": 0}
_SIZES = tuple(opt for opt, (_, s) in SETTINGS.items() if s.size)
_RESERVED_NAMES = {"tokenizers", "raw", "vocab.json"}



@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the data root (one tokenize at a time writes vocab.json).
    A data root this call created is removed again if the work fails before writing anything."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(atomic.exclusive(root / ".lock", remove_created=root))
        except atomic.Locked as e:
            raise MmlmError(f"{root}: another tokenize is writing to this data root, {e.holder} "
                            f"(wait for it to finish)") from None
        yield


def _one_blas_thread():
    """Run BLAS single-threaded: tokenizers do many small matrix products (one image, one
    utterance), where BLAS threads cost more than they give under load (idle, one runs at 0.90x: bench/RESULTS.md)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it, run as configured
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _load_vocab(root: Path) -> Vocab:
    path = root / "vocab.json"
    return Vocab.load(path) if path.exists() else Vocab()


def _remove_stale(root: Path, name: str) -> None:
    """Remove temporary folders left by a tokenize of `name` that was killed."""
    for p in root.glob(f".{name}.tmp-*"):
        atomic.remove_if_stale(p)
    for p in root.glob(f".{name}.old-*"):
        atomic.remove_if_stale(p)


_DATASET_FILES = {"meta.json", "tokens.bin", "offsets.npy"}


def _check_replaceable(path: Path) -> None:
    """A dataset folder is replaced whole by a new tokenize of the same name; anything else at that
    path (your own folder or file) is refused, never deleted."""
    if path.is_dir() and (set(p.name for p in path.iterdir()) - _DATASET_FILES or not (path / "meta.json").is_file()):
        if any(path.iterdir()):
            raise MmlmError(f"{path}: exists and is not a dataset of mmlm (it holds other files); "
                            f"choose another --name (nothing was changed)")
    elif path.exists() and not path.is_dir():
        raise MmlmError(f"{path}: exists and is not a folder; choose another --name")


def _check_name(name: str) -> str:
    if not name or name.startswith(".") or name in _RESERVED_NAMES or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise MmlmError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (not starting with '.'; "
                        f"not {', '.join(sorted(_RESERVED_NAMES))})")
    return name


def _check_options(kind: str, opts: dict) -> tuple[dict, dict, bool, bool, list[Path]]:
    """(settings with defaults filled in, settings as given, external, allow_outside, train_on), checked
    before any input is read."""
    if kind not in DATASET_KINDS:
        raise MmlmError(f"unknown dataset kind {kind!r} (one of {', '.join(DATASET_KINDS)})")
    unknown = set(opts) - set(DEFAULTS) - {"train_on", "external", "allow_outside"}
    if unknown:
        raise MmlmError(f"unknown tokenize option(s): {', '.join(sorted(unknown))}")
    for key, value in opts.items():
        if key in _SIZES and value is not None and value < 1:
            raise MmlmError(f"--{key.replace('_', '-')} must be a positive integer, got {value}")
    opts = dict(opts)
    external = bool(opts.pop("external", False))
    allow_outside = bool(opts.pop("allow_outside", False))
    if external and KINDS[kind].external is None:
        importable = " and ".join(k for k, r in KINDS.items() if r.external is not None)
        raise MmlmError(f"external codes can be imported for {importable}, not {kind}")
    train_on = [Path(p) for p in (opts.pop("train_on", None) or [])]
    if train_on and "text" not in spaces_of(kind):
        raise MmlmError(f"--train-on trains the text BPE; {kind} datasets hold no text")
    for space in SPACES.values():  # e.g. image: --tokenizer, and the options of one image tokenizer only
        if space.check_options:
            space.check_options(opts, external)
    settings = {**DEFAULTS, **{k: v for k, v in opts.items() if v is not None}}
    for space in spaces_of(kind):
        if SPACES[space].check_bounds and not external:
            SPACES[space].check_bounds(settings)
    return settings, opts, external, allow_outside, train_on


def _write_dataset(path: Path, kind: str, inputs: list[Path], docs, toks: dict, vocab: Vocab, seed: int,
                   on_progress: Progress) -> tuple[int, int]:
    """Encode the documents into the dataset folder `path` (written whole or not at all); (documents, tokens)."""
    modalities, spaces = KINDS[kind].segments, spaces_of(kind)
    # paired documents: media first or text first, drawn per document with the seed
    rng = np.random.default_rng(seed)
    text_first = rng.random(len(docs.docs)) < 0.5 if len(modalities) > 1 else np.zeros(len(docs.docs), bool)
    n_docs, n_tokens, n_unk = len(docs.docs), 0, 0
    # the <unk> id of a space that has one (the SMILES tokenizer's local id 0), counted in meta.json
    unk = next((vocab.offset(s) + SPACES[s].unk for s in spaces if SPACES[s].unk is not None), -1)
    with DatasetWriter(path) as writer:
        on_progress("encode", 0, n_docs, 0)
        for k, tokens in enumerate(encoded_documents(docs.docs, toks, vocab, text_first), 1):
            writer.add(tokens)
            n_tokens += tokens.size
            n_unk += int(np.count_nonzero(tokens == unk)) if unk >= 0 else 0
            if k % _ENCODE_CHUNK == 0 or k == n_docs:
                on_progress("encode", k, n_docs, n_tokens)
        meta = {
            "kind": kind,
            "modalities": list(modalities),
            "sources": [str(p.resolve()) for p in inputs],
            "files": len(docs.files),
            "sources_sha256": docs.hash.hexdigest(),
            "skipped": {"count": docs.n_skipped, "examples": docs.skipped},
            "tokenizers": {s: vocab.tokenizers[s] for s in spaces},
            "ranges": {s: list(vocab.ranges[s]) for s in spaces},
            "vocab_size": vocab.size,
            "seed": seed,
            "mmlm_version": __version__,
        }
        if len(modalities) > 1:
            meta["order"] = {f"{modalities[1]}-first": int(text_first.sum()),
                             f"{modalities[0]}-first": int((~text_first).sum())}
        if unk >= 0:
            meta["unknown_tokens"] = n_unk
        writer.meta.update(meta)
    return n_docs, n_tokens


def tokenize_dataset(kind: str, inputs: Iterable[str | Path], data_root: str | Path, name: str | None = None,
                     strict: bool = False, on_progress: Progress | None = None, **opts) -> dict:
    """Tokenize raw `inputs` of one dataset kind into `data_root/<name>`; returns a summary dict.

    kind: text, code, image, speech, molecule, image-text or speech-text (mmlm.modalities.KINDS).
    opts: vocab_size, image_size, patch, codebook, units, tokenizer ("kmeans" or "vqvae": the image
    tokenizer), downsample, train_steps (VQ-VAE only) (tokenizer settings, used when the token
    space's tokenizer is trained here; None = saved or default), seed (tokenizer training and the
    order of paired segments), train_on (extra text/code files for BPE training), external
    (image/speech: inputs are .npy files of externally made codes/units).
    """
    opts, user_opts, external, allow_outside, train_on = _check_options(kind, opts)
    on_progress = on_progress or silent
    name = _check_name(name or kind)
    inputs = [Path(p) for p in inputs]
    root = Path(data_root)
    if root.exists() and not root.is_dir():
        raise MmlmError(f"{root}: --data must be a folder, this is a file")
    _check_replaceable(root / name)  # before anything is read or trained
    t0 = time.perf_counter()

    with _locked(root), _one_blas_thread():
        vocab = _load_vocab(root)
        docs = read_inputs(kind, inputs, strict, external, user_opts, vocab, on_progress, allow_outside)
        spaces = spaces_of(kind)
        toks, trained = ensure_tokenizers(root, vocab, spaces, docs, opts, user_opts, external, train_on,
                                          on_progress)
        _remove_stale(root, name)
        n_docs, n_tokens = _write_dataset(root / name, kind, inputs, docs, toks, vocab, opts["seed"], on_progress)

    return {
        "name": name,
        "kind": kind,
        "path": str(root / name),
        "documents": n_docs,
        "tokens": n_tokens,
        "files": len(docs.files),
        "skipped": docs.n_skipped,
        "skipped_examples": docs.skipped,
        "trained": trained,
        "reused": [s for s in spaces if s not in trained],
        "reports": {s: toks[s].report for s in trained if getattr(toks[s], "report", None)},  # VQ-VAE held-out figures
        "vocab_size": vocab.size,
        "seconds": round(time.perf_counter() - t0, 3),
    }


# --- inspecting a data root ------------------------------------------------------------------

def data_info(data_root: str | Path) -> dict:
    """{"vocab_size", "ranges": {space: [first, last]}, "special": {name: id},
    "datasets": {name: {"modality": kind, "documents", "tokens"}}}. Code uses the text range."""
    root = Path(data_root)
    if not root.is_dir():
        raise MmlmError(f"{root}: no such data root")
    vocab = Vocab.load(root / "vocab.json")
    datasets = {}
    for name in list_datasets(root):
        ds = Dataset(root / name)
        datasets[name] = {"modality": ds.kind, "documents": len(ds), "tokens": int(ds.offsets[-1])}
    return {
        "vocab_size": vocab.size,
        "ranges": {k: list(v) for k, v in vocab.ranges.items()},
        "special": dict(vocab.special),
        "datasets": datasets,
    }
