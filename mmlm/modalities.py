"""The modality registry: what each token space, segment modality and dataset kind needs, in one place.

    SPACES       token space -> its tokenizer class(es), how it is trained, its `mmlm tokenize` settings
                 (defaults, checks)
    MODALITIES   segment modality -> its token space, file extension, writer, generate prompt option
    KINDS        dataset kind (what `mmlm tokenize` reads) -> its segments, raw-file extensions, reader

Adding a modality means adding its records here and its tokenizer module under mmlm/tokenizers/.
This module is the bottom of the tokenize stack: it imports no other part of the pipeline
(tokenizer modules are imported on demand, when a record's function runs).
"""
from __future__ import annotations

import importlib
import inspect
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import readers
from .errors import MmlmError

# ---- token spaces ---------------------------------------------------------------------------------


def _train_text(cls, items, opts, user_opts, external, on_progress):
    from .tokenizers.text import text_pieces

    # in bounded pieces: the same merges as whole documents, a fraction of the memory
    return cls.train((p for t in items for p in text_pieces(t)), vocab_size=opts["vocab_size"], seed=opts["seed"])


def _train_molecule(cls, items, opts, user_opts, external, on_progress):
    return cls.train(items, seed=opts["seed"])


def _train_image(cls, items, opts, user_opts, external, on_progress):
    if external:
        shapes = sorted({tuple(g.shape) for g in items})
        if len(shapes) > 1:
            raise MmlmError(f"external image codes: the inputs hold grids of different shapes {shapes[:3]}")
        return cls.from_codes(np.stack(items), codebook=user_opts.get("codebook"))
    if opts["tokenizer"] == "vqvae":
        cls = tokenizer_class("image", {"tokenizer": "vqvae"})
        return cls.train(items, size=opts["image_size"], downsample=opts["downsample"], codebook=opts["codebook"],
                         steps=opts["train_steps"], seed=opts["seed"], on_progress=on_progress)
    return cls.train(items, size=opts["image_size"], patch=opts["patch"], codebook=opts["codebook"], seed=opts["seed"])


def _train_speech(cls, items, opts, user_opts, external, on_progress):
    if external:
        return cls.from_units(items, units=user_opts.get("units"))
    return cls.train(items, units=opts["units"], seed=opts["seed"])


# ---- checks of a token space's settings (messages name the `mmlm tokenize` options) ------------------

def _sample_limit(space: str) -> int:
    """How many vectors (patches, frames) k-means of `space` learns from at most (its `sample` default)."""
    return int(inspect.signature(tokenizer_class(space).train).parameters["sample"].default)


def _kmeans_limit(opts: dict, opt: str, space: str, what: str) -> None:
    limit = _sample_limit(space)
    if opts[opt] > limit:
        raise MmlmError(f"--{opt} {opts[opt]}: more than the {limit:,} {what} k-means learns from; "
                        f"use at most {limit:,}")


def _codes_fit(k: int, have: int, opt: str, what: str) -> None:
    """A codebook needs at least as many training vectors as codes (k-means on fewer has nothing to learn)."""
    if k > have:
        raise MmlmError(f"{opt} {k}: the training data holds only {have:,} {what}; "
                        f"use at most {have:,} codes, or more data")


def _image_options(given: dict, external: bool) -> None:
    """--tokenizer and the options that belong to one image tokenizer only."""
    kind = given.get("tokenizer")
    choices = tuple(SPACES["image"].tokenizers)
    if kind is not None and kind not in choices:
        raise MmlmError(f"--tokenizer {kind!r}: unknown image tokenizer (one of {', '.join(choices)})")
    if external and kind is not None:
        raise MmlmError("--tokenizer chooses how raw images are tokenized; --external imports codes as they are")
    if kind == "vqvae" and given.get("patch") is not None:
        raise MmlmError("--patch is the k-means patch side; the VQ-VAE's code grid comes from --downsample")
    for opt in ("downsample", "train_steps"):
        if given.get(opt) is not None and kind != "vqvae":
            raise MmlmError(f"--{opt.replace('_', '-')} is a VQ-VAE option: add --tokenizer vqvae")


def _image_bounds(opts: dict) -> None:
    from .bounds import check_memory

    size, patch = opts["image_size"], opts["patch"]
    if patch > size:
        raise MmlmError(f"--patch {patch}: larger than --image-size {size}")
    per_image = (size // patch) ** 2
    keep = math.ceil(4 * _sample_limit("image") / per_image)  # training images ImageTokenizer.train reads at most
    check_memory(size * size * 3 * 4 * (keep + 2), f"--image-size {size}",
                 f"{keep} training image(s) of {size}x{size} pixels in float32")
    _kmeans_limit(opts, "codebook", "image", "image patches")


def _image_data(items: list, opts: dict) -> None:
    if opts.get("tokenizer", "kmeans") == "kmeans":  # the VQ-VAE checks its codebook against its latent vectors
        per_image = (opts["image_size"] // opts["patch"]) ** 2
        _codes_fit(opts["codebook"], len(items) * per_image, "--codebook",
                   f"patches ({len(items)} image(s) x {per_image})")


def _speech_data(items: list, opts: dict) -> None:
    from .tokenizers.speech import HOP, SR

    seconds = sum(len(w[0]) / w[1] for w in items)
    _codes_fit(opts["units"], int(seconds * SR / HOP), "--units", f"20 ms frames ({seconds:.1f} s of audio)")


def _image_saved(saved: dict) -> dict:
    # k-means files predate the "tokenizer" key
    return saved if saved.get("mode") == "external" else {"tokenizer": "kmeans", **saved}


@dataclass(frozen=True)
class Setting:
    """A tokenizer setting of `mmlm tokenize` (its option --<name>): the default, and its key in the trained
    tokenizer's settings in vocab.json, compared to catch a request that would retrain it."""

    default: Any
    key: str
    size: bool = True  # a positive integer where given


@dataclass(frozen=True)
class Space:
    """A token space: one id range of the vocabulary and the tokenizer that fills it."""

    name: str
    # tokenizer classes as "module:Class", keyed by vocab.json's "tokenizer" field; the first is the default
    tokenizers: dict[str, str]
    # train(cls, items, opts, user_opts, external, on_progress) -> tokenizer (opts: defaults filled in)
    train: Callable
    media: bool = False  # raw files are media: external codes can be imported
    size_setting: str | None = None  # the setting that sizes the id space (external codes must fit it)
    unk: int | None = None  # the local id of an <unk> token, counted in a dataset's meta.json
    settings: dict[str, Setting] = field(default_factory=dict)  # `mmlm tokenize` option -> Setting
    # checks before any input is read: check_options(settings as given, external), for every dataset;
    # check_bounds(settings with defaults), for datasets of this space from raw files (work or memory unbounded)
    check_options: Callable[[dict, bool], None] | None = None
    check_bounds: Callable[[dict], None] | None = None
    check_data: Callable[[list, dict], None] | None = None  # (training items, settings), before training
    saved: Callable[[dict], dict] = lambda saved: saved  # a vocab.json tokenizer entry as the settings checks read it


SPACES = {s.name: s for s in (
    Space("text", {"bpe": "mmlm.tokenizers.text:BPETokenizer"}, _train_text,
          settings={"vocab_size": Setting(4096, "vocab_size")}),
    Space("image", {"kmeans": "mmlm.tokenizers.image:ImageTokenizer",
                    "vqvae": "mmlm.tokenizers.vqvae:VQVAETokenizer"}, _train_image, media=True,
          # downsample, train_steps: None = the VQ-VAE's own defaults (mmlm.tokenizers.vqvae)
          settings={"image_size": Setting(32, "size"), "patch": Setting(4, "patch"),
                    "codebook": Setting(256, "codebook"), "tokenizer": Setting("kmeans", "tokenizer", size=False),
                    "downsample": Setting(None, "downsample"), "train_steps": Setting(None, "steps")},
          check_options=_image_options, check_bounds=_image_bounds, check_data=_image_data, saved=_image_saved,
          size_setting="codebook"),
    Space("speech", {"kmeans": "mmlm.tokenizers.speech:SpeechTokenizer"}, _train_speech, media=True,
          settings={"units": Setting(100, "units")},
          check_bounds=lambda opts: _kmeans_limit(opts, "units", "speech", "speech frames"), check_data=_speech_data,
          size_setting="units"),
    Space("molecule", {"smiles": "mmlm.tokenizers.molecule:SmilesTokenizer"}, _train_molecule, unk=0),
)}
# every `mmlm tokenize` tokenizer setting: option -> (its token space, Setting)
SETTINGS = {opt: (space.name, s) for space in SPACES.values() for opt, s in space.settings.items()}


def tokenizer_class(space: str, entry: dict | None = None):
    """The tokenizer class of a token space (imported on demand); `entry`, its vocab.json record,
    tells which one was trained (image: k-means or VQ-VAE)."""
    if space not in SPACES:
        raise MmlmError(f"unknown token space {space!r}")
    impls = SPACES[space].tokenizers
    module, cls = impls.get((entry or {}).get("tokenizer"), next(iter(impls.values()))).split(":")
    return getattr(importlib.import_module(module), cls)


# ---- segment modalities -----------------------------------------------------------------------------

def _png(item) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(item, dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _wav(item) -> bytes:
    import soundfile as sf

    wave, sr = item
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, dtype=np.float32), int(sr), format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _utf8(item) -> bytes:
    return str(item).encode("utf-8")


def _smiles_info(item) -> dict:
    from .tokenizers.molecule import check_smiles, rdkit_available

    why = check_smiles(item)
    return {"valid": why is None, "invalid_reason": why, "checked_with": "rdkit" if rdkit_available() else "syntax"}


@dataclass(frozen=True)
class Modality:
    """A segment modality: what sits between `<name>` and `</name>` in a document."""

    name: str
    space: str
    extension: str  # of a decoded segment's file
    to_bytes: Callable[[Any], bytes] = _utf8  # a decoded segment as file bytes
    describe: Callable[[Any], dict] = lambda item: {}  # what generate reports about a decoded segment
    prompt_option: str | None = None  # generate's option that prompts with this modality
    read_prompt: Callable[[Any], Any] = lambda value: value  # that option's value -> a segment item


MODALITIES = {m.name: m for m in (
    Modality("text", "text", ".txt", prompt_option="--prompt"),
    Modality("code", "text", ".txt"),
    Modality("image", "image", ".png", _png, lambda item: {"shape": list(np.asarray(item).shape)},
             "--prompt-image", readers.read_image),
    Modality("speech", "speech", ".wav", _wav, lambda item: {"seconds": round(len(item[0]) / item[1], 3)},
             "--prompt-audio", readers.read_audio),
    Modality("molecule", "molecule", ".smi", describe=_smiles_info, prompt_option="--prompt-smiles"),
)}


def encode_item(modality: str, item) -> bytes:
    """A decoded segment as file bytes: UTF-8 text, PNG or 16-bit PCM WAV."""
    return MODALITIES[modality].to_bytes(item)


# ---- dataset kinds: reading raw files into documents ----------------------------------------------
# A reader gets (path, ctx, out): ctx has strict, allow_outside and, for external codes, ids (space -> the
# number of ids they must fit, or None: any); out collects
# documents (`out.docs`, each a list of (modality, item) segments) and skipped inputs (`out.skip(why)`).

def _read_text(path: Path, ctx, out) -> None:
    _add_texts("text", path, readers.read_text_documents(path), out)


def _read_code(path: Path, ctx, out) -> None:
    _add_texts("code", path, [readers.read_utf8(path)], out)


def _add_texts(modality: str, path: Path, texts: list[str], out) -> None:
    for t in texts:
        if t.strip():
            out.docs.append([(modality, t)])
        else:
            out.skip(f"{path}: empty document")


def _read_image(path: Path, ctx, out) -> None:
    out.docs.append([("image", readers.read_image(path))])


def _read_image_codes(path: Path, ctx, out) -> None:
    from .tokenizers.image import load_codes

    out.docs.extend([[("image", g)] for g in load_codes(path, ctx.ids.get("image"))])


def _read_speech(path: Path, ctx, out) -> None:
    out.docs.append([("speech", readers.read_audio(path))])


def _read_speech_units(path: Path, ctx, out) -> None:
    from .tokenizers.speech import load_units

    out.docs.extend([[("speech", u)] for u in load_units(path, ctx.ids.get("speech"))])


def _read_smiles(path: Path, ctx, out) -> None:
    from .tokenizers.molecule import check_smiles

    for no, smiles in readers.iter_smiles(path):
        why = check_smiles(smiles)
        if why is None:
            out.docs.append([("molecule", smiles)])
        elif ctx.strict:
            raise MmlmError(f"{path}:{no}: invalid SMILES {smiles!r} ({why})")
        else:
            out.skip(f"{path}:{no}: invalid SMILES {smiles!r} ({why})")


def _manifest_reader(media_key: str, read_media: Callable, modality: str) -> Callable:
    """A reader of a JSONL manifest pairing media files (`media_key`) with their text."""
    def read(path: Path, ctx, out) -> None:
        for no, media_path, text in readers.read_manifest(path, media_key, ctx.allow_outside):
            try:
                item = read_media(media_path)
            except MmlmError as e:
                raise MmlmError(f"{path}:{no}: {e}") from None
            out.docs.append([(modality, item), ("text", text)])
    return read


@dataclass(frozen=True)
class Kind:
    """A dataset kind: the segments of its documents and how its raw files are read."""

    name: str
    segments: tuple[str, ...]  # segment modalities of one document, media first for a pair
    extensions: tuple[str, ...]  # raw input files
    what: str  # the inputs, in messages ("no SMILES files found")
    read: Callable  # read(path, ctx, out), see above
    # imported external codes (.npy files of ids): their extensions and reader; None: not importable
    external: tuple[tuple[str, ...], Callable] | None = field(default=None)


# the order is `mmlm tokenize`'s list of kinds (and the order of DATASET_KINDS)
KINDS = {k.name: k for k in (
    Kind("text", ("text",), readers.TEXT_EXTS, "text", _read_text),
    Kind("code", ("code",), readers.CODE_EXTS, "code", _read_code),
    Kind("image", ("image",), readers.IMAGE_EXTS, "image", _read_image, ((".npy",), _read_image_codes)),
    Kind("speech", ("speech",), readers.AUDIO_EXTS, "audio", _read_speech, ((".npy", ".npz"), _read_speech_units)),
    Kind("molecule", ("molecule",), readers.SMILES_EXTS, "SMILES", _read_smiles),
    Kind("image-text", ("image", "text"), readers.MANIFEST_EXTS, "image-text manifest",
         _manifest_reader("image", readers.read_image, "image")),
    Kind("speech-text", ("speech", "text"), readers.MANIFEST_EXTS, "speech-text manifest",
         _manifest_reader("audio", readers.read_audio, "speech")),
)}


def spaces_of(kind: str) -> list[str]:
    """The token spaces a dataset kind's documents draw ids from, in segment order."""
    return list(dict.fromkeys(MODALITIES[m].space for m in KINDS[kind].segments))
