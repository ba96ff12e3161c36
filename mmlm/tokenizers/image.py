"""Image tokenizer: a fixed grid of discrete codes per image, and a decoder back to pixels.

An image is resized to a fixed RGB square (`size` pixels), cut into `patch` x `patch` patches in
raster order, and each patch is replaced by its nearest entry of a k-means codebook learnt from
the training images (a VQ codebook without the VAE). Decoding pastes each code's patch back.

External mode (`ImageTokenizer.from_codes`): code grids made elsewhere (a real VQGAN's) pass
through unchanged; their decoder is not here, so `decode` draws a false-colour picture of the
grid (one flat colour per code) for inspection only.

Files: `save("x.json")` writes x.json (settings) and x.safetensors (the codebook) next to it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import MmlmError
from .kmeans import check_ids, kmeans, load_array, load_files, nearest, save_files

KIND = "image"
VIS_PIXELS = 256  # side of the false-colour picture of an external code grid (about)


def prepare(image: np.ndarray, size: int, what: str = "image") -> np.ndarray:
    """Validate a uint8 image (HxW, HxWx1, HxWx3 or HxWx4) and return float32 [size, size, 3] in [0, 1].

    Alpha is composited over white; resizing uses Pillow's bicubic filter.
    """
    from PIL import Image

    if not isinstance(image, np.ndarray):
        raise MmlmError(f"{what}: expected a numpy array of pixels, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise MmlmError(f"{what}: expected uint8 pixels, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        channels = image.shape[2]
    elif image.ndim == 2:
        channels = 1
    else:
        raise MmlmError(f"{what}: shape {image.shape} is not HxW, HxWx3 or HxWx4")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise MmlmError(f"{what}: empty image (shape {image.shape})")
    if channels == 1:
        rgb = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    elif channels == 4:
        a = image[..., 3:4].astype(np.float32) / 255.0
        rgb = np.rint(image[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    else:
        rgb = image
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").resize(
            (size, size), Image.Resampling.BICUBIC))
    return rgb.astype(np.float32) / 255.0


def _to_patches(x: np.ndarray, p: int) -> np.ndarray:
    """[S, S, 3] -> [(S/p)^2, p*p*3], patches in raster order."""
    g = x.shape[0] // p
    return x.reshape(g, p, g, p, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, p * p * 3)


def _from_patches(v: np.ndarray, p: int) -> np.ndarray:
    """Inverse of `_to_patches`."""
    g = math.isqrt(len(v))
    return v.reshape(g, g, p, p, 3).transpose(0, 2, 1, 3, 4).reshape(g * p, g * p, 3)


def _check_geometry(size: int, patch: int, codebook: int) -> None:
    for name, v in (("size", size), ("patch", patch), ("codebook", codebook)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise MmlmError(f"image tokenizer: {name} must be a positive integer, got {v!r}")
    if size % patch:
        raise MmlmError(f"image tokenizer: size {size} is not a multiple of patch {patch}")


def load_codes(path: str | Path, codebook: int | None = None) -> np.ndarray:
    """Read external code grids from a .npy file: int array [n_images, h, w], values >= 0
    (and < `codebook` when given). Returns int64 [n, h, w]."""
    path = Path(path)
    a = load_array(path, ".npy")
    if not isinstance(a, np.ndarray):
        raise MmlmError(f"{path}: expected one .npy array of code grids, found an archive")
    return check_code_grids(a, codebook, str(path))


def check_code_grids(grids: np.ndarray, codebook: int | None, what: str) -> np.ndarray:
    """Validate code grids [n, h, w] of non-negative integers (below `codebook` when given)."""
    if grids.dtype.kind not in "iu":
        raise MmlmError(f"{what}: codes must be integers, got dtype {grids.dtype}")
    if grids.ndim != 3 or 0 in grids.shape:
        raise MmlmError(f"{what}: expected code grids [n_images, h, w], got shape {grids.shape}")
    lo, hi = int(grids.min()), int(grids.max())
    if lo < 0:
        raise MmlmError(f"{what}: codes must be non-negative, found {lo}")
    if codebook is not None and hi >= codebook:
        raise MmlmError(f"{what}: code {hi} is outside a codebook of {codebook}")
    return grids.astype(np.int64)


class CodeGrid:
    """The face both image tokenizers share: a square grid of size // cell codes per image from a
    `codebook`-entry codebook, read from `_settings` (`CELL`: the setting giving one code's side in pixels)."""

    CELL = "patch"
    _settings: dict

    @property
    def n_tokens(self) -> int:
        return int(self._settings["codebook"])

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of codes per image."""
        g = self._settings["size"] // self._settings[self.CELL]
        return g, g

    @property
    def codes_per_image(self) -> int:
        h, w = self.grid
        return h * w

    def check_codes(self, ids: np.ndarray) -> np.ndarray:
        """`ids` as int64 when they are one image's codes, else a one-line error."""
        ids = check_ids(ids, self.n_tokens, "image codes")
        if ids.size != self.codes_per_image:
            raise MmlmError(f"image codes: got {ids.size} codes, an image has {self.codes_per_image}")
        return ids


class ImageTokenizer(CodeGrid):
    """Images <-> fixed grids of codes. Build with `train`, `random`, `from_codes` or `load`."""

    def __init__(self, settings: dict, codebook: np.ndarray | None = None):
        self._settings = dict(settings)
        self.codebook_ = codebook  # float32 [n_codes, patch*patch*3] in [0, 1]; None when external

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def train(cls, images: Iterable[np.ndarray], *, size: int = 32, patch: int = 4, codebook: int = 256,
              seed: int = 0, iters: int = 20, sample: int = 20_000) -> "ImageTokenizer":
        """Learn a `codebook`-entry patch codebook by k-means on at most `sample` patches.

        At most 4 x `sample` / codes_per_image images (a seeded random subset) are read.
        """
        _check_geometry(size, patch, codebook)
        images = list(images)
        if not images:
            raise MmlmError("image tokenizer: no training images")
        per_image = (size // patch) ** 2
        rng = np.random.default_rng(seed)
        keep = min(len(images), math.ceil(4 * sample / per_image))  # k-means then samples patches
        chosen = np.sort(rng.choice(len(images), size=keep, replace=False))
        x = np.concatenate([_to_patches(prepare(images[i], size, f"training image {i}"), patch) for i in chosen])
        cb = kmeans(x, codebook, seed=seed, iters=iters, sample=sample)
        settings = dict(mode="vq", init="kmeans", size=size, patch=patch, codebook=codebook, seed=seed,
                        iters=iters, sample=sample)
        return cls(settings, np.clip(cb, 0.0, 1.0))

    @classmethod
    def random(cls, images: Iterable[np.ndarray] | None = None, *, size: int = 32, patch: int = 4,
               codebook: int = 256, seed: int = 0) -> "ImageTokenizer":
        """A baseline codebook that learns nothing: without images, entries are uniform in [0, 1];
        with images, each entry is drawn from a Gaussian with the per-dimension mean and standard
        deviation of their patches (clipped to [0, 1])."""
        _check_geometry(size, patch, codebook)
        rng = np.random.default_rng(seed)
        dim = patch * patch * 3
        if images is None:
            cb, init = rng.random((codebook, dim)), "uniform"
        else:
            x = np.concatenate([_to_patches(prepare(im, size, f"image {i}"), patch) for i, im in enumerate(images)])
            cb, init = rng.normal(x.mean(0), x.std(0), size=(codebook, dim)), "gaussian"
        settings = dict(mode="vq", init=init, size=size, patch=patch, codebook=codebook, seed=seed)
        return cls(settings, np.clip(cb, 0.0, 1.0).astype(np.float32))

    @classmethod
    def from_codes(cls, grids: np.ndarray, codebook: int | None = None) -> "ImageTokenizer":
        """External mode for code grids [n, h, w] made elsewhere; the codebook size is
        `codebook` or, when not given, the largest code + 1."""
        grids = check_code_grids(np.asarray(grids), codebook, "external image codes")
        n_codes = int(codebook) if codebook is not None else int(grids.max()) + 1
        return cls(dict(mode="external", grid=[int(grids.shape[1]), int(grids.shape[2])], codebook=n_codes))

    # --- the tokenizer face --------------------------------------------------------------------

    @property
    def external(self) -> bool:
        return self._settings["mode"] == "external"

    @property
    def grid(self) -> tuple[int, int]:
        if self.external:
            h, w = self._settings["grid"]
            return int(h), int(w)
        return super().grid

    @property
    def settings(self) -> dict:
        return dict(self._settings)

    def encode(self, image: np.ndarray) -> np.ndarray:
        """Pixels (or, in external mode, one code grid [h, w]) -> int64[codes_per_image], raster order."""
        if self.external:
            grid = np.asarray(image)
            if grid.shape not in (self.grid, (self.codes_per_image,)):
                raise MmlmError(f"external image codes: grid shape {grid.shape} is not {self.grid}")
            return check_ids(grid, self.n_tokens, "external image codes").reshape(-1)
        x = prepare(image, self._settings["size"])
        return nearest(_to_patches(x, self._settings["patch"]), self.codebook_)[0]

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """Codes -> uint8 RGB image: [size, size, 3], or a false-colour grid picture in external mode."""
        ids = self.check_codes(ids).reshape(-1)
        if self.external:
            return _false_colour(ids.reshape(self.grid))
        x = _from_patches(self.codebook_[ids], self._settings["patch"])
        return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)

    def save(self, path: str | Path) -> None:
        arrays = {} if self.external else {"codebook": self.codebook_}
        save_files(path, KIND, self._settings, arrays)

    @classmethod
    def load(cls, path: str | Path) -> "ImageTokenizer":
        settings, arrays = load_files(path, KIND, ())
        if settings.get("mode") == "external":
            return cls(settings)
        if "codebook" not in arrays:
            raise MmlmError(f"{path}: image codebook array is missing")
        cb = arrays["codebook"].astype(np.float32)
        if cb.shape != (settings["codebook"], settings["patch"] ** 2 * 3):
            raise MmlmError(f"{path}: codebook shape {cb.shape} does not match its settings")
        return cls(settings, cb)


def _false_colour(grid: np.ndarray) -> np.ndarray:
    """One flat colour per code (a fixed hash of the code), each cell a square of pixels."""
    h = (grid.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFF)  # Knuth multiplicative hash
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (16, 8, 0)], axis=-1).astype(np.uint8)
    cell = max(1, VIS_PIXELS // max(grid.shape))
    return np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)


def reconstruction_error(tok: ImageTokenizer, images: Iterable[np.ndarray]) -> float:
    """Mean squared error, in [0, 1] pixel units, between each resized image and decode(encode(image))."""
    if tok.external:
        raise MmlmError("reconstruction error needs a learnt codebook; external codes have no decoder here")
    errs = []
    for i, im in enumerate(images):
        x = prepare(im, tok.settings["size"], f"image {i}")
        y = tok.decode(tok.encode(im)).astype(np.float32) / 255.0
        errs.append(float(np.mean((x - y) ** 2)))
    if not errs:
        raise MmlmError("reconstruction error: no images")
    return float(np.mean(errs))
