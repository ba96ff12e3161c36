"""The VQ-VAE's network (convolutional encoder and decoder) and its EMA vector quantiser.

torch is imported only when a network is built (`modules()`), so that the tokenize pipeline's
other kinds do not pay for it.
"""
from __future__ import annotations

import math

import numpy as np

from .image import prepare


def modules():
    """(torch, nn, Encoder, Decoder): the classes are defined on first use, after torch is imported."""
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


def build(s: dict):
    """(encoder, decoder) for settings `s` (weights drawn from torch's global RNG)."""
    _, _, Encoder, Decoder = modules()
    steps = int(math.log2(s["downsample"]))
    return Encoder(s["channels"], s["latent_dim"], steps), Decoder(s["channels"], s["latent_dim"], steps)


def nearest(flat, embed):
    """Index of the nearest row of `embed` [K, D] for each row of `flat` [N, D]."""
    d = (flat * flat).sum(1, keepdim=True) - 2.0 * flat @ embed.T + (embed * embed).sum(1)
    return d.argmin(1)


class Quantizer:
    """EMA vector quantiser. `embed` [K, D] is the codebook; `count` [K] and `total` [K, D] the
    running (EMA) number and sum of the encoder outputs assigned to each entry."""

    def __init__(self, embed, decay: float, dead_below: float):
        torch = modules()[0]
        self.embed = embed
        self.count = torch.ones(len(embed), device=embed.device)
        self.total = embed.clone()
        self.decay, self.dead_below = decay, dead_below

    def assign(self, flat):
        """Index of the nearest entry for each row of `flat` [N, D]."""
        return nearest(flat, self.embed)

    def update(self, flat, idx, generator) -> int:
        """One EMA step from a batch of encoder outputs (no gradient), then restart dead entries
        on random rows of `flat`. Returns the number of entries restarted."""
        torch = modules()[0]
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


def to_tensor(torch, images: list[np.ndarray], size: int, what: str):
    """Images -> float32 [N, 3, S, S] in [0, 1] (each checked and resized by `image.prepare`)."""
    x = np.stack([prepare(im, size, f"{what} {i}") for i, im in enumerate(images)])  # [N, S, S, 3]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def device(name: str):
    """A torch device from "auto" (CUDA when there is one), "cpu" or "cuda[:k]"."""
    torch = modules()[0]
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def weights(encoder, decoder, codebook) -> dict:
    """The state as saved: encoder.*, decoder.*, codebook (tensors, detached, on the CPU)."""
    out = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    out.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    out["codebook"] = codebook
    return {k: v.detach().cpu() for k, v in out.items()}
