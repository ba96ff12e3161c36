"""Read and check raw input files; every problem is one MmlmError naming the file (and line).

What each reader returns:
    text         .txt/.md: the whole file is one document; .jsonl: one document per line ("text" field)
    code         any source file: the whole file is one document (UTF-8)
    image        PNG/JPEG -> uint8 array [H, W, 3] (RGB; alpha and palettes converted)
    audio        WAV/FLAC, any rate, mono or stereo -> (float32 mono waveform, sample_rate)
    smiles       .smi/.txt: first whitespace-separated field of each line; .csv: the `smiles` column
    manifest     .jsonl of {"image"|"audio": path, "text": str}; paths are relative to the manifest
                 and must stay inside its folder (unless allow_outside)

JSON lines are split on "\n" only (U+2028, U+0085 ... are valid inside JSON strings).
"""
from __future__ import annotations

import csv
import io
import os
import re
import struct
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import MmlmError
from .jsonio import lines, loads

TEXT_EXTS = (".txt", ".md", ".jsonl")
CODE_EXTS = (
    ".py", ".pyx", ".pxd", ".pyi", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".cu", ".js", ".mjs",
    ".ts", ".tsx", ".jsx", ".java", ".kt", ".scala", ".go", ".rs", ".rb", ".php", ".pl", ".pm", ".lua", ".r",
    ".jl", ".swift", ".m", ".cs", ".fs", ".hs", ".ml", ".sh", ".bash", ".sql", ".f90", ".zig", ".nim",
)
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
AUDIO_EXTS = (".wav", ".flac")
SMILES_EXTS = (".smi", ".txt", ".csv")
MANIFEST_EXTS = (".jsonl",)


def find_files(inputs: Iterable[str | Path], exts: tuple[str, ...], what: str) -> list[Path]:
    """The files named by `inputs`: files as given, folders searched recursively for `exts`
    (hidden files and folders skipped). Sorted within each folder; duplicates dropped."""
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise MmlmError(f"no input given (expected {what} files or folders)")
    files: list[Path] = []
    for p in inputs:
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = [
                f for f in p.rglob("*")
                if f.is_file() and f.suffix.lower() in exts
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            ]
            files.extend(sorted(found))
        elif p.exists():
            raise MmlmError(f"{p}: not a regular file or folder")
        else:
            raise MmlmError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    unique = [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]
    if not unique:
        raise MmlmError(f"{', '.join(map(str, inputs))}: no {what} files found (looked for {', '.join(exts)})")
    return unique


def _decode_utf8(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise MmlmError(f"{path}:{line}: not valid UTF-8 text (byte 0x{data[e.start]:02x})") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise MmlmError(f"{path}: cannot read ({e.strerror or e})") from None


def read_utf8(path: str | Path) -> str:
    path = Path(path)
    return _decode_utf8(_read_bytes(path), path)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    path = Path(path)
    for no, line in lines(read_utf8(path)):
        if not line.strip():
            continue
        try:
            obj = loads(line)
        except ValueError as e:
            raise MmlmError(f"{path}:{no}: {e}") from None
        if not isinstance(obj, dict):
            raise MmlmError(f"{path}:{no}: expected a JSON object, got {type(obj).__name__}")
        yield no, obj


def _field(obj: dict, key: str, path: Path, no: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        why = ("missing" if key not in obj else "null, not a string") if value is None else f"a {type(value).__name__}, not a string"
        raise MmlmError(f"{path}:{no}: field {key!r} is {why}")
    return value


def read_text_documents(path: str | Path) -> list[str]:
    """Documents of a text file: .jsonl gives one per line ("text" field), others the whole file."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return [_field(obj, "text", path, no) for no, obj in iter_jsonl(path)]
    return [read_utf8(path)]


def read_image(path: str | Path) -> np.ndarray:
    """A PNG/JPEG as uint8 [H, W, 3]."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                im = _to_8bit(im)  # 16-bit / 32-bit grey: scale to 0..255 (Pillow's convert would clip)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                # composite transparent pixels onto white rather than whatever colour they hide
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(bg, rgba).convert("RGB")
            else:
                rgb = im.convert("RGB")
    except FileNotFoundError:
        raise MmlmError(f"{path}: no such file") from None
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        raise MmlmError(f"{path}: not a readable PNG/JPEG image ({e})") from None
    if fmt not in ("PNG", "JPEG"):
        raise MmlmError(f"{path}: a {fmt} image; expected PNG or JPEG")
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MmlmError(f"{path}: empty image")
    return arr


def _to_8bit(im):
    """A 16-bit (or 32-bit integer / float) greyscale image as 8-bit 'L', by scaling the format's full
    range (16-bit PNG: 0..65535) onto 0..255, never clipping."""
    from PIL import Image

    a = np.asarray(im)
    if im.mode == "F":
        hi = 1.0 if float(np.nanmax(a, initial=0.0)) <= 1.0 else 255.0
        scaled = np.clip(np.nan_to_num(a.astype(np.float64)) / hi, 0.0, 1.0) * 255.0
    else:
        bits = 16 if im.mode.startswith("I;16") or int(a.max(initial=0)) <= 65535 else 32
        scaled = a.astype(np.float64).clip(0, None) * (255.0 / (2 ** bits - 1))
    return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")


def _check_wav_complete(data: bytes, path: Path) -> None:
    """libsndfile reads a truncated WAV without complaint; compare the data chunk with the file."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return  # not a RIFF WAV (RF64, FLAC, garbage): soundfile judges it
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk == b"data":
            available = len(data) - pos - 8
            if size != 0xFFFFFFFF and size > available:
                raise MmlmError(f"{path}: truncated WAV (data chunk declares {size} bytes, file holds {available})")
            return
        pos += 8 + size + (size & 1)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A WAV/FLAC file as (float32 mono waveform in [-1, 1], sample rate); stereo is averaged."""
    import soundfile as sf

    path = Path(path)
    data = _read_bytes(path)
    _check_wav_complete(data, path)
    try:
        wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile.LibsndfileError, RuntimeError, TypeError on odd headers
        # libsndfile names the stream it was given ("Error opening <_io.BytesIO object at 0x...>: ..."); keep the reason
        msg = re.sub(r"^Error opening\s*<[^>]*>:?\s*", "", str(e).split("\n")[0]).strip() or type(e).__name__
        raise MmlmError(f"{path}: not a readable WAV/FLAC audio file ({msg})") from None
    if wave.shape[0] == 0:
        raise MmlmError(f"{path}: audio file holds no samples")
    mono = wave.mean(axis=1).astype(np.float32)
    if not np.isfinite(mono).all():
        raise MmlmError(f"{path}: audio holds NaN or infinite samples")
    return mono, int(sr)


def iter_smiles(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, SMILES) for each entry of a .smi/.txt file or a CSV with a `smiles` column.

    .smi/.txt: the first whitespace-separated field of each non-blank line (the rest, often a
    name or id, is ignored); a first line whose first field is "smiles" is a header and skipped.
    """
    path = Path(path)
    text = read_utf8(path)
    if path.suffix.lower() == ".csv":
        reader = csv.reader(io.StringIO(text))
        try:
            header = next(reader)
        except StopIteration:
            raise MmlmError(f"{path}: empty CSV file") from None
        except csv.Error as e:
            raise MmlmError(f"{path}:1: malformed CSV ({e})") from None
        cols = [h.strip().lower() for h in header]
        if "smiles" not in cols:
            raise MmlmError(f"{path}:1: no 'smiles' column (columns: {', '.join(header)})")
        col = cols.index("smiles")
        try:
            for row in reader:
                if not row or not any(c.strip() for c in row):
                    continue
                if col >= len(row):
                    raise MmlmError(f"{path}:{reader.line_num}: row has no 'smiles' column (only {len(row)} fields)")
                yield reader.line_num, row[col].strip()
        except csv.Error as e:
            raise MmlmError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
        return
    for no, line in lines(text):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if no == 1 and fields[0].lower() == "smiles":
            continue
        yield no, fields[0]


def read_manifest(path: str | Path, media_key: str, allow_outside: bool = False) -> list[tuple[int, Path, str]]:
    """(line number, media path, text) per row of a paired-data manifest; media must exist, and lie
    inside the manifest's folder unless `allow_outside` (a manifest from elsewhere must not make
    mmlm read /etc/... or ../../private files)."""
    path = Path(path)
    home = os.path.realpath(path.parent)
    rows = []
    for no, obj in iter_jsonl(path):
        media = _field(obj, media_key, path, no)
        text = _field(obj, "text", path, no)
        media_path = path.parent / media
        if not allow_outside and os.path.commonpath([home, os.path.realpath(media_path)]) != home:
            raise MmlmError(f"{path}:{no}: {media_key} file {media!r} lies outside the manifest's folder {path.parent}; "
                            f"refused (pass --allow-outside to read it)")
        if not media_path.is_file():
            raise MmlmError(f"{path}:{no}: {media_key} file {media!r} not found (looked at {media_path})")
        rows.append((no, media_path, text))
    if not rows:
        raise MmlmError(f"{path}: manifest has no rows (empty input)")
    return rows
