"""The demo's molecules: the SMILES files bundled with RDKit (NCI, WEHI, ChEMBL, ZINC samples),
canonicalised and de-duplicated (BSD-3)."""
from __future__ import annotations

import random
from pathlib import Path

from ..errors import MmlmError
from ..progress import Progress
from .common import SEED, write_lines

SMILES_FILE = "rdkit_bundled.smi"  # the one file of the molecule part
RDKIT_SMILES_FILES = [  # (path inside the rdkit package, column of the SMILES, header lines, separator)
    ("Data/NCI/first_5K.smi", 0, 0, None),
    ("Data/Pains/test_data/wehi_mols.csv", 0, 0, ","),
    ("Contrib/FreeWilson/data/CHEMBL2321810.smi", 0, 0, None),
    ("Contrib/fraggle/data/ChEMBL_11265_actives.smi", 0, 0, None),
    ("Contrib/SA_Score/data/zim.100.txt", 0, 1, None),
    ("Contrib/Fastcluster/cdk2.smi", 1, 0, None),
    ("Contrib/mmpa/data/sample.smi", 0, 0, None),
]


def build_molecule(out: Path, on_progress: Progress) -> None:
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
    write_lines(out / SMILES_FILE, smiles)
