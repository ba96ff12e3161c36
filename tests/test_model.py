import pytest
import torch

from mmlm.errors import MmlmError
from mmlm.model import GPT, SIZES, GPTConfig, KVCache, count_params, model_config, resolve_attention, size_table


def tiny(vocab=50, seq_len=16, **kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, d_model=16, vocab_size=vocab, seq_len=seq_len, **kw)).eval()


@pytest.mark.parametrize("bias", [True, False])
def test_count_params_is_exact(bias):
    cfg = GPTConfig(n_layer=3, n_head=2, d_model=24, vocab_size=77, seq_len=20, bias=bias)
    model = GPT(cfg)
    n = sum(p.numel() for p in model.parameters())
    embed = model.wte.weight.numel() + model.wpe.weight.numel()
    assert count_params(cfg) == {"n_params": n, "n_params_nonembed": n - embed}


def test_sizes_span_cpu_presets_and_paper_grid():
    table = size_table(1000)
    for name in ("pico", "nano", "micro", "mini", "small", "8M", "125M", "350M", "760M", "1.3B", "2.7B", "6.7B", "13B", "30B"):
        assert name in table
    assert 40_000 < table["pico"]["n_params_nonembed"] < 80_000
    assert 1_000_000 < table["small"]["n_params_nonembed"] < 10_000_000
    # the paper grid's names match their non-embedding counts within GPT-3/OPT rounding
    assert 80e6 < table["125M"]["n_params_nonembed"] < 130e6
    assert 12e9 < table["13B"]["n_params_nonembed"] < 13.5e9
    assert 28e9 < table["30B"]["n_params_nonembed"] < 31e9
    for name, cfg in SIZES.items():
        assert cfg.d_model % cfg.n_head == 0, name


def test_model_config_rejects_unknown_size():
    with pytest.raises(MmlmError, match="--size 'huge'"):
        model_config("huge", 100)
    assert model_config("pico", 100, seq_len=64).seq_len == 64


def test_forward_shapes_and_causality():
    model = tiny()
    idx = torch.randint(0, 50, (3, 10))
    logits, cache = model(idx)
    assert logits.shape == (3, 10, 50) and cache is None
    # changing a later token never changes earlier logits
    idx2 = idx.clone()
    idx2[:, 7] = (idx2[:, 7] + 1) % 50
    logits2, _ = model(idx2)
    torch.testing.assert_close(logits[:, :7], logits2[:, :7])
    assert not torch.allclose(logits[:, 7:], logits2[:, 7:])


def test_kv_cache_incremental_equals_full_recompute():
    model = tiny()
    idx = torch.randint(0, 50, (2, 14))
    full, _ = model(idx)
    cache = model.new_kv_cache(batch_size=2)
    assert isinstance(cache, KVCache) and cache.pos == 0
    # a prompt chunk, then a multi-token chunk (needs the offset causal mask), then single tokens
    pieces = [idx[:, :5], idx[:, 5:9]] + [idx[:, i : i + 1] for i in range(9, 14)]
    outs = []
    for p in pieces:
        logits, cache = model(p, kv_cache=cache)
        outs.append(logits)
    assert cache.pos == 14
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-5, atol=1e-5)
    # last_only gives the last position; crop + re-decode reproduces it
    cache.crop(13)
    last, _ = model(idx[:, 13:14], kv_cache=cache, last_only=True)
    torch.testing.assert_close(last[:, 0], full[:, 13], rtol=1e-5, atol=1e-5)


def test_kv_cache_overflow_is_an_error():
    model = tiny(seq_len=8)
    cache = model.new_kv_cache(1, max_len=4)
    model(torch.zeros(1, 4, dtype=torch.long), kv_cache=cache)
    with pytest.raises(MmlmError, match="exceed"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)
    with pytest.raises(MmlmError, match="exceed"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_attention_backend_choice_on_cpu():
    assert resolve_attention("auto", "cpu") == "sdpa"
    assert resolve_attention("sdpa", "cpu") == "sdpa"
    with pytest.raises(MmlmError, match="xformers.*CUDA"):
        resolve_attention("xformers", "cpu")
    with pytest.raises(MmlmError, match="unknown backend"):
        resolve_attention("flash", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_xformers_matches_sdpa_on_cuda():
    pytest.importorskip("xformers.ops")
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=4, d_model=128, vocab_size=300, seq_len=64)
    model = GPT(cfg).cuda().eval()
    idx = torch.randint(0, 300, (4, 64), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        model.set_attention("sdpa")
        ref, _ = model(idx)
        model.set_attention(resolve_attention("xformers", "cuda"))
        out, _ = model(idx)
        # incremental decoding through xformers with a cache matches too
        cache = model.new_kv_cache(4, dtype=torch.bfloat16)
        a, cache = model(idx[:, :40], kv_cache=cache)
        b, cache = model(idx[:, 40:50], kv_cache=cache)
        c, cache = model(idx[:, 50:51], kv_cache=cache)
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(torch.cat([a, b, c], 1).float(), ref[:, :51].float(), rtol=2e-2, atol=2e-2)
    # gradients flow through the xformers path
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, _ = model(idx)
    logits.float().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
