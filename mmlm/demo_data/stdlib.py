"""The demo's text, code and speech sentences, all from the CPython standard library (PSF licence).

    text   docstrings (ast.get_docstring) and the pydoc topic help (pydoc_data.topics)
    code   .py files, tests left out, about 3.5 MB, cut at top-level statements into pieces
    speech short sentences from the first lines of docstrings (spoken by demo_data.speech)
"""
from __future__ import annotations

import ast
import random
import re
from pathlib import Path

from ..errors import MmlmError
from ..progress import Progress
from .common import SEED, stdlib_root, write_jsonl

CODE_BYTES = 3_500_000  # stdlib source taken for the code dataset (order 1M BPE tokens)
CODE_PIECE_CHARS = 2000  # code documents: pieces of files cut at top-level statements (code_pieces)


def docstrings(files: list[Path], on_progress: Progress) -> list[str]:
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


def build_text(out: Path, files: list[Path], on_progress: Progress) -> None:
    write_jsonl(out / "stdlib_docstrings.jsonl", [{"text": d} for d in docstrings(files, on_progress)])
    from pydoc_data.topics import topics

    write_jsonl(out / "pydoc_topics.jsonl", [{"text": topics[k].strip()} for k in sorted(topics)])


def build_code(out: Path, files: list[Path], on_progress: Progress) -> None:
    root = stdlib_root()
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
        for k, piece in enumerate(code_pieces(data.decode("utf-8"))):
            (out / rel.with_name(f"{rel.stem}.{k:03d}.py")).write_text(piece, encoding="utf-8")
        total += len(data)


def code_pieces(source: str) -> list[str]:
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


def sentences(files: list[Path], n: int) -> list[str]:
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
