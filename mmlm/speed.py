"""Training speed: model FLOPs per token, the peak a device can reach, MFU, and dry-run estimates.

    fpt = flops_per_token(model_cfg)             # 6 N per token plus the attention term
    peak = resolve_peak(torch.device("cuda"))    # table, --peak-flops, or a measured matmul (cached)
    meter = SpeedMeter(fpt, peak)
    meter.step(tokens=8192, seconds=0.05)        # {"speed/tokens_per_s", "speed/model_flops_per_s", "speed/mfu"}

Model FLOPs (PaLM, appendix B; nanoGPT's estimate_mfu): a forward and backward pass costs 6 FLOPs per
matmul parameter per token, plus 12 L T d for attention scores and their weighting (T the context,
counted unmasked as everyone does). Matmul parameters are the non-embedding ones plus the output
layer (tied to the token embedding here, but a real V x d matmul); the position table is a lookup.

Peaks are dense bf16 tensor-core FLOP/s from each vendor's datasheet (never the "with sparsity"
figure, which is twice as high). On a device not in the table, and on CPU (fp32, the dtype CPU
training uses), a square matmul is timed once and the result cached per device, dtype, thread count
and torch version in the user cache folder ($MMLM_CACHE_DIR, else $XDG_CACHE_HOME/mmlm, else
~/.cache/mmlm). MFU can never exceed 100%: a rate above the peak means the peak is wrong, and the
meter then measures against the achieved rate and says so (`peak_exceeded`).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import MmlmError

# (substring of torch.cuda.get_device_name, dense bf16 FLOP/s, source). First match wins, so the
# more specific names come first ("GH200" contains "H200", "H100 PCIe" contains "H100").
DENSE_BF16_PEAKS: list[tuple[str, float, str]] = [
    ("GH200", 989e12, "NVIDIA GH200 Grace Hopper datasheet: 989 TFLOP/s dense BF16 (1979 with sparsity)"),
    ("H200 NVL", 835e12, "NVIDIA H200 NVL datasheet: 835 TFLOP/s dense BF16 (1671 with sparsity)"),
    ("H200", 989e12, "NVIDIA H200 SXM datasheet: 989 TFLOP/s dense BF16 (1979 with sparsity)"),
    ("H100 PCIe", 756e12, "NVIDIA H100 PCIe datasheet: 756 TFLOP/s dense BF16 (1513 with sparsity)"),
    ("H100 NVL", 835e12, "NVIDIA H100 NVL datasheet: 835 TFLOP/s dense BF16 (1671 with sparsity)"),
    ("H100", 989e12, "NVIDIA H100 SXM datasheet: 989 TFLOP/s dense BF16 (1979 with sparsity)"),
    ("B200", 2250e12, "NVIDIA HGX B200 datasheet: 2.25 PFLOP/s dense BF16 per GPU (4.5 with sparsity)"),
    ("A100", 312e12, "NVIDIA A100 datasheet: 312 TFLOP/s dense BF16 (624 with sparsity), SXM and PCIe"),
    ("L40S", 362e12, "NVIDIA L40S datasheet: 362 TFLOP/s dense BF16 (733 with sparsity)"),
    ("A10G", 70e12, "AWS/NVIDIA A10G: 70 TFLOP/s dense BF16 (140 with sparsity)"),
    ("A10", 125e12, "NVIDIA A10 datasheet: 125 TFLOP/s dense BF16 (250 with sparsity)"),
    ("L4", 121e12, "NVIDIA L4 datasheet: 121 TFLOP/s dense BF16 (242 with sparsity)"),
]
ASSUMED_MFU = 0.4  # for wall-time estimates before a run: what tuned dense training reaches on GPUs
# ... and on CPU, where the small models reach 3-10% of a one-thread fp32 matmul (bench/train_step.py)
ASSUMED_MFU_CPU = 0.05


def assumed_mfu(device_type: str) -> float:
    return ASSUMED_MFU if device_type == "cuda" else ASSUMED_MFU_CPU
SPEED_KEYS = ("speed/tokens_per_s", "speed/model_flops_per_s", "speed/mfu")  # per-step metrics.jsonl fields
SUMMARY_KEYS = ("wall_seconds", "train_seconds", "tokens_per_second", "model_flops_per_second", "mfu",
                "flops_per_token", "peak_flops", "peak_source", "peak_exceeded")


def flops_per_token(cfg) -> int:
    """Training FLOPs per token of a GPTConfig (forward + backward): 6 N_matmul + 12 L T d."""
    from .model import count_params

    n = count_params(cfg)["n_params_nonembed"] + cfg.vocab_size * cfg.d_model  # + the output layer
    return int(6 * n + 12 * cfg.n_layer * cfg.seq_len * cfg.d_model)


# ---- peaks ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Peak:
    flops: float  # FLOP/s
    source: str  # where the number comes from, for the log and summary.json


def table_peak(device_name: str) -> Peak | None:
    """The datasheet dense bf16 peak of a CUDA device by its name, or None if not tabled."""
    for key, flops, source in DENSE_BF16_PEAKS:
        if key.lower() in device_name.lower():
            return Peak(flops, f"table: {source}")
    return None


def cache_dir() -> Path:
    """The user cache folder of mmlm (never inside a repository or run folder)."""
    if os.environ.get("MMLM_CACHE_DIR"):
        return Path(os.environ["MMLM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmlm"


def _device_key(device) -> tuple[str, str]:
    """(name, dtype) that identify what a measured peak is for."""
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device), "bfloat16"
    return f"cpu {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads", "float32"


def measure_matmul_peak(device, dtype=None, seconds: float = 0.5) -> float:
    """FLOP/s of the best of a few square matmuls on `device` (at least `seconds` of timing in all)."""
    import torch

    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    sizes = (8192,) if device.type == "cuda" else (256, 512, 1024)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        c = a @ b  # warm-up (and the kernel choice)
        deadline = time.perf_counter() + seconds / len(sizes)
        while True:
            sync()
            t = time.perf_counter()
            torch.matmul(a, b, out=c)
            sync()
            dt = time.perf_counter() - t
            best = max(best, 2 * n**3 / max(dt, 1e-9))
            if time.perf_counter() > deadline:
                break
    return best


def resolve_peak(device, override: float | None = None, measure=measure_matmul_peak) -> Peak:
    """The peak MFU is measured against: --peak-flops, the table, else a cached measured matmul."""
    import torch

    if override is not None:
        if not (isinstance(override, (int, float)) and math.isfinite(override) and override > 0):
            raise MmlmError(f"--peak-flops {override}: must be a positive number of FLOP/s (e.g. 989e12)")
        return Peak(float(override), "--peak-flops")
    device = torch.device(device)
    if device.type == "cuda":
        found = table_peak(torch.cuda.get_device_name(device))
        if found:
            return found
    name, dtype = _device_key(device)
    key = f"{name} | {dtype} | torch {torch.__version__}"
    path = cache_dir() / "peak_flops.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict):
        cached = {}
    flops = cached.get(key)
    if not (isinstance(flops, (int, float)) and flops > 0):
        flops = measure(device, getattr(torch, dtype))
        try:
            from . import atomic

            atomic.write_json(path, {**cached, key: flops})
        except OSError:
            pass  # an unwritable cache only costs a measurement next time
    return Peak(float(flops), f"measured {dtype} matmul on {name} (cache: {path})")


def for_devices(peak: Peak, devices: int) -> Peak:
    """The peak of `devices` processes training together (the meter sees the global batch's rate)."""
    return peak if devices <= 1 else Peak(peak.flops * devices, f"{peak.source}, x{devices} processes")


# ---- the meter --------------------------------------------------------------------------------

class SpeedMeter:
    """Tokens/s, model FLOP/s and MFU per step and over the run (training-step time only)."""

    def __init__(self, flops_per_token: int, peak: Peak, seconds: float = 0.0, tokens: int = 0):
        self.fpt, self.peak = int(flops_per_token), peak
        self.seconds, self.tokens = float(seconds), int(tokens)  # carried over a resume
        self.peak_exceeded = False

    def mfu(self, flops_per_s: float) -> float:
        """Model FLOP/s over the peak, never above 1: beating the peak means the peak was wrong."""
        if flops_per_s > self.peak.flops:
            self.peak_exceeded = True
            return 1.0
        return flops_per_s / self.peak.flops

    def step(self, tokens: int, seconds: float) -> dict:
        self.seconds += seconds
        self.tokens += tokens
        rate = tokens / max(seconds, 1e-9)
        return {"speed/tokens_per_s": rate, "speed/model_flops_per_s": rate * self.fpt,
                "speed/mfu": self.mfu(rate * self.fpt)}

    def summary(self, wall_seconds: float) -> dict:
        rate = self.tokens / self.seconds if self.seconds > 0 else None
        flops = None if rate is None else rate * self.fpt
        return {"wall_seconds": wall_seconds, "train_seconds": self.seconds, "tokens_per_second": rate,
                "model_flops_per_second": flops, "mfu": None if flops is None else self.mfu(flops),
                "flops_per_token": self.fpt, "peak_flops": self.peak.flops, "peak_source": self.peak.source,
                "peak_exceeded": self.peak_exceeded}


# ---- dry run: what a run will cost, before anything is allocated --------------------------------

ACT_BYTES_PER_TOKEN_LAYER = 34  # x d_model, 16-bit activations of one block (Korthikanti et al. 2022, no recompute)
LOGIT_BYTES_PER_TOKEN = 10  # x vocab: bf16 logits, their fp32 copy and its gradient


@dataclass
class Estimate:
    n_params: int
    n_params_nonembed: int
    steps: int
    tokens: int
    flops_per_token: int
    flops: float
    devices: int
    fsdp: bool
    micro_rows: int
    activation_checkpointing: str
    bytes_weights: float  # per device
    bytes_grads: float
    bytes_adam: float
    bytes_activations: float
    bytes_total: float
    peak_flops: float | None
    peak_source: str
    assumed_mfu: float
    seconds: float | None  # estimated wall time at assumed_mfu on `devices` devices
    device_hours: float | None

    def to_json(self) -> dict:
        return asdict(self)


def activation_bytes(cfg, micro_rows: int, fp32: bool, checkpointing: str = "none") -> float:
    """Activation memory of one micro-batch: per block 34 d bytes/token (x2 in fp32), the logits,
    and under checkpointing only each block's input is kept (full) or every second block (selective)."""
    tokens = micro_rows * cfg.seq_len
    scale = 2 if fp32 else 1
    block = ACT_BYTES_PER_TOKEN_LAYER * cfg.d_model * scale
    kept_input = 2 * cfg.d_model * scale
    L = cfg.n_layer
    if checkpointing == "full":
        per_token = L * kept_input + block  # inputs of every block, one block recomputed at a time
    elif checkpointing == "selective":
        n_ckpt = L // 2
        per_token = n_ckpt * kept_input + (L - n_ckpt) * block + block
    else:
        per_token = L * block
    return tokens * (per_token + LOGIT_BYTES_PER_TOKEN * cfg.vocab_size * (2 if fp32 else 1))


def estimate(cfg, steps: int, batch_tokens: int, micro_rows: int, devices: int = 1, fsdp: bool = False,
             fp32: bool = False, peak: Peak | None = None, checkpointing: str = "none",
             assumed_mfu: float = ASSUMED_MFU) -> Estimate:
    """Parameters, memory per device (fp32 weights and grads, AdamW's two fp32 moments; sharded over
    the devices under FSDP), FLOPs and wall time of a run of `steps` updates of `batch_tokens`."""
    from .model import count_params

    n = count_params(cfg)
    shard = devices if fsdp else 1
    w = 4 * n["n_params"] / shard
    g = 4 * n["n_params"] / shard
    adam = 8 * n["n_params"] / shard
    act = activation_bytes(cfg, micro_rows, fp32, checkpointing)
    fpt = flops_per_token(cfg)
    tokens = steps * batch_tokens
    flops = float(fpt) * tokens
    recompute = {"none": 1.0, "selective": 7 / 6, "full": 4 / 3}[checkpointing]  # an extra forward per recomputed block
    seconds = None
    if peak is not None:
        seconds = flops * recompute / (peak.flops * assumed_mfu * devices)
    return Estimate(n["n_params"], n["n_params_nonembed"], steps, tokens, fpt, flops, devices, fsdp, micro_rows,
                    checkpointing, w, g, adam, act, w + g + adam + act, None if peak is None else peak.flops,
                    "none (give --peak-flops)" if peak is None else peak.source, assumed_mfu, seconds,
                    None if seconds is None else seconds * devices / 3600)


def dry_run(cfg) -> dict:
    """What `mmlm train` would do with TrainConfig `cfg`: the resolved settings and their Estimate, allocating nothing
    (no model, no data read beyond vocab.json). On a machine without the requested CUDA device the
    micro-batch is --micro-batch (else one row) and the wall time needs --peak-flops."""
    import torch

    from .model import DEFAULT_VOCAB_SIZE
    from .device import resolve_device
    from .train.resolved import model_config_of, resolve

    vocab = DEFAULT_VOCAB_SIZE
    if cfg.data:
        from .data import open_root

        vocab = open_root(cfg.data)[1].size
    model = model_config_of(cfg, vocab)
    world = max(1, cfg.nproc)
    want_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    here = want_cuda and torch.cuda.is_available()
    device = resolve_device(cfg.device) if (here or not want_cuda) else torch.device("cpu")
    res = resolve(cfg, model.seq_len, vocab, world, device)
    micro = res.micro_rows if (here or not want_cuda) else min(cfg.micro_batch or 1, res.batch_rows // world)
    if cfg.peak_flops is not None or here or not want_cuda:
        peak = resolve_peak(device, cfg.peak_flops)
    else:
        peak = None
    est = estimate(model, res.steps, res.batch_tokens, micro, devices=world, fsdp=res.fsdp or bool(cfg.fsdp),
                   fp32=not want_cuda, peak=peak, checkpointing=cfg.activation_checkpointing,
                   assumed_mfu=assumed_mfu("cuda" if want_cuda else "cpu"))
    return {"size": cfg.size, "device": "cuda" if want_cuda else "cpu", "vocab_size": vocab,
            "seq_len": model.seq_len, "batch_tokens": res.batch_tokens, "lr": res.lr, "warmup": res.warmup,
            "schedule": cfg.schedule, **est.to_json()}
