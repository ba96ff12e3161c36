"""How well an image tokenizer reconstructs: PSNR, SSIM and code use (the VQ-VAE's report, and the
bench, which applies them to the k-means tokenizer too)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import MmlmError
from .image import prepare


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
