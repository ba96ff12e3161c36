"""The raw demo corpus: real data for all seven dataset kinds from what `pip install` brings.

    text         docstrings of the CPython standard library (ast.get_docstring) and the
                 pydoc topic help (pydoc_data.topics)                                  PSF licence
    code         standard-library .py files, tests left out, about 3.5 MB, cut at top-level
                 statements into pieces of about 2,000 characters                   PSF licence
    image        scikit-learn's digits (1,797 8x8 scans, randomly rotated and shifted) and
                 random crops of its two sample photos (china.jpg, flower.jpg)        CC BY 4.0 / CC BY 2.0
    image-text   the 1,797 digits with captions such as "a handwritten digit 7"        CC BY 4.0
    speech       500 short docstring sentences spoken by eSpeak NG (espeakng-loader)  GPL-3 (voices)
    speech-text  500 more, with their transcripts
    molecule     the SMILES files bundled with RDKit (NCI, WEHI, ChEMBL, ZINC samples),
                 canonicalised and de-duplicated                                     BSD-3

Everything is written under RAW/<kind>/ as ordinary files (JSONL, .py, PNG, WAV, .smi and
manifests), so `mmlm tokenize <kind> RAW/<kind> ...` reads them like any user's data. Each part is
built into a temporary folder and renamed when complete; a part that exists is kept.
"""
from __future__ import annotations

import ast
import io
import json
import random
import re
import sysconfig
from pathlib import Path
from typing import Callable

import numpy as np

from . import atomic
from .errors import MmlmError
from .modalities import KINDS

# the dataset kinds in build order: each pair right after its media, whose tokenizer it reuses (this
# order fixes the demo vocabulary's id ranges)
PARTS = tuple(k for single in KINDS if len(KINDS[single].segments) == 1
              for k in (single, *(p for p in KINDS if len(KINDS[p].segments) > 1 and KINDS[p].segments[0] == single)))
CODE_BYTES = 3_500_000  # stdlib source taken for the code dataset (order 1M BPE tokens)
CODE_PIECE_CHARS = 2000  # code documents: pieces of files cut at top-level statements (_code_pieces)
N_UTTERANCES = 500  # per speech dataset
N_PHOTO_CROPS = 1200
SEED = 0
# the demo's byte-level BPE (text and code): small, so that the embedding and output layer of CPU-sized
# models are not most of their compute (docs/demo.md)
BPE_VOCAB = 512

Progress = Callable[[str, int, int, int], None]


def check_requirements() -> None:
    """Fail early, in one line, when a package the demo needs is missing."""
    missing = []
    try:
        import rdkit  # noqa: F401
    except ImportError:
        missing.append("rdkit")
    try:
        import espeakng_loader  # noqa: F401
    except ImportError:
        missing.append("espeakng-loader")
    if missing:
        raise MmlmError(f"the demo corpus needs {' and '.join(missing)}: pip install {' '.join(missing)} "
                        f"(or pip install 'mmlm[demo]')")


def _noop(stage: str, done: int, total: int, tokens: int) -> None:
    pass


def _stdlib_files() -> list[Path]:
    """CPython standard-library .py files, without tests and site-packages, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    return [p for p in sorted(root.rglob("*.py")) if not skip & set(p.relative_to(root).parts)]


def _docstrings(files: list[Path], on_progress: Progress) -> list[str]:
    docs = []
    for i, path in enumerate(files):
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue  # a few stdlib files are templates or in other encodings
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 40:
                    docs.append(doc)
        if i % 50 == 0:
            on_progress("raw text", i, len(files), 0)
    return docs


def _build_text(out: Path, files: list[Path], on_progress: Progress) -> None:
    docs = _docstrings(files, on_progress)
    lines = [json.dumps({"text": d}, ensure_ascii=False) for d in docs]
    (out / "stdlib_docstrings.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    from pydoc_data.topics import topics

    lines = [json.dumps({"text": topics[k].strip()}, ensure_ascii=False) for k in sorted(topics)]
    (out / "pydoc_topics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _build_code(out: Path, files: list[Path], on_progress: Progress) -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    # every other file in a fixed order, so the cap takes modules from the whole library
    total = 0
    for path in files[::2] + files[1::2]:
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if total + len(data) > CODE_BYTES:
            continue
        rel = path.relative_to(root)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        for k, piece in enumerate(_code_pieces(data.decode("utf-8"))):
            (out / rel.with_name(f"{rel.stem}.{k:03d}.py")).write_text(piece, encoding="utf-8")
        total += len(data)


def _code_pieces(source: str) -> list[str]:
    """A source file cut at top-level statements (or between methods) into pieces of about CODE_PIECE_CHARS: whole files
    (up to 100k tokens) made batches of a few consecutive rows of one file and a held-out split of
    three files; pieces shuffle across files and give a held-out set of many of them."""
    pieces, cur, size = [], [], 0
    for line in source.splitlines(keepends=True):
        top = line[:1] not in (" ", "\t", "\n", "\r", "#", ")", "]", "}", "") and not line.startswith(("else", "elif", "except", "finally"))
        method = line.startswith(("    def ", "    async def ", "    @"))  # long classes are cut between methods
        if (top or method) and size >= CODE_PIECE_CHARS:
            pieces.append("".join(cur))
            cur, size = [], 0
        cur.append(line)
        size += len(line)
    if cur:
        pieces.append("".join(cur))
    return [p for p in pieces if p.strip()]


def _sklearn_file(*parts: str) -> Path:
    """A data file shipped inside scikit-learn, found without importing it (that takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise MmlmError("the demo corpus needs scikit-learn's bundled images: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0], "datasets", *parts)
    if not path.is_file():
        raise MmlmError(f"{path}: missing from this scikit-learn install")
    return path


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (what `load_digits()` returns): 1,797 images 8x8 as uint8 0..255, labels."""
    import gzip

    with gzip.open(_sklearn_file("data", "digits.csv.gz")) as f:
        rows = np.loadtxt(f, delimiter=",")
    images = rows[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)
    return images.round().astype(np.uint8), rows[:, -1].astype(int)


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _demo_digit(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """One demo digit: 8x8 scan -> 32x32 RGB, randomly rotated and shifted."""
    from PIL import Image

    big = Image.fromarray(img).resize((32, 32), Image.Resampling.BICUBIC)
    big = big.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR,
                     translate=(rng.randint(-3, 3), rng.randint(-3, 3)))
    return np.asarray(big.convert("RGB"))


def demo_digits() -> list[np.ndarray]:
    """The demo image dataset's digits, as the PNGs `build_raw` writes hold them (uint8 32x32x3)."""
    rng = random.Random(SEED)
    return [_demo_digit(img, rng) for img in digits()[0]]


def _build_image(out: Path, on_progress: Progress) -> None:
    from PIL import Image

    rng = random.Random(SEED)
    images, _ = digits()
    for i, img in enumerate(images):
        (out / f"digit_{i:04d}.png").write_bytes(_png(_demo_digit(img, rng)))
        if i % 200 == 0:
            on_progress("raw image", i, len(images) + N_PHOTO_CROPS, 0)
    photos = []  # what load_sample_images() returns: china.jpg, flower.jpg, 427 x 640 x 3
    for name in ("china.jpg", "flower.jpg"):
        with Image.open(_sklearn_file("images", name)) as im:
            photos.append(np.asarray(im.convert("RGB")))
    for i in range(N_PHOTO_CROPS):
        photo = photos[i % len(photos)]
        side = rng.randint(48, 256)
        y, x = rng.randint(0, photo.shape[0] - side), rng.randint(0, photo.shape[1] - side)
        crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((64, 64), Image.Resampling.BICUBIC)
        (out / f"photo_{i:04d}.png").write_bytes(_png(np.asarray(crop)))
    on_progress("raw image", len(images) + N_PHOTO_CROPS, len(images) + N_PHOTO_CROPS, 0)


_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_CAPTIONS = [
    "a handwritten digit {d}",
    "the digit {d}, written by hand",
    "a small scan of the number {w}",
    "handwritten {w}",
    "an 8 by 8 pixel image of a {d}",
    "the number {w} in white on black",
]


def _build_image_text(out: Path, on_progress: Progress) -> None:
    from PIL import Image

    rng = random.Random(SEED + 1)
    images, labels = digits()
    (out / "images").mkdir()
    rows = []
    for i, (img, label) in enumerate(zip(images, labels)):
        big = Image.fromarray(img).resize((32, 32), Image.Resampling.BICUBIC).convert("RGB")
        (out / "images" / f"digit_{i:04d}.png").write_bytes(_png(np.asarray(big)))
        caption = rng.choice(_CAPTIONS).format(d=label, w=_NUMBER_WORDS[label])
        rows.append(json.dumps({"image": f"images/digit_{i:04d}.png", "text": caption}))
    (out / "manifest.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    on_progress("raw image-text", len(images), len(images), 0)


# --- speech: eSpeak NG through its bundled shared library ------------------------------------

class Espeak:
    """Minimal ctypes binding of libespeak-ng (from the espeakng-loader wheel): text -> int16 PCM."""

    _instance = None

    def __init__(self):
        import ctypes

        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        # AUDIO_OUTPUT_SYNCHRONOUS = 2: samples come back through the callback
        self.sample_rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise MmlmError("eSpeak NG failed to initialise (espeakng-loader data missing?)")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(wav, n, events):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = callback_type(collect)  # keep a reference: the library holds a pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    @classmethod
    def get(cls) -> "Espeak":
        if cls._instance is None:  # espeak_Initialize must run once per process
            cls._instance = cls()
        return cls._instance

    def say(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise MmlmError(f"eSpeak NG has no voice {voice!r}")
        lib.espeak_SetParameter(1, rate, 0)  # espeakRATE, words per minute
        lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH, 0..100
        self._chunks = []
        data = text.encode("utf-8")
        lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 1, None, None)  # 1 = espeakCHARS_UTF8
        lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


_VOICES = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-us-nyc", "en-029"]
_VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+f1", "+f2", "+f3", "+f4"]


def _sentences(files: list[Path], n: int) -> list[str]:
    """Short plain sentences from the first lines of stdlib docstrings, shuffled with the seed."""
    found = set()
    for path in files:
        for line in re.findall(rb'"""([A-Z][a-z][A-Za-z ,\']{15,90}\.)\s', path.read_bytes()):
            s = line.decode("ascii", "ignore")
            if 4 <= len(s.split()) <= 14:
                found.add(s)
    sentences = sorted(found)
    random.Random(SEED + 2).shuffle(sentences)
    if len(sentences) < n:
        raise MmlmError(f"found only {len(sentences)} docstring sentences for the speech demo (need {n})")
    return sentences[:n]


def _build_speech(out: Path, sentences: list[str], manifest: bool, on_progress: Progress, stage: str) -> None:
    import soundfile as sf

    tts = Espeak.get()
    rng = random.Random(SEED + 3 + manifest)
    rows = []
    folder = out / "wav" if manifest else out
    folder.mkdir(exist_ok=True)
    for i, text in enumerate(sentences):
        voice = rng.choice(_VOICES) + rng.choice(_VARIANTS)
        pcm = tts.say(text, voice, rate=rng.randint(140, 200), pitch=rng.randint(30, 70))
        if pcm.size == 0:
            raise MmlmError(f"eSpeak NG produced no audio for {text!r}")
        name = f"utt_{i:04d}.wav"
        sf.write(folder / name, pcm, tts.sample_rate, subtype="PCM_16")
        rows.append(json.dumps({"audio": f"wav/{name}", "text": text}))
        if i % 25 == 0:
            on_progress(stage, i, len(sentences), 0)
    if manifest:
        (out / "manifest.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    on_progress(stage, len(sentences), len(sentences), 0)


RDKIT_SMILES_FILES = [  # (path inside the rdkit package, column of the SMILES, header lines, separator)
    ("Data/NCI/first_5K.smi", 0, 0, None),
    ("Data/Pains/test_data/wehi_mols.csv", 0, 0, ","),
    ("Contrib/FreeWilson/data/CHEMBL2321810.smi", 0, 0, None),
    ("Contrib/fraggle/data/ChEMBL_11265_actives.smi", 0, 0, None),
    ("Contrib/SA_Score/data/zim.100.txt", 0, 1, None),
    ("Contrib/Fastcluster/cdk2.smi", 1, 0, None),
    ("Contrib/mmpa/data/sample.smi", 0, 0, None),
]


def _build_molecule(out: Path, on_progress: Progress) -> None:
    import rdkit
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    base = Path(rdkit.__file__).parent
    found = set()
    for k, (rel, col, header, sep) in enumerate(RDKIT_SMILES_FILES):
        path = base / rel
        if not path.is_file():
            continue  # files move between RDKit releases; the rest still give thousands
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[header:]:
            fields = [f.strip().strip('"') for f in (line.split(sep) if sep else line.split())]
            if len(fields) <= col:
                continue
            mol = Chem.MolFromSmiles(fields[col])
            if mol is not None and mol.GetNumAtoms() > 0:
                found.add(Chem.MolToSmiles(mol))
        on_progress("raw molecule", k + 1, len(RDKIT_SMILES_FILES), 0)
    if len(found) < 1000:
        raise MmlmError(f"{base}: found only {len(found)} SMILES in RDKit's bundled files (is RDKit complete?)")
    smiles = sorted(found)
    random.Random(SEED + 5).shuffle(smiles)
    (out / "rdkit_bundled.smi").write_text("\n".join(smiles) + "\n", encoding="utf-8")


def build_raw(raw_dir: str | Path, on_progress: Progress | None = None) -> dict[str, list[Path]]:
    """Write the raw demo files under `raw_dir`; returns {kind: [input paths for tokenize]}."""
    check_requirements()
    on_progress = on_progress or _noop
    raw = Path(raw_dir)
    inputs = {
        "text": [raw / "text"],
        "code": [raw / "code"],
        "image": [raw / "image"],
        "image-text": [raw / "image-text" / "manifest.jsonl"],
        "speech": [raw / "speech"],
        "speech-text": [raw / "speech-text" / "manifest.jsonl"],
        "molecule": [raw / "molecule" / "rdkit_bundled.smi"],
    }
    if all((raw / part).is_dir() for part in PARTS):
        return inputs
    files = _stdlib_files()
    sentences = None
    for part in PARTS:
        if (raw / part).is_dir():
            continue
        on_progress(f"raw {part}", 0, 0, 0)
        with atomic.atomic_dir(raw / part) as tmp:
            if part == "text":
                _build_text(tmp, files, on_progress)
            elif part == "code":
                _build_code(tmp, files, on_progress)
            elif part == "image":
                _build_image(tmp, on_progress)
            elif part == "image-text":
                _build_image_text(tmp, on_progress)
            elif part in ("speech", "speech-text"):
                sentences = sentences or _sentences(files, 2 * N_UTTERANCES)
                chosen = sentences[:N_UTTERANCES] if part == "speech" else sentences[N_UTTERANCES:]
                _build_speech(tmp, chosen, part == "speech-text", on_progress, f"raw {part}")
            else:
                _build_molecule(tmp, on_progress)
        on_progress(f"raw {part}", 1, 1, 0)
    return inputs
