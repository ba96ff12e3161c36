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
built into a temporary folder and renamed when complete; a part that exists is kept. One module per
source (stdlib.py, images.py, speech.py, molecules.py), their shared helpers in common.py; this
module builds the parts in order.
"""
from __future__ import annotations

from pathlib import Path

from .. import atomic
from ..errors import MmlmError
from ..modalities import KINDS
from ..progress import Progress, silent
from .common import stdlib_files
from .images import build_image, build_image_text
from .molecules import SMILES_FILE, build_molecule
from .speech import N_UTTERANCES, build_speech
from .stdlib import build_code, build_text, sentences

# the dataset kinds in build order: each pair right after its media, whose tokenizer it reuses (this
# order fixes the demo vocabulary's id ranges)
PARTS = tuple(k for single in KINDS if len(KINDS[single].segments) == 1
              for k in (single, *(p for p in KINDS if len(KINDS[p].segments) > 1 and KINDS[p].segments[0] == single)))
# the demo's byte-level BPE (text and code): small, so that the embedding and output layer of CPU-sized
# models are not most of their compute (docs/demo.md)
BPE_VOCAB = 512


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


def _input(raw: Path, part: str) -> Path:
    """What tokenize reads of a part: a pair's manifest, the molecules' one file, else the part's folder."""
    if len(KINDS[part].segments) > 1:
        return raw / part / "manifest.jsonl"
    return raw / part / SMILES_FILE if part == "molecule" else raw / part


def build_raw(raw_dir: str | Path, on_progress: Progress | None = None) -> dict[str, list[Path]]:
    """Write the raw demo files under `raw_dir`; returns {kind: [input paths for tokenize]}."""
    check_requirements()
    on_progress = on_progress or silent
    raw = Path(raw_dir)
    inputs = {part: [_input(raw, part)] for part in PARTS}
    if all((raw / part).is_dir() for part in PARTS):
        return inputs
    files = stdlib_files()
    spoken = None
    for part in PARTS:
        if (raw / part).is_dir():
            continue
        on_progress(f"raw {part}", 0, 0, 0)
        with atomic.atomic_dir(raw / part) as tmp:
            if part == "text":
                build_text(tmp, files, on_progress)
            elif part == "code":
                build_code(tmp, files, on_progress)
            elif part == "image":
                build_image(tmp, on_progress)
            elif part == "image-text":
                build_image_text(tmp, on_progress)
            elif part in ("speech", "speech-text"):
                spoken = spoken or sentences(files, 2 * N_UTTERANCES)
                chosen = spoken[:N_UTTERANCES] if part == "speech" else spoken[N_UTTERANCES:]
                build_speech(tmp, chosen, part == "speech-text", on_progress, f"raw {part}")
            else:
                build_molecule(tmp, on_progress)
        on_progress(f"raw {part}", 1, 1, 0)
    return inputs
