"""Checkpoints: weights as safetensors plus everything an exact resume needs.

RUN/state/step-000000120/            one folder per checkpoint, renamed into place when whole
    model.safetensors                weights (the same tensors `GPT.state_dict()` holds)
    optimizer.json / .safetensors    optimizer state keyed by parameter name
    train.json / .safetensors        step counters, interleaver position, RNG states, spike detector...
    manifest.json                    written last: step and the sha256 of every file above
RUN/model.safetensors                the latest checkpoint's weights (a hard link, no copy)

A killed writer leaves only a hidden temporary folder, never a half-written `step-*`; older
checkpoints are removed after a new one is in place. Loading verifies the manifest's checksums,
so a damaged file is an MmlmError, never a silently wrong resume.

The *.json / *.safetensors pairs hold any nested dict of plain values, numpy arrays and torch
tensors: arrays go to the safetensors file, and the JSON keeps a {"__array__": key} stub in place.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import torch

from . import atomic, jsonio
from .shards import file_sha256
from .errors import MmlmError

FORMAT = "mmlm-checkpoint/1"
STATE_DIR = "state"
WEIGHTS = "model.safetensors"
_PARTS = ("optimizer", "train")


# ---- nested state <-> (json, safetensors) ----------------------------------------------------

def _split(obj, arrays: dict, key: str):
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: keep the bits
            arrays[key] = t.view(torch.int16).numpy()
            return {"__array__": key, "torch": "bfloat16"}
        arrays[key] = t.numpy()
        return {"__array__": key, "torch": str(t.dtype).removeprefix("torch.")}
    if isinstance(obj, np.ndarray):
        arrays[key] = np.ascontiguousarray(obj)
        return {"__array__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): _split(v, arrays, f"{key}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, arrays, f"{key}.{i}") for i, v in enumerate(obj)]
    return obj


def _join(obj, arrays: dict):
    if isinstance(obj, dict):
        if "__array__" in obj:
            a = arrays[obj["__array__"]]
            if "torch" not in obj:
                return a
            if obj["torch"] == "bfloat16":
                return torch.from_numpy(a.copy()).view(torch.bfloat16)
            return torch.from_numpy(a.copy())
        return {k: _join(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays) for v in obj]
    return obj


def write_tree(folder: Path, name: str, obj) -> None:
    from safetensors.numpy import save_file

    arrays: dict = {}
    tree = _split(obj, arrays, name)
    save_file(arrays, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(tree), encoding="utf-8")


def read_tree(folder: Path, name: str):
    from safetensors.numpy import load_file

    arrays = load_file(str(folder / f"{name}.safetensors"))
    return _join(jsonio.loads((folder / f"{name}.json").read_bytes()), arrays)


# ---- checkpoints -----------------------------------------------------------------------------

def checkpoints(run: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    state = Path(run) / STATE_DIR
    if not state.is_dir():
        return []
    found = []
    for p in state.iterdir():
        if p.name.startswith("step-") and p.is_dir():
            try:
                found.append((int(p.name[5:]), p))
            except ValueError:
                continue
    return sorted(found)


def latest(run: str | Path) -> Path | None:
    found = checkpoints(run)
    return found[-1][1] if found else None


def remove_temporaries(run: str | Path) -> None:
    """Drop what killed writers left (hidden names); call only while this process owns the run."""
    run = Path(run)
    for folder in (run, run / STATE_DIR):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def save(run: str | Path, step: int, weights: dict[str, torch.Tensor], optimizer: dict, train: dict) -> Path:
    """Write checkpoint `step` atomically, point RUN/model.safetensors at it, drop older ones."""
    from safetensors.torch import save_file

    run = Path(run)
    path = run / STATE_DIR / f"step-{step:09d}"
    with atomic.atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        write_tree(tmp, "optimizer", optimizer)
        write_tree(tmp, "train", train)
        files = [WEIGHTS] + [f"{p}.{ext}" for p in _PARTS for ext in ("json", "safetensors")]
        for f in files:  # make the data durable before the folder is renamed into place
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp / f, 0o644)
        os.chmod(tmp, 0o755)  # temporary folders start private
        manifest = {"format": FORMAT, "step": step, "sha256": {f: file_sha256(tmp / f) for f in files}}
        atomic.write_json(tmp / "manifest.json", manifest)
    publish_weights(run, path)
    for old_step, old in checkpoints(run):
        if old_step != step:
            shutil.rmtree(old, ignore_errors=True)
    return path


def publish_weights(run: Path, ckpt: Path) -> None:
    """RUN/model.safetensors := the checkpoint's weights, atomically (hard link; copy if links fail)."""
    with atomic.atomic_path(run / WEIGHTS) as tmp:
        try:
            os.link(ckpt / WEIGHTS, tmp)
        except OSError:
            shutil.copyfile(ckpt / WEIGHTS, tmp)


def verify(ckpt: Path) -> dict:
    """The manifest of a checkpoint whose files all match their checksums, else MmlmError."""
    mpath = ckpt / "manifest.json"
    try:
        manifest = jsonio.loads(mpath.read_bytes())
        sums = manifest["sha256"]
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MmlmError(f"{mpath}: corrupt checkpoint (unreadable manifest: {e})") from None
    for f, digest in sums.items():
        if not (ckpt / f).is_file():
            raise MmlmError(f"{ckpt / f}: corrupt checkpoint (file missing)")
        if file_sha256(ckpt / f) != digest:
            raise MmlmError(f"{ckpt / f}: corrupt checkpoint (checksum mismatch)")
    return manifest


def load(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(weights, optimizer state, train state) of a verified checkpoint."""
    from safetensors.torch import load_file

    verify(ckpt)
    try:
        weights = load_file(str(ckpt / WEIGHTS))
        return weights, read_tree(ckpt, "optimizer"), read_tree(ckpt, "train")
    except Exception as e:  # checksums matched, so this is a file written by something else
        raise MmlmError(f"{ckpt}: corrupt checkpoint ({type(e).__name__}: {e})") from None


def republish(run: Path, ckpt: Path) -> None:
    """Make RUN/model.safetensors the checkpoint's weights again (a kill between writing a checkpoint
    and publishing it leaves the previous weights there)."""
    published = run / WEIGHTS
    if not (published.exists() and os.path.samefile(published, ckpt / WEIGHTS)):
        publish_weights(run, ckpt)


MAX_HEADER = 100 << 20  # a safetensors header larger than this is not one of ours


def check_safetensors(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Read the header of a safetensors file without loading it: {tensor name: (dtype, shape)}.
    Anything else (a Python pickle, a torch.save zip, a truncated or foreign file) is refused with
    an MmlmError before any loader sees it: weights are only ever loaded from safetensors."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
            n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
            header = (head[8:] + f.read(n - 1)) if 2 <= n <= min(size - 8, MAX_HEADER) else b""
    except FileNotFoundError:
        raise MmlmError(f"{path}: no such file (the run has no weights yet)") from None
    except OSError as e:
        raise MmlmError(f"{path}: cannot read ({e.strerror or e})") from None
    what = None
    if head[:1] == b"\x80":
        what = "it is a Python pickle"
    elif head[:4] == b"PK\x03\x04":
        what = "it is a zip archive, as torch.save writes"
    elif len(head) < 9:
        what = "too short"
    elif not header or head[8:9] != b"{":
        what = "no safetensors header"
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    if what is None:
        try:
            meta = jsonio.loads(header)
            end = 0
            for name, info in meta.items():
                if name == "__metadata__":
                    continue
                shape = tuple(int(d) for d in info["shape"])
                lo, hi = (int(x) for x in info["data_offsets"])
                if min(shape, default=0) < 0 or not 0 <= lo <= hi:
                    raise ValueError(f"tensor {name}: bad shape or offsets")
                tensors[name] = (str(info["dtype"]), shape)
                end = max(end, hi)
            if 8 + n + end > size:
                raise ValueError(f"the header describes {end} bytes of tensors, the file holds {size - 8 - n}")
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            what = f"unreadable header: {e}"
    if what:
        raise MmlmError(f"{path}: not a safetensors file ({what}); refused: weights are only ever loaded from safetensors")
    return tensors


def check_fits(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]], model_cfg, where: str) -> None:
    """The weights' header against the shapes `model_cfg` gives (computed on the meta device, so a
    config asking for a billion-id vocabulary allocates nothing): refuse any mismatch."""
    from .model import GPT

    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in GPT(model_cfg).state_dict().items()}
    except (TypeError, ValueError, RuntimeError, MmlmError) as e:
        raise MmlmError(f"{where}: not a buildable model ({e})") from None
    if set(tensors) != set(expected):
        diff = sorted(set(tensors) ^ set(expected))
        raise MmlmError(f"{path}: weights do not fit the model of {where} (differing tensors: {', '.join(diff[:3])})")
    for k, (_, shape) in tensors.items():
        if shape != expected[k]:
            raise MmlmError(f"{path}: tensor {k} has shape {shape}, the model of {where} needs {expected[k]}")


def load_weights(path: str | Path, model: torch.nn.Module) -> None:
    """Load a safetensors file into a model, with a one-line error on any mismatch."""
    from safetensors.torch import load_file

    path = Path(path)
    check_safetensors(path)
    try:
        weights = load_file(str(path))
    except Exception as e:
        raise MmlmError(f"{path}: unreadable weights ({type(e).__name__}: {e})") from None
    expected = model.state_dict()
    if set(weights) != set(expected):
        diff = sorted(set(weights) ^ set(expected))
        raise MmlmError(f"{path}: weights do not fit this model (differing tensors: {', '.join(diff[:3])})")
    for k, v in weights.items():
        if v.shape != expected[k].shape:
            raise MmlmError(f"{path}: tensor {k} has shape {tuple(v.shape)}, the model needs {tuple(expected[k].shape)}")
    model.load_state_dict(weights)


def build_model(weights: str | Path, model_cfg, where: str, device: str | torch.device = "cpu", attention: str = "sdpa"):
    """The one model loader (generate, analyze): check the safetensors header against `model_cfg`,
    check the memory the model needs, then build it and load the weights; GPT in eval mode."""
    from .bounds import check_memory
    from .model import GPT

    weights = Path(weights)
    tensors = check_safetensors(weights)
    check_fits(weights, tensors, model_cfg, where)
    n_values = sum(math.prod(shape) for _, shape in tensors.values())
    check_memory(8 * n_values, f"{where}", "the model and its weights (4 bytes per parameter, twice)")
    model = GPT(model_cfg, attention=attention)
    load_weights(weights, model)
    return model.to(device).eval()


def load_model(run: str | Path, device: str | torch.device = "cpu", attention: str = "sdpa"):
    """(GPT in eval mode, RUN/config.json as a dict) of a trained run, e.g. for generation."""
    from .model import GPTConfig

    run = Path(run)
    cpath = run / "config.json"
    config = jsonio.read_json(cpath, "training run config")
    try:
        mcfg = GPTConfig.from_json(config["model"])
        for k in ("n_layer", "n_head", "d_model", "vocab_size", "seq_len"):
            v = getattr(mcfg, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"model.{k} is {v!r}, not a positive integer")
    except (ValueError, KeyError, TypeError) as e:
        raise MmlmError(f"{cpath}: not a training run's config ({e})") from None
    return build_model(run / WEIGHTS, mcfg, str(cpath), device, attention), config
