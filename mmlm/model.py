"""The decoder: a GPT-style pre-norm causal transformer, its named sizes, and a KV cache.

Shape as in nanoGPT / GPT-3 / OPT: token + learned position embeddings, pre-LayerNorm blocks of
causal self-attention and a 4x GELU MLP, a final LayerNorm, output projection tied to the token
embedding. Biases everywhere (GPT-3/OPT have them).

Incremental decoding:

    cache = model.new_kv_cache(batch_size=1, max_len=512)
    logits, cache = model(prompt, kv_cache=cache)          # fills positions [0, len(prompt))
    logits, cache = model(next_token[:, None], kv_cache=cache)   # one more position
    cache.pos                                              # positions filled so far

Attention backends: "sdpa" (torch scaled_dot_product_attention, everywhere) and "xformers"
(memory_efficient_attention, CUDA only); `resolve_attention` picks one for "auto".
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import MmlmError

# --list-sizes reports parameter counts for this vocabulary size unless a data root is given.
DEFAULT_VOCAB_SIZE = 4096
ATTENTION_CHOICES = ("auto", "sdpa", "xformers")


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    n_head: int
    d_model: int
    vocab_size: int = 0  # set from the data root's vocab.json
    seq_len: int = 256  # context length (number of learned positions)
    dropout: float = 0.0
    bias: bool = True

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "GPTConfig":
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__ if k in obj})


# Named sizes. CPU presets: non-embedding parameters from ~55K to ~4.7M, context 256.
# Paper grid (8M ... 30B): GPT-3 / OPT shapes (OPT for 125M, 350M, 1.3B-30B; GPT-3 for 760M),
# context 2048 as in CM3. "8M" is 8M parameters at the default vocabulary size.
SIZES: dict[str, GPTConfig] = {
    "pico": GPTConfig(n_layer=2, n_head=2, d_model=48),
    "nano": GPTConfig(n_layer=3, n_head=3, d_model=96),
    "micro": GPTConfig(n_layer=4, n_head=4, d_model=128),
    "mini": GPTConfig(n_layer=6, n_head=6, d_model=192),
    "small": GPTConfig(n_layer=6, n_head=8, d_model=256),
    "8M": GPTConfig(n_layer=8, n_head=4, d_model=256, seq_len=2048),
    "125M": GPTConfig(n_layer=12, n_head=12, d_model=768, seq_len=2048),
    "350M": GPTConfig(n_layer=24, n_head=16, d_model=1024, seq_len=2048),
    "760M": GPTConfig(n_layer=24, n_head=16, d_model=1536, seq_len=2048),
    "1.3B": GPTConfig(n_layer=24, n_head=32, d_model=2048, seq_len=2048),
    "2.7B": GPTConfig(n_layer=32, n_head=32, d_model=2560, seq_len=2048),
    "6.7B": GPTConfig(n_layer=32, n_head=32, d_model=4096, seq_len=2048),
    "13B": GPTConfig(n_layer=40, n_head=40, d_model=5120, seq_len=2048),
    "30B": GPTConfig(n_layer=48, n_head=56, d_model=7168, seq_len=2048),
}


SHAPE_KEYS = ("n_layer", "d_model", "n_head")


def check_shape(n_layer, d_model, n_head, where: str = "") -> tuple[int, int, int] | None:
    """A custom shape (all three given) or None (none given); MmlmError naming `where` otherwise."""
    given = [v is not None for v in (n_layer, d_model, n_head)]
    if not any(given):
        return None
    flags = ", ".join(f"--{k.replace('_', '-')}" for k in SHAPE_KEYS)
    if not all(given):
        raise MmlmError(f"{where}a custom shape needs all of {flags}")
    for k, v in zip(SHAPE_KEYS, (n_layer, d_model, n_head)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise MmlmError(f"{where}{k} must be a positive whole number, got {v!r}")
    if d_model % n_head:
        raise MmlmError(f"{where}d_model {d_model} is not divisible by n_head {n_head}")
    return int(n_layer), int(d_model), int(n_head)


def shape_name(n_layer: int, d_model: int, n_head: int) -> str:
    """The default name of a custom shape: 'L2d32h2' (no dashes: run ids are split on them)."""
    return f"L{n_layer}d{d_model}h{n_head}"


def model_config(size: str, vocab_size: int, seq_len: int | None = None,
                 shape: tuple[int, int, int] | None = None) -> GPTConfig:
    """The GPTConfig of a named size, or of a custom `shape` (n_layer, d_model, n_head; then `size` is
    only its name), for a vocabulary (and optionally another context length)."""
    if shape is None and size not in SIZES:
        raise MmlmError(f"--size {size!r}: unknown size (known: {', '.join(SIZES)}; or give a custom shape "
                        f"with --n-layer, --d-model, --n-head)")
    if seq_len is not None and seq_len < 1:
        raise MmlmError(f"--seq-len {seq_len}: must be at least 1")
    if shape is not None:
        n_layer, d_model, n_head = check_shape(*shape)
        cfg = GPTConfig(n_layer=n_layer, n_head=n_head, d_model=d_model, vocab_size=int(vocab_size))
    else:
        cfg = replace(SIZES[size], vocab_size=int(vocab_size))
    return replace(cfg, seq_len=int(seq_len)) if seq_len else cfg


def count_params(cfg: GPTConfig, vocab_size: int | None = None) -> dict:
    """Exact parameter counts of `GPT(cfg)`: {"n_params", "n_params_nonembed"}.

    Non-embedding excludes the token and position embeddings (the output layer is tied to the
    token embedding, so it adds nothing)."""
    V = cfg.vocab_size if vocab_size is None else vocab_size
    d, b = cfg.d_model, int(cfg.bias)
    ln = 2 * d if cfg.bias else d
    block = 2 * ln + (3 * d * d + b * 3 * d) + (d * d + b * d) + (4 * d * d + b * 4 * d) + (4 * d * d + b * d)
    nonembed = cfg.n_layer * block + ln
    return {"n_params": nonembed + V * d + cfg.seq_len * d, "n_params_nonembed": nonembed}


def size_table(vocab_size: int = DEFAULT_VOCAB_SIZE) -> dict:
    """{name: {"n_params", "n_params_nonembed", "layers", "d_model", "heads", "seq_len"}} for every size."""
    out = {}
    for name, cfg in SIZES.items():
        out[name] = {**count_params(cfg, vocab_size), "layers": cfg.n_layer, "d_model": cfg.d_model,
                     "heads": cfg.n_head, "seq_len": cfg.seq_len}
    return out


def resolve_attention(name: str, device: str | torch.device) -> str:
    """Pick the attention backend: "auto" is xformers on CUDA when it imports, else sdpa."""
    if name not in ATTENTION_CHOICES:
        raise MmlmError(f"--attention {name!r}: unknown backend (choose from {', '.join(ATTENTION_CHOICES)})")
    on_cuda = torch.device(device).type == "cuda"
    if name == "sdpa":
        return "sdpa"
    if name == "xformers" and not on_cuda:
        raise MmlmError("--attention xformers: needs a CUDA device (xformers has no CPU kernels); use sdpa or auto")
    try:
        import xformers.ops  # noqa: F401
    except Exception as e:  # ImportError, or a build that does not match this torch
        if name == "xformers":
            raise MmlmError(f"--attention xformers: xformers does not import here ({type(e).__name__}: {e})") from None
        return "sdpa"
    return "xformers" if on_cuda else "sdpa"


class KVCache:
    """Keys and values of every layer for positions [0, pos), preallocated up to `max_len`.

    Layout [n_layer, batch, max_len, n_head, head_dim]. `GPT.forward` writes the new positions and
    advances `pos`; `crop(n)` forgets everything from position n on (e.g. to re-decode a suffix).
    """

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        max_len = cfg.seq_len if max_len is None else max_len
        if not 0 < max_len <= cfg.seq_len:
            raise MmlmError(f"KV cache of {max_len} positions: must be between 1 and the context length {cfg.seq_len}")
        shape = (cfg.n_layer, batch_size, max_len, cfg.n_head, cfg.d_model // cfg.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def crop(self, n: int) -> None:
        if not 0 <= n <= self.pos:
            raise MmlmError(f"KV cache crop to {n}: must be between 0 and {self.pos}")
        self.pos = n


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str, dropout: float = 0.0) -> torch.Tensor:
    """Causal attention. q [B, Tq, H, D], k/v [B, Tk, H, D] with Tk >= Tq: the queries are the last
    Tq of the Tk positions, so query i may see keys 0 .. Tk - Tq + i. Returns [B, Tq, H, D]."""
    Tq, Tk = q.shape[1], k.shape[1]
    offset = Tk - Tq
    if backend == "xformers":
        from xformers.ops import fmha, memory_efficient_attention

        if Tq == 1:
            bias = None  # one query at the end sees every key
        elif offset == 0:
            bias = fmha.attn_bias.LowerTriangularMask()
        else:
            bias = fmha.attn_bias.LowerTriangularFromBottomRightMask()
        return memory_efficient_attention(q, k, v, attn_bias=bias, p=dropout)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if Tq == 1:
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    elif offset == 0:
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
    else:  # is_causal aligns the mask top-left; a cache needs it aligned bottom-right
        mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=offset)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    return y.transpose(1, 2)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.d_model % cfg.n_head:
            raise MmlmError(f"d_model {cfg.d_model} is not divisible by n_head {cfg.n_head}")
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.backend = "sdpa"

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).unbind(2)
        if cache is not None:
            end = cache.pos + T
            cache.k[layer, :, cache.pos:end] = k
            cache.v[layer, :, cache.pos:end] = v
            k = cache.k[layer, :, :end].to(q.dtype)
            v = cache.v[layer, :, :end].to(q.dtype)
        y = attend(q, k, v, self.backend, self.dropout if self.training else 0.0)
        return self.c_proj(y.reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x), cache, layer))
        return x + self.drop(self.mlp(self.ln_2(x)))


def init_std(d_model: int) -> float:
    """Standard deviation of the initial weights: 0.5 / sqrt(d_model), which is GPT-2's 0.02 at width 625,
    and 0.02 from there up (the paper's grid keeps GPT-2's init). At 0.02 a width-24 model starts so close
    to zero that it sat on the unigram plateau for a random 100-500 steps (two seeds of one 400-step run
    ended 0.33 nats apart); at 0.5 / sqrt(d_model) the seeds end within 0.02 nats (docs/demo.md)."""
    return max(0.02, 0.5 / math.sqrt(d_model))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, attention: str = "sdpa"):
        super().__init__()
        if cfg.vocab_size < 1:
            raise MmlmError("model config has no vocabulary size")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        std = init_std(cfg.d_model)
        for name, p in self.named_parameters():
            if p.dim() == 2:  # GPT-2: the residual projections scaled by 1/sqrt(2 * n_layer)
                residual = name.endswith("c_proj.weight")
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * cfg.n_layer) if residual else std)
            else:
                nn.init.zeros_(p) if name.endswith("bias") else nn.init.ones_(p)
        self.set_attention(attention)

    def set_attention(self, backend: str) -> None:
        """Switch every layer to "sdpa" or "xformers" (use `resolve_attention` to choose)."""
        if backend not in ("sdpa", "xformers"):
            raise MmlmError(f"attention backend {backend!r}: expected 'sdpa' or 'xformers'")
        self.attention = backend
        for block in self.blocks:
            block.attn.backend = backend

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        p = self.wte.weight
        return KVCache(self.cfg, batch_size, max_len, device=p.device, dtype=dtype or p.dtype)

    def forward(self, idx: torch.Tensor, kv_cache: KVCache | None = None, last_only: bool = False):
        """idx [B, T] token ids -> (logits [B, T, vocab] (or [B, 1, vocab] with last_only), kv_cache).

        With a cache, idx holds the positions after the `kv_cache.pos` already cached."""
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        limit = kv_cache.max_len if kv_cache is not None else self.cfg.seq_len
        if start + T > limit:
            raise MmlmError(f"{start + T} positions exceed the {'KV cache' if kv_cache is not None else 'context'} length {limit}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache, i)
        if kv_cache is not None:
            kv_cache.pos += T
        if last_only:
            x = x[:, -1:]
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied output layer
        return logits, kv_cache
