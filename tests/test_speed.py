"""mmlm.speed: model FLOPs per token against torch's own FLOP counter, the peak table, the measured
peak's cache, MFU that cannot pass 100%, the speed fields of a run, and `--dry-run`."""
import json
import subprocess
import sys

import pytest
import torch

from mmlm import speed
from mmlm.errors import MmlmError
from mmlm.model import GPT, count_params, model_config
from mmlm.train import TrainConfig, train
from test_train_data import make_root


def test_flops_per_token_matches_torch_flop_counter():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    for size, V, T in (("pico", 300, 32), ("nano", 512, 64)):
        cfg = model_config(size, V, T)
        model = GPT(cfg)
        x = torch.randint(0, V, (2, T))
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:  # math: attention as bmm, counted
            model(x)[0].sum().backward()
        counted = counter.get_total_flops() / x.numel()
        # the counter skips biases and LayerNorms, which 6N includes: they are the whole difference
        n = count_params(cfg)["n_params_nonembed"]
        matrices = cfg.n_layer * 12 * cfg.d_model**2
        assert speed.flops_per_token(cfg) - counted == pytest.approx(6 * (n - matrices), rel=1e-9)


def test_peak_table_is_dense_bf16_and_names_match_the_right_device():
    assert speed.table_peak("NVIDIA H100 80GB HBM3").flops == 989e12  # dense, not the 1979 "with sparsity"
    assert speed.table_peak("NVIDIA H200").flops == 989e12
    assert speed.table_peak("NVIDIA H100 PCIe").flops == 756e12
    assert speed.table_peak("NVIDIA A100-SXM4-80GB").flops == 312e12
    assert "GH200" in speed.table_peak("NVIDIA GH200 480GB").source  # contains "H200", must not match it
    assert speed.table_peak("NVIDIA A10G").flops == 70e12
    assert speed.table_peak("Tesla T4") is None
    for key, flops, source in speed.DENSE_BF16_PEAKS:
        assert "dense BF16" in source and f"{flops / 1e12:g}" in source.replace("2.25 PFLOP/s", "2250")


def test_measured_peak_is_cached_once_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLM_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def fake(device, dtype):
        calls.append(dtype)
        return 123e9

    a = speed.resolve_peak(torch.device("cpu"), measure=fake)
    b = speed.resolve_peak(torch.device("cpu"), measure=fake)
    assert a.flops == b.flops == 123e9 and calls == [torch.float32]
    assert "measured float32 matmul" in a.source and str(tmp_path / "cache") in a.source
    assert json.loads((tmp_path / "cache" / "peak_flops.json").read_text())
    assert speed.resolve_peak(torch.device("cpu"), override=5e12, measure=fake).source == "--peak-flops"
    with pytest.raises(MmlmError, match="--peak-flops -1"):
        speed.resolve_peak(torch.device("cpu"), override=-1)


def test_real_matmul_measurement_is_plausible():
    flops = speed.measure_matmul_peak(torch.device("cpu"), torch.float32, seconds=0.05)
    assert 1e8 < flops < 1e14  # from a slow shared core to a big server, fp32


def test_mfu_can_never_exceed_one():
    meter = speed.SpeedMeter(flops_per_token=1000, peak=speed.Peak(1e6, "test"))
    ok = meter.step(tokens=100, seconds=1.0)  # 1e5 FLOP/s of 1e6
    assert ok["speed/mfu"] == pytest.approx(0.1) and not meter.peak_exceeded
    bad = meter.step(tokens=10_000, seconds=1.0)  # 1e7 FLOP/s: the peak is wrong
    assert bad["speed/mfu"] == 1.0 and meter.peak_exceeded
    s = meter.summary(wall_seconds=3.0)
    assert s["mfu"] <= 1.0 and s["peak_exceeded"] and s["tokens_per_second"] == pytest.approx(10_100 / 2)
    four = speed.for_devices(speed.Peak(1e6, "x"), 4)  # K processes see the global rate: K x the peak
    assert four.flops == 4e6 and "x4 processes" in four.source and speed.for_devices(four, 1) is four


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("data")
    make_root(r)
    return r


def _cfg(root, out, **kw):
    base = dict(data=str(root), out=str(out), mix="text=1,image=1", size="pico", seq_len=32, batch_tokens=512,
                tokens=512 * 6, eval_tokens=256, threads=1)
    return TrainConfig(**{**base, **kw})


def test_run_logs_speed_every_step_and_in_the_summary(root, tmp_path):
    events = []
    s = train(_cfg(root, tmp_path / "r", peak_flops=1e3), on_log=events.append)  # a peak far too low
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    for line in lines:
        assert line["speed/tokens_per_s"] > 0 and 0 < line["speed/mfu"] <= 1.0
        assert line["speed/model_flops_per_s"] == pytest.approx(line["speed/tokens_per_s"] * s["flops_per_token"])
    assert s["mfu"] == 1.0 and s["peak_exceeded"] and s["peak_source"] == "--peak-flops"
    assert 0 < s["train_seconds"] <= s["wall_seconds"]
    assert s["tokens_per_second"] == pytest.approx(s["tokens"] / s["train_seconds"])
    start, = [e for e in events if e["event"] == "start"]
    assert start["peak_flops"] == 1e3
    real = train(_cfg(root, tmp_path / "q"))  # the measured peak: a sane MFU
    assert 0 < real["mfu"] < 1 and "measured float32 matmul" in real["peak_source"]


def test_dry_run_allocates_nothing_and_shards_under_fsdp(tmp_path):
    out = tmp_path / "never"
    r = subprocess.run([sys.executable, "-m", "mmlm.cli.main", "train", "--size", "350M", "--dry-run", "--device", "cuda",
                        "--nproc", "4", "--fsdp", "--micro-batch", "2", "--peak-flops", "989e12", "--tokens", "1e9",
                        "--out", out, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    four = json.loads(r.stdout)
    assert not out.exists()
    n = count_params(model_config("350M", four["vocab_size"]))["n_params"]
    assert four["n_params"] == n and four["bytes_weights"] == 4 * n / 4 and four["bytes_adam"] == 8 * n / 4
    assert four["steps"] == -(-int(1e9) // 2**20) and four["flops"] == four["flops_per_token"] * four["tokens"]
    assert four["seconds"] == pytest.approx(four["flops"] / (989e12 * speed.ASSUMED_MFU * 4))
    one = speed.estimate(model_config("350M", four["vocab_size"]), four["steps"], 2**20, 2, peak=speed.Peak(989e12, "x"))
    assert one.bytes_weights == 4 * n and one.bytes_activations == four["bytes_activations"]
    full = speed.estimate(model_config("350M", 4096), 10, 2**20, 2, checkpointing="full")
    sel = speed.estimate(model_config("350M", 4096), 10, 2**20, 2, checkpointing="selective")
    assert full.bytes_activations < sel.bytes_activations < one.bytes_activations
    with pytest.raises(MmlmError, match="--fsdp: shards the model over several processes"):
        speed.dry_run(TrainConfig(size="pico", fsdp=True))
