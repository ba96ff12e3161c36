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
import math
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from .. import __version__, atomic
from ..errors import MmlmError
from ..jsonio import read_json
from ..progress import Progress, silent
from .image import prepare
from .kmeans import arrays_path, check_ids, kmeans

FORMAT = "mmlm-vqvae/1"
KIND = "image-vqvae"
DOWNSAMPLES = (2, 4, 8, 16)
MAX_HELD_OUT = 256  # held-out images the report is measured on (at most)
MIN_TRAIN_IMAGES = 2
# the architecture and training settings, with their defaults; all of them are saved
DEFAULTS = dict(size=32, downsample=4, codebook=256, latent_dim=32, channels=64, steps=1500, batch=64, lr=2e-3,
                beta=0.25, decay=0.99, dead_below=1.0, held_out=0.1, seed=0)


# --- the network ------------------------------------------------------------------------------

def _nn():
    import torch
    from torch import nn

    class ResBlock(nn.Module):
        def __init__(self, ch: int):
            super().__init__()
            self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

        def forward(self, x):
            return x + self.body(x)

    class Encoder(nn.Module):
        """[B, 3, S, S] in [0, 1] -> [B, D, S/f, S/f]; the first steps are narrower (full resolution costs most)."""

        def __init__(self, ch: int, dim: int, steps: int):
            super().__init__()
            widths = [max(ch // 2 ** (steps - i), 16) for i in range(steps)] + [ch]
            layers = [nn.Conv2d(3, widths[0], 3, padding=1)]
            for i in range(steps):
                layers += [nn.ReLU(), nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1)]
            layers += [ResBlock(ch), ResBlock(ch), nn.ReLU(), nn.Conv2d(ch, dim, 1)]
            self.net = nn.Sequential(*layers)

        def forward(self, x):
            return self.net(x - 0.5)

    class Decoder(nn.Module):
        """The mirror image: [B, D, S/f, S/f] -> [B, 3, S, S] (unclamped; clamp to [0, 1] for pixels)."""

        def __init__(self, ch: int, dim: int, steps: int):
            super().__init__()
            widths = [ch] + [max(ch // 2 ** (i + 1), 16) for i in range(steps)]
            layers = [nn.Conv2d(dim, ch, 3, padding=1), ResBlock(ch), ResBlock(ch)]
            for i in range(steps):
                layers += [nn.ReLU(), nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride=2, padding=1)]
            layers += [nn.ReLU(), nn.Conv2d(widths[-1], 3, 3, padding=1)]
            self.net = nn.Sequential(*layers)

        def forward(self, z):
            return self.net(z) + 0.5

    return torch, nn, Encoder, Decoder


class _Quantizer:
    """EMA vector quantiser. `embed` [K, D] is the codebook; `count` [K] and `total` [K, D] the
    running (EMA) number and sum of the encoder outputs assigned to each entry."""

    def __init__(self, embed, decay: float, dead_below: float):
        torch = _nn()[0]
        self.embed = embed
        self.count = torch.ones(len(embed), device=embed.device)
        self.total = embed.clone()
        self.decay, self.dead_below = decay, dead_below

    def assign(self, flat):
        """Index of the nearest entry for each row of `flat` [N, D]."""
        d = (flat * flat).sum(1, keepdim=True) - 2.0 * flat @ self.embed.T + (self.embed * self.embed).sum(1)
        return d.argmin(1)

    def update(self, flat, idx, generator) -> int:
        """One EMA step from a batch of encoder outputs (no gradient), then restart dead entries
        on random rows of `flat`. Returns the number of entries restarted."""
        torch = _nn()[0]
        k = len(self.embed)
        counts = torch.bincount(idx, minlength=k).to(flat.dtype)
        sums = torch.zeros_like(self.total).index_add_(0, idx, flat)
        self.count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.total.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.count.sum()
        smoothed = (self.count + 1e-5) / (n + k * 1e-5) * n  # Laplace smoothing: no division by zero
        self.embed.copy_(self.total / smoothed[:, None])
        dead = torch.nonzero(self.count < self.dead_below).flatten()
        if len(dead):
            pick = torch.randint(len(flat), (len(dead),), generator=generator, device=flat.device)
            self.embed[dead] = flat[pick]
            self.total[dead] = flat[pick]
            self.count[dead] = 1.0
        return int(len(dead))


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


def _to_tensor(torch, images: list[np.ndarray], size: int, what: str):
    x = np.stack([prepare(im, size, f"{what} {i}") for i, im in enumerate(images)])  # [N, S, S, 3]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _device(device: str):
    torch = _nn()[0]
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --- quality measures (shared with the bench, which applies them to the k-means tokenizer too) ---

def psnr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of images in [0, 1], arrays [N, H, W, 3] (capped at 100 dB for exact copies)."""
    mse = np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2, axis=(1, 2, 3))
    return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))


def ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, data range 1)
    of images in [0, 1], arrays [N, H, W, 3]; the mean over valid window positions and channels.
    Images under 11 pixels use a window as wide as the image."""
    from scipy.ndimage import gaussian_filter

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    side = min(x.shape[1], x.shape[2])
    r = min(5, (side - 1) // 2)  # window radius

    def blur(a):
        f = gaussian_filter(a, sigma=(0, 1.5, 1.5, 0), truncate=r / 1.5 if r else 0.0, mode="constant")
        return f[:, r:a.shape[1] - r, r:a.shape[2] - r]  # valid positions only, as the reference does

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))


def code_usage(ids: np.ndarray, n_codes: int) -> dict:
    """How much of a codebook a set of codes uses: share of entries drawn at least once, and the
    perplexity of code use (exp of the entropy of code frequencies: n_codes when all are equally used)."""
    ids = np.asarray(ids).reshape(-1)
    counts = np.bincount(ids, minlength=n_codes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return {"usage": float(np.count_nonzero(counts) / n_codes), "perplexity": float(np.exp(-(p * np.log(p)).sum()))}


def evaluate(tok, images: list[np.ndarray]) -> dict:
    """Reconstruction and code-use report of any image tokenizer with encode/decode (VQ-VAE or
    k-means) on `images`: mean PSNR (dB) and SSIM, codebook usage and perplexity, codes and bits per image."""
    if not images:
        raise MmlmError("image tokenizer report: no images")
    size = tok.settings["size"]
    ref = np.stack([prepare(im, size, f"image {i}") for i, im in enumerate(images)])
    ids = np.stack([tok.encode(im) for im in images])
    rec = np.stack([tok.decode(c) for c in ids]).astype(np.float32) / 255.0
    return {"images": len(images), "psnr": round(float(psnr(ref, rec).mean()), 3),
            "ssim": round(float(ssim(ref, rec).mean()), 4),
            **{k: round(v, 4) for k, v in code_usage(ids, tok.n_tokens).items()},
            "codes_per_image": tok.codes_per_image,
            "bits_per_image": round(tok.codes_per_image * math.log2(tok.n_tokens), 1)}


# --- the tokenizer ------------------------------------------------------------------------------

class VQVAETokenizer:
    """Images <-> fixed grids of codes through a learnt VQ-VAE. Build with `train` or `load`."""

    external = False  # the tokenize pipeline asks every image tokenizer

    def __init__(self, settings: dict, state: dict, report: dict | None = None, device: str = "cpu"):
        """`state`: the weights (numpy or torch arrays) as `save` writes them."""
        torch, _, Encoder, Decoder = _nn()
        self._settings = dict(settings)
        self.report = dict(report or {})
        s, steps = self._settings, int(math.log2(settings["downsample"]))
        with torch.random.fork_rng(devices=[]):  # the weights are overwritten: leave the caller's RNG as it was
            self.encoder = Encoder(s["channels"], s["latent_dim"], steps)
            self.decoder = Decoder(s["channels"], s["latent_dim"], steps)
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
        self.device = _device(device)
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
        images = list(images)
        rng = np.random.default_rng(s["seed"])
        if eval_images is not None:
            train_imgs, held = images, list(eval_images)
        else:
            n_held = min(MAX_HELD_OUT, int(len(images) * s["held_out"]))
            order = rng.permutation(len(images))
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
        t0 = time.perf_counter()
        state, history = _fit(s, train_imgs, _device(device), on_progress)
        seconds = time.perf_counter() - t0
        tok = cls(s, state)
        tok.report = {"eval_on": "held-out" if held else "training",  # training: too few images to hold any out
                      **evaluate(tok, held or train_imgs), "train_images": len(train_imgs),
                      "train_seconds": round(seconds, 1), "device": str(_device(device)),
                      "restarts": history["restarts"], "train_usage": history["usage"],
                      "train_perplexity": history["perplexity"]}
        return tok

    # --- the tokenizer face --------------------------------------------------------------------

    @property
    def n_tokens(self) -> int:
        return int(self._settings["codebook"])

    @property
    def grid(self) -> tuple[int, int]:
        g = self._settings["size"] // self._settings["downsample"]
        return g, g

    @property
    def codes_per_image(self) -> int:
        h, w = self.grid
        return h * w

    @property
    def settings(self) -> dict:
        """What vocab.json records (`tokenizer` tells the pipeline which class to load)."""
        return {"tokenizer": "vqvae", **self._settings}

    def encode(self, image: np.ndarray) -> np.ndarray:
        """Pixels -> int64[codes_per_image], raster order."""
        return self.encode_batch([image])[0]

    def encode_batch(self, images: list[np.ndarray]) -> np.ndarray:
        """Pixels of several images -> int64[n, codes_per_image]."""
        torch = _nn()[0]
        x = _to_tensor(torch, list(images), self._settings["size"], "image").to(self.device)
        with torch.no_grad():
            z = self.encoder(x)
            flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            d = (flat * flat).sum(1, keepdim=True) - 2.0 * flat @ self.codebook.T + (self.codebook ** 2).sum(1)
            return d.argmin(1).reshape(len(x), -1).cpu().numpy().astype(np.int64)

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """Codes -> uint8 RGB image [size, size, 3]."""
        torch = _nn()[0]
        ids = check_ids(ids, self.n_tokens, "image codes")
        if ids.size != self.codes_per_image:
            raise MmlmError(f"image codes: got {ids.size} codes, an image has {self.codes_per_image}")
        h, w = self.grid
        idx = torch.from_numpy(ids.reshape(h, w)).to(self.device)
        with torch.no_grad():
            z = self.codebook[idx].permute(2, 0, 1)[None]
            x = self.decoder(z)[0].clamp(0.0, 1.0).permute(1, 2, 0).cpu().numpy()
        return np.rint(x * 255.0).astype(np.uint8)

    def state(self) -> dict[str, np.ndarray]:
        """The weights, as saved: encoder.*, decoder.*, codebook (float32 numpy)."""
        out = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        out.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()})
        out["codebook"] = self.codebook
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in out.items()}

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
        apath = path.with_name(str(meta.get("arrays", "")))
        try:
            blob = apath.read_bytes()
        except OSError:
            raise MmlmError(f"{path}: its weights file {apath.name} is missing") from None
        if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
            raise MmlmError(f"{apath}: checksum does not match {path.name} (file changed or corrupt)")
        try:
            state = load(blob)
        except Exception as e:  # safetensors raises its own error types
            raise MmlmError(f"{apath}: unreadable safetensors ({e})") from None
        try:
            return cls(settings, state, meta.get("report"), device=device)
        except MmlmError as e:
            raise MmlmError(f"{path}: {e}") from None


def _fit(s: dict, images: list[np.ndarray], device, on_progress: Progress | None) -> tuple[dict, dict]:
    """The training loop: Adam on reconstruction MSE + beta x commitment, EMA codebook, restarts.
    Everything random comes from `seed` (weights through a forked global RNG, batches and restarts
    through generators), so on CPU the same seed gives the same weights."""
    torch, _, Encoder, Decoder = _nn()
    on_progress = on_progress or silent
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormals made CPU backward passes up to 50x slower
    x_all = _to_tensor(torch, images, s["size"], "training image").to(device)
    steps_down = int(math.log2(s["downsample"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s["seed"])
        enc = Encoder(s["channels"], s["latent_dim"], steps_down).to(device)
        dec = Decoder(s["channels"], s["latent_dim"], steps_down).to(device)
    gen = torch.Generator(device="cpu").manual_seed(s["seed"])
    dev_gen = gen if device.type == "cpu" else torch.Generator(device=device).manual_seed(s["seed"])
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=s["lr"])
    # linear warm-up over the first 5% of steps, then cosine decay to a tenth
    warm = max(1, s["steps"] // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / warm) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, t / s["steps"])))))
    batch = min(s["batch"], len(x_all))

    def draw():
        return x_all[torch.randint(len(x_all), (batch,), generator=gen).to(device)]

    def latents(x):
        z = enc(x)
        return z, z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])

    # codebook initialised by k-means on encoder outputs of the first batches (the untrained encoder)
    with torch.no_grad():
        n_init = max(1, math.ceil(4 * s["codebook"] / ((s["size"] // s["downsample"]) ** 2 * batch)))
        flat0 = torch.cat([latents(draw())[1] for _ in range(n_init)]).cpu().numpy()
    init = kmeans(flat0, s["codebook"], seed=s["seed"], iters=10, sample=20_000)
    quant = _Quantizer(torch.from_numpy(init).to(device), s["decay"], s["dead_below"])
    enc.train()
    dec.train()
    restarts, recent = 0, []
    for step in range(s["steps"]):
        x = draw()
        z, flat = latents(x)
        idx = quant.assign(flat.detach())
        q = quant.embed[idx]
        commit = torch.mean((flat - q) ** 2)
        zq = (flat + (q - flat).detach()).reshape(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        loss = torch.mean((dec(zq) - x) ** 2) + s["beta"] * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            restarts += quant.update(flat.detach(), idx, dev_gen)
        if step >= s["steps"] - 20:  # usage over the last 20 batches, for the report
            recent.append(idx.cpu())
        if step % 10 == 0 or step == s["steps"] - 1:
            on_progress("train image", step + 1, s["steps"])
    use = code_usage(torch.cat(recent).numpy(), s["codebook"])
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in dec.state_dict().items()})
    state["codebook"] = quant.embed
    state = {k: v.detach().cpu() for k, v in state.items()}
    return state, {"restarts": restarts, "usage": round(use["usage"], 4), "perplexity": round(use["perplexity"], 2)}
