"""Sampling speed of `mmlm generate`'s decoding loop (`mmlm.generate.sample_tokens`), in new tokens per
second, greedy, batch 1, 1024 new tokens after a 16-token prompt, measured side by side in one run:

1. KV-cached decoding against recomputing the whole context at every step (the same loop with
   `use_cache=False`; both must decode the same tokens); target >= 5x.
2. Against Hugging Face transformers' `generate` loop on a GPT2LMHeadModel of the same dimensions
   holding the very same weights (checked: both give the same logits), greedy,
   `generate(max_new_tokens=1024, do_sample=False, use_cache=True)`; target >= 1.0x.
   transformers is a bench-only dependency (`pip install transformers`); without it this entry is skipped.

Both loops decode exactly 1024 tokens: ours runs its constrained decoding with an image segment of
1023 codes (the end sentinel forced after them), HF runs without an end-of-sequence token.
The models are small (vocabulary 4096, 2048 positions, exact GELU, tied embeddings; 1 layer x d_model 96
for the recompute comparison, whose baseline is slow, 2 layers x d_model 64 against transformers).
One torch thread on CPU.

    python bench/generate.py [--quick]
"""
from __future__ import annotations

import time

import numpy as np
import torch

from mmlm.generate import Grammar, SampleSettings, sample_tokens
from mmlm.model import GPT, GPTConfig
from mmlm.vocab import Vocab

NEW_TOKENS = 1024
PROMPT = 16
VOCAB = 4096
SEQ_LEN = 2048
# Recomputing 1024 steps is the costly part of this benchmark: its model is kept small.
RECOMPUTE_DIMS = dict(n_layer=1, n_head=2, d_model=96)
HF_DIMS = dict(n_layer=2, n_head=2, d_model=64)


def _vocab() -> Vocab:
    v = Vocab()
    v.add_space("image", VOCAB - v.size, {"kind": "image"})
    return v


def _ours(model, vocab: Vocab, use_cache: bool):
    grammar = Grammar(vocab, ["image"], "image", NEW_TOKENS - 1, torch.device("cpu"))
    context = [vocab.eos] + list(range(vocab.offset("image"), vocab.offset("image") + PROMPT - 2)) + [vocab.begin("image")]
    settings = SampleSettings(temperature=0, use_cache=use_cache)

    def go():
        rows = sample_tokens(model, grammar, context, settings, NEW_TOKENS)
        assert len(rows[0]) == NEW_TOKENS
        return rows[0]
    return go


def _model(n_layer: int, n_head: int, d_model: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=n_layer, n_head=n_head, d_model=d_model, vocab_size=VOCAB, seq_len=SEQ_LEN)).eval()


def _hf_twin(model: GPT):
    """A transformers GPT2LMHeadModel with the dimensions and weights of `model`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.cfg
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=c.vocab_size, n_positions=c.seq_len, n_embd=c.d_model, n_layer=c.n_layer,
                                    n_head=c.n_head, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                                    attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True)).eval()
    ours = model.state_dict()
    theirs = {"transformer.wte.weight": ours["wte.weight"], "transformer.wpe.weight": ours["wpe.weight"],
              "transformer.ln_f.weight": ours["ln_f.weight"], "transformer.ln_f.bias": ours["ln_f.bias"]}
    for i in range(c.n_layer):
        for name in ("ln_1", "ln_2"):
            for p in ("weight", "bias"):
                theirs[f"transformer.h.{i}.{name}.{p}"] = ours[f"blocks.{i}.{name}.{p}"]
        for ours_name, hf_name in (("attn.c_attn", "attn.c_attn"), ("attn.c_proj", "attn.c_proj"),
                                   ("mlp.c_fc", "mlp.c_fc"), ("mlp.c_proj", "mlp.c_proj")):
            theirs[f"transformer.h.{i}.{hf_name}.weight"] = ours[f"blocks.{i}.{ours_name}.weight"].t()  # Conv1D: [in, out]
            theirs[f"transformer.h.{i}.{hf_name}.bias"] = ours[f"blocks.{i}.{ours_name}.bias"]
    theirs["lm_head.weight"] = ours["wte.weight"]
    missing, unexpected = hf.load_state_dict(theirs, strict=False)
    missing = [k for k in missing if not k.endswith(".attn.bias") and not k.endswith("masked_bias")]
    assert not missing and not unexpected, (missing, unexpected)
    ids = torch.randint(0, VOCAB, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids)[0], atol=1e-4, rtol=1e-4)
    prompt = ids[:, :PROMPT]
    mask = torch.ones_like(prompt)

    def go():
        with torch.no_grad():
            out = hf.generate(prompt, attention_mask=mask, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                              do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
        assert out.shape[1] == PROMPT + NEW_TOKENS
    return go


def _time(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(name, note, ours, baseline, reps, target, same=False):
    """Interleaved repetitions after a warm-up of ours; median seconds -> new tokens per second.
    With `same`, both must return the same tokens."""
    ours()
    a, b = [], []
    for _ in range(reps):
        (ta, x), (tb, y) = _time(ours), _time(baseline)
        assert not same or x == y, f"{name}: ours and the baseline decoded different tokens"
        a.append(ta)
        b.append(tb)
    value, base = NEW_TOKENS / np.median(a), NEW_TOKENS / np.median(b)
    return {"name": name, "value": value, "baseline": base, "ratio": value / base, "target": target,
            "unit": "tokens/s", "meets": bool(value / base >= target), "note": note}


def run(quick: bool = False) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(threads)


def _run(quick: bool) -> list[dict]:
    vocab = _vocab()
    reps = 1 if quick else 3
    results = []
    for name, dims, target in (("generate_kv_cache_vs_recompute", RECOMPUTE_DIMS, 5.0), ("generate_vs_hf_gpt2", HF_DIMS, 1.0)):
        model = _model(**dims)
        note = (f"{NEW_TOKENS} new tokens, greedy, batch 1, {dims['n_layer']} layer(s) x {dims['n_head']} heads x "
                f"d_model {dims['d_model']}, vocab {VOCAB}, 1 CPU thread; baseline: ")
        if name == "generate_kv_cache_vs_recompute":
            results.append(measure(name, note + "the same loop recomputing the whole context each step",
                                   _ours(model, vocab, True), _ours(model, vocab, False), reps, target, same=True))
            continue
        try:
            import transformers
        except ImportError:
            results.append({"name": name, "value": None, "baseline": None, "ratio": None, "target": target,
                            "unit": "tokens/s", "meets": False, "skipped": True,
                            "note": "transformers is not installed (pip install transformers)"})
            continue
        hf = _hf_twin(model)
        hf()  # warm-up
        results.append(measure(name, note + f"transformers {transformers.__version__} GPT2LMHeadModel.generate, same weights",
                               _ours(model, vocab, True), hf, reps, target))
    return results


if __name__ == "__main__":
    from run_all import main_for

    main_for(run)
