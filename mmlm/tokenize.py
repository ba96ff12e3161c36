"""The tokenize pipeline: raw files -> token datasets that share one vocabulary.

    tokenize_dataset(kind, inputs, data_root, ...)   read, (train or reuse tokenizers), encode, write
    data_info(data_root)                             what `mmlm tokenize info --json` prints
    decode_document(data_root, dataset, k, out)      a document back to text / PNG / WAV files
    build_demo(data_root)                            the built-in demo corpus, all seven kinds

A data root holds `vocab.json` (mmlm.vocab), `tokenizers/<space>.json` (+ arrays beside it) and one
folder per dataset (mmlm.shards). A token space's tokenizer is trained the first time a dataset
needs it and reused from then on, never retrained: asking for different settings is an error.
Only one tokenize runs in a data root at a time (a lock file, `.lock`).

Progress: `on_progress(stage, done, total, tokens)` is called as work advances; `stage` names
what is running ("read", "train text", "encode"), `done`/`total` count files or documents
(total 0 when unknown), `tokens` counts tokens written so far.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from . import __version__, atomic, readers
from .errors import MmlmError
from .shards import TOKEN_DTYPE, Dataset, DatasetWriter, list_datasets
from .vocab import DATASET_KINDS, SPACE_OF, Vocab

Progress = Callable[[str, int, int, int], None]

DEFAULTS = {"vocab_size": 4096, "image_size": 32, "patch": 4, "codebook": 256, "units": 100, "seed": 0}
# CLI option -> (token space, key in the tokenizer's settings), to catch a request to retrain
_SETTING_KEYS = {
    "vocab_size": ("text", "vocab_size"),
    "image_size": ("image", "size"),
    "patch": ("image", "patch"),
    "codebook": ("image", "codebook"),
    "units": ("speech", "units"),
}
_ENCODE_CHUNK = 256  # documents encoded (and written) per step
_TEXT_PIECE = 1 << 16  # characters of text the BPE trains on / encodes at once (bounds its memory)
_TEXT_BATCH = 4 * _TEXT_PIECE  # characters encoded per encode_batch call
_MAX_SKIP_EXAMPLES = 20
_RESERVED_NAMES = {"tokenizers", "raw", "vocab.json"}


def _noop(stage: str, done: int, total: int, tokens: int) -> None:
    pass


# --- tokenizers on disk ----------------------------------------------------------------------

def tokenizer_class(space: str):
    """The tokenizer class of a token space (imported on demand)."""
    if space == "text":
        from .tokenizers.text import BPETokenizer
        return BPETokenizer
    if space == "molecule":
        from .tokenizers.molecule import SmilesTokenizer
        return SmilesTokenizer
    if space == "image":
        from .tokenizers.image import ImageTokenizer
        return ImageTokenizer
    if space == "speech":
        from .tokenizers.speech import SpeechTokenizer
        return SpeechTokenizer
    raise MmlmError(f"unknown token space {space!r}")


def load_tokenizer(root: str | Path, space: str, vocab: Vocab | None = None):
    """Load the saved tokenizer of `space` from a folder holding vocab.json and tokenizers/
    (a data root, or a run folder that copied them)."""
    root = Path(root)
    vocab = vocab or Vocab.load(root / "vocab.json")
    if space not in vocab.tokenizers:
        raise MmlmError(f"{root / 'vocab.json'}: no '{space}' tokenizer (tokenize a {space} dataset first)")
    path = root / vocab.tokenizers[space].get("file", f"tokenizers/{space}.json")
    tok = tokenizer_class(space).load(path)
    first, last = vocab.ranges[space]
    if tok.n_tokens != last - first + 1:
        raise MmlmError(f"{path}: has {tok.n_tokens} tokens but vocab.json gives '{space}' {last - first + 1} ids")
    return tok


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


# --- reading raw inputs into documents -----------------------------------------------------

class _Docs:
    """Documents read from the inputs: each a list of (modality, item) segments."""

    def __init__(self) -> None:
        self.docs: list[list[tuple[str, Any]]] = []
        self.files: list[Path] = []
        self.skipped: list[str] = []
        self.n_skipped = 0
        self.hash = hashlib.sha256()

    def skip(self, why: str) -> None:
        self.n_skipped += 1
        if len(self.skipped) < _MAX_SKIP_EXAMPLES:
            self.skipped.append(why)

    def add_file(self, path: Path) -> None:
        self.files.append(path)
        self.hash.update(str(path.name).encode() + b"\0")
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    self.hash.update(block)
        except OSError as e:
            raise MmlmError(f"{path}: cannot read ({e.strerror or e})") from None


def _read_inputs(kind: str, inputs: list[Path], strict: bool, external: bool, opts: dict, vocab: Vocab,
                 on_progress: Progress, allow_outside: bool = False) -> _Docs:
    out = _Docs()
    if external:  # ids must fit the range asked for, or the one this data root already has
        space_size = {s: last - first + 1 for s, (first, last) in vocab.ranges.items()}
        opts = {"codebook": opts.get("codebook") or space_size.get("image"),
                "units": opts.get("units") or space_size.get("speech")}
    if kind in ("text", "code"):
        files = readers.find_files(inputs, readers.TEXT_EXTS if kind == "text" else readers.CODE_EXTS, kind)
    elif kind == "image":
        files = readers.find_files(inputs, (".npy",) if external else readers.IMAGE_EXTS, "image")
    elif kind == "speech":
        files = readers.find_files(inputs, (".npy", ".npz") if external else readers.AUDIO_EXTS, "audio")
    elif kind == "molecule":
        files = readers.find_files(inputs, readers.SMILES_EXTS, "SMILES")
    else:
        files = readers.find_files(inputs, readers.MANIFEST_EXTS, f"{kind} manifest")
    total = len(files)
    on_progress("read", 0, total, 0)
    for i, path in enumerate(files):
        out.add_file(path)
        if kind in ("text", "code"):
            texts = readers.read_text_documents(path) if kind == "text" else [readers.read_utf8(path)]
            for t in texts:
                if t.strip():
                    out.docs.append([(kind, t)])
                else:
                    out.skip(f"{path}: empty document")
        elif kind == "image" and external:
            from .tokenizers.image import load_codes
            out.docs.extend([[("image", g)] for g in load_codes(path, opts.get("codebook"))])
        elif kind == "image":
            out.docs.append([("image", readers.read_image(path))])
        elif kind == "speech" and external:
            from .tokenizers.speech import load_units
            out.docs.extend([[("speech", u)] for u in load_units(path, opts.get("units"))])
        elif kind == "speech":
            out.docs.append([("speech", readers.read_audio(path))])
        elif kind == "molecule":
            _read_smiles(path, strict, out)
        else:
            media_key, read_media, modality = (
                ("image", readers.read_image, "image") if kind == "image-text" else ("audio", readers.read_audio, "speech"))
            for no, media_path, text in readers.read_manifest(path, media_key, allow_outside):
                try:
                    item = read_media(media_path)
                except MmlmError as e:
                    raise MmlmError(f"{path}:{no}: {e}") from None
                out.docs.append([(modality, item), ("text", text)])
        on_progress("read", i + 1, total, 0)
    if not out.docs:
        extra = f" ({out.n_skipped} skipped: {out.skipped[0]})" if out.n_skipped else ""
        raise MmlmError(f"{', '.join(map(str, inputs))}: no {kind} documents found (empty input){extra}")
    return out


def _read_smiles(path: Path, strict: bool, out: _Docs) -> None:
    from .tokenizers.molecule import check_smiles

    for no, smiles in readers.iter_smiles(path):
        why = check_smiles(smiles)
        if why is None:
            out.docs.append([("molecule", smiles)])
        elif strict:
            raise MmlmError(f"{path}:{no}: invalid SMILES {smiles!r} ({why})")
        else:
            out.skip(f"{path}:{no}: invalid SMILES {smiles!r} ({why})")


def _read_training_texts(paths: list[Path]) -> list[str]:
    """Extra text for BPE training (`train_on`): text files as documents, anything else as code."""
    texts = []
    for path in readers.find_files(paths, readers.TEXT_EXTS + readers.CODE_EXTS, "text or code"):
        texts.extend(readers.read_text_documents(path) if path.suffix.lower() in readers.TEXT_EXTS
                     else [readers.read_utf8(path)])
    return texts


# --- training or reusing tokenizers --------------------------------------------------------

def _check_settings(space: str, saved: dict, opts: dict, where: Path) -> None:
    for opt, (sp, key) in _SETTING_KEYS.items():
        if sp == space and opts.get(opt) is not None and key in saved and saved[key] != opts[opt]:
            flag = "--" + opt.replace("_", "-")
            raise MmlmError(
                f"{where}: the {space} tokenizer here was trained with {key}={saved[key]}; {flag} {opts[opt]} "
                f"would retrain it, which would change existing ids (use a new data root)")


def _train(space: str, items: list, opts: dict, user_opts: dict, external: bool):
    """Train a tokenizer (opts: settings with defaults filled in), or set one up for external
    codes (sizes only when the user gave them, else inferred from the codes)."""
    seed = opts["seed"]
    cls = tokenizer_class(space)
    if not external:
        _check_codes_fit_data(space, items, opts)
    if space == "text":  # in bounded pieces: the same merges as whole documents, a fraction of the memory
        return cls.train((p for t in items for p in text_pieces(t)), vocab_size=opts["vocab_size"], seed=seed)
    if space == "molecule":
        return cls.train(items, seed=seed)
    if space == "image":
        if external:
            shapes = sorted({tuple(g.shape) for g in items})
            if len(shapes) > 1:
                raise MmlmError(f"external image codes: the inputs hold grids of different shapes {shapes[:3]}")
            return cls.from_codes(np.stack(items), codebook=user_opts.get("codebook"))
        return cls.train(items, size=opts["image_size"], patch=opts["patch"], codebook=opts["codebook"], seed=seed)
    if external:
        return cls.from_units(items, units=user_opts.get("units"))
    return cls.train(items, units=opts["units"], seed=seed)


def _sample_limit(space: str) -> int:
    """How many vectors (patches, frames) k-means of `space` learns from at most (its `sample` default)."""
    import inspect

    return int(inspect.signature(tokenizer_class(space).train).parameters["sample"].default)


def _check_bounds(opts: dict) -> None:
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
    """A codebook needs at least as many training vectors as codes (k-means on fewer has nothing to learn)."""
    if space == "image":
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


def _ensure_tokenizers(root: Path, vocab: Vocab, spaces: list[str], docs: _Docs, opts: dict, user_opts: dict,
                       external: bool, train_on: list[Path], on_progress: Progress) -> tuple[dict, list[str]]:
    """Load each needed tokenizer, training (and recording in vocab.json) the ones not there yet."""
    toks, trained = {}, []
    for space in spaces:
        if space in vocab.ranges:
            entry = vocab.tokenizers.get(space, {})
            where = root / entry.get("file", f"tokenizers/{space}.json")
            _check_settings(space, entry, user_opts, where)
            tok = load_tokenizer(root, space, vocab)
            if space in ("image", "speech") and bool(getattr(tok, "external", False)) != external:
                have = "external codes" if getattr(tok, "external", False) else "a trained codebook"
                raise MmlmError(f"{where}: the {space} tokens here come from {have}; "
                                f"{'importing external codes' if external else 'raw media'} would need a new data root")
            toks[space] = tok
            continue
        on_progress(f"train {space}", 0, 0, 0)
        items = [item for doc in docs.docs for m, item in doc if SPACE_OF[m] == space]
        if space == "text" and train_on:
            items = items + _read_training_texts(train_on)
        tok = _train(space, items, opts, user_opts, external)
        rel = f"tokenizers/{space}.json"
        tok.save(root / rel)
        vocab.add_space(space, tok.n_tokens, {"kind": space, "file": rel, **tok.settings})
        vocab.save(root / "vocab.json")
        toks[space] = tok
        trained.append(space)
        on_progress(f"train {space}", 1, 1, 0)
    return toks, trained


# --- encoding -------------------------------------------------------------------------------

def assemble_document(vocab: Vocab, segments: Iterable[tuple[str, np.ndarray]], dtype=np.int64) -> np.ndarray:
    """Global ids of a document: each (modality, local ids) segment inside its sentinels, then <eos>.
    The inverse of `split_document`."""
    segments = [(m, np.asarray(local).reshape(-1)) for m, local in segments]
    out = np.empty(sum(local.size + 2 for _, local in segments) + 1, dtype=dtype)  # one allocation: long documents
    at = 0
    for m, local in segments:
        out[at] = vocab.begin(m)
        body = out[at + 1:at + 1 + local.size]
        body[:] = local
        body += vocab.offset(m)
        at += local.size + 1
        out[at] = vocab.end(m)
        at += 1
    out[at] = vocab.eos
    return out


def text_pieces(text: str, limit: int = _TEXT_PIECE) -> Iterator[str]:
    """`text` cut into pieces of about `limit` characters at places where a non-space character is
    followed by whitespace. The byte-level BPE's pre-tokenizer (the GPT-2 regex, no look-behind)
    always splits there, so training on or encoding the pieces gives exactly what the whole text
    gives, with memory bounded by the piece. A stretch of `limit` characters without such a place
    (minified code, base64) is cut at `limit`, where ids may differ from the whole text's (decoding
    still gives the text back byte for byte)."""
    n, start = len(text), 0
    while n - start > limit:
        cut = start + limit
        while cut > start + limit // 2 and not (text[cut] in " \n" and not text[cut - 1].isspace()):
            cut -= 1
        if cut == start + limit // 2:
            cut = start + limit
        yield text[start:cut]
        start = cut
    yield text[start:]


def _encode_texts(tok, texts: list[str]) -> Iterator[np.ndarray]:
    """The BPE ids of each text, encoded in bounded pieces (see `text_pieces`)."""
    for text in texts:
        parts: list[np.ndarray] = []
        batch: list[str] = []
        size = 0
        for piece in text_pieces(text):
            batch.append(piece)
            size += len(piece)
            if size >= _TEXT_BATCH:
                parts += [a.astype(np.int32) for a in tok.encode_batch(batch)]
                batch, size = [], 0
        if batch:
            parts += [a.astype(np.int32) for a in tok.encode_batch(batch)]
        yield parts[0] if len(parts) == 1 else np.concatenate(parts)


def _encoded_documents(docs: list, toks: dict, vocab: Vocab, text_first: np.ndarray) -> Iterator[np.ndarray]:
    """Each document's global ids, encoding a chunk of documents at a time (the BPE in one batch)."""
    for lo in range(0, len(docs), _ENCODE_CHUNK):
        chunk = docs[lo:lo + _ENCODE_CHUNK]
        encoded = {}
        for space, tok in toks.items():
            items = [item for doc in chunk for m, item in doc if SPACE_OF[m] == space]
            encoded[space] = _encode_texts(tok, items) if space == "text" else iter([tok.encode(x) for x in items])
        for j, doc in enumerate(chunk):
            segments = [(m, next(encoded[SPACE_OF[m]])) for m, _ in doc]
            yield assemble_document(vocab, segments[::-1] if text_first[lo + j] else segments, TOKEN_DTYPE)


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


def tokenize_dataset(kind: str, inputs: Iterable[str | Path], data_root: str | Path, name: str | None = None,
                     strict: bool = False, on_progress: Progress | None = None, **opts) -> dict:
    """Tokenize raw `inputs` of one dataset kind into `data_root/<name>`; returns a summary dict.

    kind: text, code, image, speech, molecule, image-text or speech-text.
    opts: vocab_size, image_size, patch, codebook, units (tokenizer settings, used when the token
    space's tokenizer is trained here; None = saved or default), seed (tokenizer training and the
    order of paired segments), train_on (extra text/code files for BPE training), external
    (image/speech: inputs are .npy files of externally made codes/units).
    """
    if kind not in DATASET_KINDS:
        raise MmlmError(f"unknown dataset kind {kind!r} (one of {', '.join(DATASET_KINDS)})")
    unknown = set(opts) - set(DEFAULTS) - {"train_on", "external", "allow_outside"}
    if unknown:
        raise MmlmError(f"unknown tokenize option(s): {', '.join(sorted(unknown))}")
    for key, value in opts.items():
        if key in ("vocab_size", "image_size", "patch", "codebook", "units") and value is not None and value < 1:
            raise MmlmError(f"--{key.replace('_', '-')} must be a positive integer, got {value}")
    external = bool(opts.pop("external", False))
    allow_outside = bool(opts.pop("allow_outside", False))
    if external and kind not in ("image", "speech"):
        raise MmlmError(f"external codes can be imported for image and speech, not {kind}")
    train_on = [Path(p) for p in (opts.pop("train_on", None) or [])]
    if train_on and "text" not in (SPACE_OF[m] for m in DATASET_KINDS[kind]):
        raise MmlmError(f"--train-on trains the text BPE; {kind} datasets hold no text")
    user_opts = dict(opts)
    opts = {**DEFAULTS, **{k: v for k, v in opts.items() if v is not None}}
    if kind in ("image", "image-text", "speech", "speech-text") and not external:
        _check_bounds(opts)
    on_progress = on_progress or _noop
    name = _check_name(name or kind)
    inputs = [Path(p) for p in inputs]
    root = Path(data_root)
    if root.exists() and not root.is_dir():
        raise MmlmError(f"{root}: --data must be a folder, this is a file")
    _check_replaceable(root / name)  # before anything is read or trained
    t0 = time.perf_counter()

    with _locked(root), _one_blas_thread():
        vocab = _load_vocab(root)
        docs = _read_inputs(kind, inputs, strict, external, user_opts, vocab, on_progress, allow_outside)
        modalities = DATASET_KINDS[kind]
        spaces = list(dict.fromkeys(SPACE_OF[m] for m in modalities))
        toks, trained = _ensure_tokenizers(root, vocab, spaces, docs, opts, user_opts, external, train_on,
                                           on_progress)

        # paired documents: media first or text first, drawn per document with the seed
        rng = np.random.default_rng(opts["seed"])
        text_first = rng.random(len(docs.docs)) < 0.5 if len(modalities) > 1 else np.zeros(len(docs.docs), bool)
        _remove_stale(root, name)
        n_docs, n_tokens, n_unk = len(docs.docs), 0, 0
        unk = vocab.offset("molecule") if kind == "molecule" else -1  # the SMILES <unk>, local id 0
        with DatasetWriter(root / name) as writer:
            on_progress("encode", 0, n_docs, 0)
            for k, tokens in enumerate(_encoded_documents(docs.docs, toks, vocab, text_first), 1):
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
                "seed": opts["seed"],
                "mmlm_version": __version__,
            }
            if len(modalities) > 1:
                meta["order"] = {f"{modalities[1]}-first": int(text_first.sum()),
                                 f"{modalities[0]}-first": int((~text_first).sum())}
            if kind == "molecule":
                meta["unknown_tokens"] = n_unk
            writer.meta.update(meta)

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


def split_document(vocab: Vocab, ids) -> list[tuple[str, np.ndarray]]:
    """The segments of a token sequence: [(modality, local ids)], in order (see `assemble_document`).

    A segment runs from `<m>` to `</m>` (or to <eos> / the end when unclosed). Ids inside a
    segment that are not in its modality's range are dropped, as is anything outside segments,
    so that a sampled sequence decodes as far as it makes sense.
    """
    begins = {vocab.begin(m): m for m in SPACE_OF}
    ends = {vocab.end(m) for m in SPACE_OF}
    segments, current, local = [], None, []
    for t in np.asarray(ids, dtype=np.int64).tolist():
        if t in begins or t in ends or t == vocab.eos:
            if current is not None:
                segments.append((current, np.asarray(local, dtype=np.int64)))
            current, local = begins.get(t), []
            if t == vocab.eos:
                break
        elif current is not None:
            first, last = vocab.range_of(current)
            if first <= t <= last:
                local.append(t - first)
    if current is not None:
        segments.append((current, np.asarray(local, dtype=np.int64)))
    return segments


EXTENSIONS = {"text": ".txt", "code": ".txt", "molecule": ".txt", "image": ".png", "speech": ".wav"}


def encode_item(modality: str, item) -> bytes:
    """A decoded segment as file bytes: UTF-8 text, PNG or 16-bit PCM WAV."""
    if modality == "image":
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(np.asarray(item, dtype=np.uint8), "RGB").save(buf, format="PNG")
        return buf.getvalue()
    if modality == "speech":
        import soundfile as sf
        wave, sr = item
        buf = io.BytesIO()
        sf.write(buf, np.asarray(wave, dtype=np.float32), int(sr), format="WAV", subtype="PCM_16")
        return buf.getvalue()
    return str(item).encode("utf-8")


def _earlier_decode(folder: Path) -> set[str]:
    """Names a decode of a paired document writes (`1-image.png`, `2-text.txt`, ...)."""
    pattern = re.compile(r"\d+-(?:%s)\.(?:txt|png|wav)" % "|".join(EXTENSIONS))
    return {p.name for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_file()}


def decode_document(data_root: str | Path, dataset: str, k: int, out: str | Path) -> list[Path]:
    """Write document `k` of `dataset` to `out`: one file for a single segment (UTF-8 text, PNG,
    WAV), or a folder holding `1-<modality>.<ext>`, `2-...` in document order for a pair."""
    root = Path(data_root)
    vocab = Vocab.load(root / "vocab.json")
    if not (root / dataset).is_dir():
        have = ", ".join(list_datasets(root)) or "none"
        raise MmlmError(f"{root / dataset}: no such dataset (datasets here: {have})")
    ds = Dataset(root / dataset)
    segments = split_document(vocab, ds.doc(k))
    if not segments:
        raise MmlmError(f"{ds.path}: document {k} holds no segments")
    toks: dict[str, Any] = {}
    files = []
    for m, local in segments:
        space = SPACE_OF[m]
        if space not in toks:
            toks[space] = load_tokenizer(root, space, vocab)
        files.append((m, encode_item(m, toks[space].decode(local))))
    out = Path(out)
    if len(files) == 1:
        if out.is_dir():
            raise MmlmError(f"{out}: is a folder; --out needs a file name for a {files[0][0]} document")
        atomic.write_bytes(out, files[0][1])
        return [out]
    with atomic.output_dir(out, _earlier_decode) as tmp:
        names = [f"{i}-{m}{EXTENSIONS[m]}" for i, (m, _) in enumerate(files, 1)]
        for fname, (_, data) in zip(names, files):
            (tmp / fname).write_bytes(data)
    return [out / n for n in names]


# --- the demo corpus ---------------------------------------------------------------------------

DEMO_ORDER = ("text", "code", "image", "image-text", "speech", "speech-text", "molecule")


def build_demo(data_root: str | Path, on_progress: Progress | None = None) -> dict:
    """Build the demo corpus: raw files under DATA/raw/, then each of the seven datasets through
    `tokenize_dataset`. Parts already built (raw folders, complete datasets) are kept, so a
    killed build finishes when run again. Returns {"datasets": {name: summary}, "seconds"}."""
    from . import demo_data

    on_progress = on_progress or _noop
    root = Path(data_root)
    t0 = time.perf_counter()
    demo_data.check_requirements()
    raw = demo_data.build_raw(root / "raw", on_progress=on_progress)
    have = set(list_datasets(root)) if root.is_dir() else set()
    opts = {"text": {"vocab_size": 4096, "train_on": raw["code"]}, "image": {"image_size": 32, "patch": 4, "codebook": 256},
            "speech": {"units": 100}}
    results = {}
    for kind in DEMO_ORDER:
        if kind in have:
            ds = Dataset(root / kind)
            results[kind] = {"name": kind, "kind": kind, "documents": len(ds), "tokens": int(ds.offsets[-1]),
                             "kept": True}
            continue
        kind_opts = dict(opts.get(kind, {}))
        if kind == "image-text":
            kind_opts = dict(opts["image"])
        if kind == "speech-text":
            kind_opts = dict(opts["speech"])

        def progress(stage, done, total, tokens, _kind=kind):
            on_progress(f"{_kind}: {stage}", done, total, tokens)

        results[kind] = tokenize_dataset(kind, raw[kind], root, name=kind, on_progress=progress, **kind_opts)
    return {"datasets": results, "seconds": round(time.perf_counter() - t0, 2)}
