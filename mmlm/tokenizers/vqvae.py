"""A learned image tokenizer: a small convolutional VQ-VAE trained on the dataset's images.

An image is resized to a fixed RGB square (`size` pixels, as the k-means tokenizer does), a
convolutional encoder with log2(`downsample`) stride-2 steps maps it to a (size/downsample)^2 grid
of latent vectors, and each vector is replaced by its nearest entry of a `codebook`-entry
codebook: the codes, in raster order. The decoder maps the codebook vectors back to pixels.

The quantiser is the VQ-VAE one (van den Oord et al. 2017; Razavi et al. 2019): straight-through
gradients, a commitment loss, codebook entries updated as exponential moving averages of the
encoder outputs assigned to them (not by gradient), initialised by k-means on the first batch's
encoder outputs, and dead-code restarts (an entry whose running assignment count falls below
`dead_below` is moved onto a random encoder output of the current batch), which keep the
codebook in use.

Files: `save("x.json")` writes x.json (format, settings, held-out report, arrays file and its
sha256) and x.safetensors (encoder, decoder and codebook weights) next to it; never pickle.
The same face as `ImageTokenizer`: train / encode / decode / save / load, `n_tokens`, `grid`,
`codes_per_image`, `settings`.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from .. import __version__, atomic
from ..errors import MmlmError
from ..jsonio import read_json
from ..progress import Progress
from .image import CodeGrid
from .image_quality import evaluate
from .kmeans import arrays_path, read_arrays
from .vqvae_fit import fit
from .vqvae_net import build, device as torch_device, modules, nearest, to_tensor, weights

FORMAT = "mmlm-vqvae/1"
KIND = "image-vqvae"
DOWNSAMPLES = (2, 4, 8, 16)
MAX_HELD_OUT = 256  # held-out images the report is measured on (at most)
MIN_TRAIN_IMAGES = 2
# the architecture and training settings, with their defaults; all of them are saved
DEFAULTS = dict(size=32, downsample=4, codebook=256, latent_dim=32, channels=64, steps=1500, batch=64, lr=2e-3,
                beta=0.25, decay=0.99, dead_below=1.0, held_out=0.1, seed=0)


# --- checks -------------------------------------------------------------------------------------

def check_settings(s: dict) -> None:
    """One-line errors for settings the network cannot take."""
    for name in ("size", "downsample", "codebook", "latent_dim", "channels", "steps", "batch"):
        v = s[name]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise MmlmError(f"vqvae image tokenizer: {name} must be a positive integer, got {v!r}")
    if s["downsample"] not in DOWNSAMPLES:
        raise MmlmError(f"vqvae image tokenizer: --downsample {s['downsample']} is not one of "
                        f"{', '.join(map(str, DOWNSAMPLES))} (the encoder halves the image log2(downsample) times)")
    if s["size"] % s["downsample"]:
        raise MmlmError(f"vqvae image tokenizer: --image-size {s['size']} cannot be taken by an encoder that "
                        f"downsamples by {s['downsample']} (use a multiple of {s['downsample']})")
    if not 0.0 <= s["held_out"] < 1.0:
        raise MmlmError(f"vqvae image tokenizer: held_out must be a share in [0, 1), got {s['held_out']!r}")



# --- the tokenizer ------------------------------------------------------------------------------

class VQVAETokenizer(CodeGrid):
    """Images <-> fixed grids of codes through a learnt VQ-VAE. Build with `train` or `load`."""

    CELL = "downsample"  # one code per downsample x downsample pixels
    external = False  # the tokenize pipeline asks every image tokenizer

    def __init__(self, settings: dict, state: dict, report: dict | None = None, device: str = "cpu"):
        """`state`: the weights (numpy or torch arrays) as `save` writes them."""
        torch = modules()[0]
        self._settings = dict(settings)
        self.report = dict(report or {})
        s = self._settings
        with torch.random.fork_rng(devices=[]):  # the weights are overwritten: leave the caller's RNG as it was
            self.encoder, self.decoder = build(s)
        state = {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v) for k, v in state.items()}
        try:
            self.encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
            self.decoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("decoder.")})
            self.codebook = state["codebook"].float().clone()
            if tuple(self.codebook.shape) != (s["codebook"], s["latent_dim"]):
                raise ValueError(f"codebook shape {tuple(self.codebook.shape)}")
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).strip().splitlines()[0]
            raise MmlmError(f"vqvae image tokenizer: weights do not match its settings ({first})") from None
        self.encoder.eval()
        self.decoder.eval()
        self.device = torch_device(device)
        self.encoder.to(self.device)
        self.decoder.to(self.device)
        self.codebook = self.codebook.to(self.device)

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def train(cls, images: Iterable[np.ndarray], *, eval_images: Iterable[np.ndarray] | None = None,
              device: str = "auto", on_progress: Progress | None = None, **settings) -> "VQVAETokenizer":
        """Train on `images` (settings: see DEFAULTS). The report is measured on `eval_images` when
        given, else on a seeded `held_out` share of `images` (at most MAX_HELD_OUT) left out of training."""
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise MmlmError(f"vqvae image tokenizer: unknown setting(s) {', '.join(sorted(unknown))}")
        s = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
        check_settings(s)
        train_imgs, held = _split(s, list(images), eval_images)
        t0 = time.perf_counter()
        state, history = fit(s, train_imgs, torch_device(device), on_progress)
        seconds = time.perf_counter() - t0
        tok = cls(s, state)
        tok.report = {"eval_on": "held-out" if held else "training",  # training: too few images to hold any out
                      **evaluate(tok, held or train_imgs), "train_images": len(train_imgs),
                      "train_seconds": round(seconds, 1), "device": str(torch_device(device)),
                      "restarts": history["restarts"], "train_usage": history["usage"],
                      "train_perplexity": history["perplexity"]}
        return tok

    # --- the tokenizer face (n_tokens, grid, codes_per_image: CodeGrid) ------------------------

    @property
    def settings(self) -> dict:
        """What vocab.json records (`tokenizer` tells the pipeline which class to load)."""
        return {"tokenizer": "vqvae", **self._settings}

    def encode(self, image: np.ndarray) -> np.ndarray:
        """Pixels -> int64[codes_per_image], raster order."""
        return self.encode_batch([image])[0]

    def encode_batch(self, images: list[np.ndarray]) -> np.ndarray:
        """Pixels of several images -> int64[n, codes_per_image]."""
        torch = modules()[0]
        x = to_tensor(torch, list(images), self._settings["size"], "image").to(self.device)
        with torch.no_grad():
            z = self.encoder(x)
            flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            return nearest(flat, self.codebook).reshape(len(x), -1).cpu().numpy().astype(np.int64)

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """Codes -> uint8 RGB image [size, size, 3]."""
        torch = modules()[0]
        ids = self.check_codes(ids)
        h, w = self.grid
        idx = torch.from_numpy(ids.reshape(h, w)).to(self.device)
        with torch.no_grad():
            z = self.codebook[idx].permute(2, 0, 1)[None]
            x = self.decoder(z)[0].clamp(0.0, 1.0).permute(1, 2, 0).cpu().numpy()
        return np.rint(x * 255.0).astype(np.uint8)

    def state(self) -> dict[str, np.ndarray]:
        """The weights, as saved: encoder.*, decoder.*, codebook (float32 numpy)."""
        return {k: v.numpy().astype(np.float32) for k, v in weights(self.encoder, self.decoder, self.codebook).items()}

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save

        path = Path(path)
        blob = save({k: np.ascontiguousarray(v) for k, v in self.state().items()})
        atomic.write_bytes(arrays_path(path), blob)
        atomic.write_json(path, {"kind": KIND, "format": FORMAT, "mmlm_version": __version__,
                                 "settings": self._settings, "report": self.report,
                                 "arrays": arrays_path(path).name, "sha256": hashlib.sha256(blob).hexdigest()})
    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "VQVAETokenizer":
        from safetensors.numpy import load

        path = Path(path)
        meta = read_json(path, "VQ-VAE image tokenizer", FORMAT)
        if meta.get("kind") != KIND or not isinstance(meta.get("settings"), dict):
            raise MmlmError(f"{path}: not a VQ-VAE image tokenizer (kind {meta.get('kind')!r})")
        settings = {**DEFAULTS, **meta["settings"]}
        check_settings(settings)
        apath, blob = read_arrays(path, meta, "weights")
        try:
            state = load(blob)
        except Exception as e:  # safetensors raises its own error types
            raise MmlmError(f"{apath}: unreadable safetensors ({e})") from None
        try:
            return cls(settings, state, meta.get("report"), device=device)
        except MmlmError as e:
            raise MmlmError(f"{path}: {e}") from None


def _split(s: dict, images: list[np.ndarray], eval_images) -> tuple[list, list]:
    """(training images, report images): `eval_images` when given, else a seeded held-out share;
    one-line errors when too few images are left to train the codebook."""
    if eval_images is not None:
        train_imgs, held = images, list(eval_images)
    else:
        n_held = min(MAX_HELD_OUT, int(len(images) * s["held_out"]))
        order = np.random.default_rng(s["seed"]).permutation(len(images))
        held = [images[i] for i in np.sort(order[:n_held])]
        train_imgs = [images[i] for i in np.sort(order[n_held:])]
    if len(train_imgs) < MIN_TRAIN_IMAGES:
        raise MmlmError(f"vqvae image tokenizer: {len(train_imgs)} training image(s); it needs at least "
                        f"{MIN_TRAIN_IMAGES}")
    per_image = (s["size"] // s["downsample"]) ** 2
    if s["codebook"] > len(train_imgs) * per_image:
        raise MmlmError(
            f"vqvae image tokenizer: --codebook {s['codebook']} is larger than the data can train: "
            f"{len(train_imgs)} training images x {per_image} codes give {len(train_imgs) * per_image} "
            f"latent vectors (use a smaller --codebook, a larger --image-size or more images)")
    return train_imgs, held
