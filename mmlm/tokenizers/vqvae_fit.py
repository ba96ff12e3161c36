"""The VQ-VAE's training loop: Adam on reconstruction MSE + beta x commitment, EMA codebook, restarts.

Everything random comes from `seed` (weights through a forked global RNG, batches and restarts
through generators), so on CPU the same seed gives the same weights.
"""
from __future__ import annotations

import math

import numpy as np

from ..progress import Progress, silent
from .image_quality import code_usage
from .kmeans import kmeans
from .vqvae_net import Quantizer, build, modules, to_tensor, weights


def fit(s: dict, images: list[np.ndarray], device, on_progress: Progress | None) -> tuple[dict, dict]:
    """Train encoder, decoder and codebook on `images` with settings `s`; returns the weights (as
    `vqvae_net.weights` gives them) and the training history (restarts, code use of the last batches)."""
    torch = modules()[0]
    on_progress = on_progress or silent
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormals made CPU backward passes up to 50x slower
    x_all = to_tensor(torch, images, s["size"], "training image").to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s["seed"])
        enc, dec = (m.to(device) for m in build(s))
    gen = torch.Generator(device="cpu").manual_seed(s["seed"])
    dev_gen = gen if device.type == "cpu" else torch.Generator(device=device).manual_seed(s["seed"])
    batch = min(s["batch"], len(x_all))

    def draw():
        return x_all[torch.randint(len(x_all), (batch,), generator=gen).to(device)]

    quant = _init_quantizer(torch, s, enc, draw, batch, device)
    restarts, recent = _train(torch, s, enc, dec, quant, draw, dev_gen, on_progress)
    use = code_usage(torch.cat(recent).numpy(), s["codebook"])
    return weights(enc, dec, quant.embed), {"restarts": restarts, "usage": round(use["usage"], 4),
                                            "perplexity": round(use["perplexity"], 2)}


def _latents(enc, x):
    """Encoder output [B, D, h, w] and the same as rows [B*h*w, D]."""
    z = enc(x)
    return z, z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def _init_quantizer(torch, s: dict, enc, draw, batch: int, device) -> Quantizer:
    """The codebook initialised by k-means on encoder outputs of the first batches (the untrained encoder)."""
    with torch.no_grad():
        n_init = max(1, math.ceil(4 * s["codebook"] / ((s["size"] // s["downsample"]) ** 2 * batch)))
        flat0 = torch.cat([_latents(enc, draw())[1] for _ in range(n_init)]).cpu().numpy()
    init = kmeans(flat0, s["codebook"], seed=s["seed"], iters=10, sample=20_000)
    return Quantizer(torch.from_numpy(init).to(device), s["decay"], s["dead_below"])


def _optimizer(torch, params, s: dict):
    """Adam, with a linear warm-up over the first 5% of steps, then cosine decay to a tenth."""
    opt = torch.optim.Adam(params, lr=s["lr"])
    warm = max(1, s["steps"] // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / warm) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, t / s["steps"])))))
    return opt, sched


def _loss(torch, s: dict, dec, x, z, flat, q):
    """Reconstruction MSE through straight-through quantised latents, plus beta x the commitment loss."""
    commit = torch.mean((flat - q) ** 2)
    zq = (flat + (q - flat).detach()).reshape(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
    return torch.mean((dec(zq) - x) ** 2) + s["beta"] * commit


def _train(torch, s: dict, enc, dec, quant: Quantizer, draw, generator, on_progress: Progress) -> tuple[int, list]:
    """The steps; returns the number of codebook restarts and the codes of the last 20 batches."""
    opt, sched = _optimizer(torch, list(enc.parameters()) + list(dec.parameters()), s)
    enc.train()
    dec.train()
    restarts, recent = 0, []
    for step in range(s["steps"]):
        x = draw()
        z, flat = _latents(enc, x)
        idx = quant.assign(flat.detach())
        loss = _loss(torch, s, dec, x, z, flat, quant.embed[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            restarts += quant.update(flat.detach(), idx, generator)
        if step >= s["steps"] - 20:  # usage over the last 20 batches, for the report
            recent.append(idx.cpu())
        if step % 10 == 0 or step == s["steps"] - 1:
            on_progress("train image", step + 1, s["steps"])
    return restarts, recent
