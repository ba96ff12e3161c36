"""`mmlm generate`: constrained, KV-cached, guided sampling from a run folder, and its files."""
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmlm.errors import MmlmError
from mmlm.generate import (SampleSettings, build_context, generate, load_run, pick, read_prompts,
                           split_segments, write_samples)
from mmlm.model import GPT, GPTConfig
from mmlm.vocab import Vocab

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world, hello mixed modalities"]
SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "N#C", "CC(C)Cl"]
IMAGE_SIZE, PATCH = 8, 2  # 16 codes per image
SEQ_LEN = 96


def wave(seconds=0.4, freq=440.0, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_run(path: Path, spaces=("text", "image", "speech", "molecule"), seq_len=SEQ_LEN, seed=0) -> Path:
    """A run folder as `mmlm train` leaves it (config.json, vocab.json, tokenizers/, model.safetensors),
    holding an untrained model: sampling, constraints and files do not need a trained one."""
    from safetensors.torch import save_file

    from mmlm.tokenizers.image import ImageTokenizer
    from mmlm.tokenizers.molecule import SmilesTokenizer
    from mmlm.tokenizers.speech import SpeechTokenizer
    from mmlm.tokenizers.text import BPETokenizer

    build = {
        "text": lambda: BPETokenizer.train(TEXTS * 3, vocab_size=300),
        "image": lambda: ImageTokenizer.random(size=IMAGE_SIZE, patch=PATCH, codebook=16, seed=0),
        "speech": lambda: SpeechTokenizer.random([wave(), wave(freq=220.0)], units=12, seed=0, gl_iters=4),
        "molecule": lambda: SmilesTokenizer.train(SMILES),
    }
    (path / "tokenizers").mkdir(parents=True)
    vocab = Vocab()
    for space in spaces:
        tok = build[space]()
        tok.save(path / f"tokenizers/{space}.json")
        vocab.add_space(space, tok.n_tokens, {"file": f"tokenizers/{space}.json", **tok.settings})
    vocab.save(path / "vocab.json")
    cfg = GPTConfig(n_layer=2, n_head=2, d_model=32, vocab_size=vocab.size, seq_len=seq_len)
    torch.manual_seed(seed)
    model = GPT(cfg)
    save_file(model.state_dict(), str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"format": "mmlm-run/1", "model": cfg.to_json(), "vocab": vocab.to_json()}))
    return path


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("gen") / "run")


@pytest.fixture(scope="session")
def text_run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("gen") / "text-run", spaces=("text",))


@pytest.fixture(scope="session")
def run(run_dir):
    return load_run(run_dir, "cpu")


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mmlm.cli.main", "generate", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(r, *needles):
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def check_segment(vocab: Vocab, modality: str, content: list[int]):
    first, last = vocab.range_of(modality)
    assert all(first <= t <= last for t in content), (modality, content)


# ---- constraints ---------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["text", "code", "speech", "molecule", "image"])
def test_constrained_samples_stay_in_range(run, target):
    vocab = run.vocab
    samples = generate(run, [("text", "the cat")], target,
                       SampleSettings(num_samples=4, max_tokens=24 if target != "image" else None, temperature=2.0, seed=1))
    for s in samples:
        tokens = s["tokens"]
        closed = tokens[-1] == vocab.end(target)
        content = tokens[:-1] if closed else tokens
        check_segment(vocab, target, content)
        assert closed or len(tokens) == 24  # a segment ends at its sentinel or at max_tokens
        assert [(g["modality"], g["start"], g["end"]) for g in s["segments"]] == [(target, 0, len(content))]
        if target == "image":
            assert closed and len(content) == run.tokenizer("image").codes_per_image


def test_free_mixed_modal_samples_follow_the_grammar(run):
    vocab, n_codes = run.vocab, run.tokenizer("image").codes_per_image
    samples = generate(run, [], None, SampleSettings(num_samples=6, max_tokens=60, temperature=3.0, seed=3))
    begins = {vocab.begin(m): m for m in run.modalities}
    seen = set()
    for s in samples:
        tokens, current = s["tokens"], None
        for i, t in enumerate(tokens):
            if current is None:
                assert t in begins or t == vocab.eos, (i, t)
                if t == vocab.eos:
                    assert i == len(tokens) - 1
                else:
                    current, start = begins[t], i + 1
            elif t == vocab.end(current):
                seen.add(current)
                if current == "image":
                    assert i - start == n_codes
                current = None
            else:
                check_segment(vocab, current, [t])
        for g in s["segments"]:
            check_segment(vocab, g["modality"], tokens[g["start"]:g["end"]])
    assert len(seen) >= 2  # a flat distribution opens several modalities


def _favour(run, token: int):
    """Make the model rank `token` first at every position (ln_f outputs a constant vector e, and
    the tied output row of `token` is aligned with e)."""
    with torch.no_grad():
        e = torch.randn(run.model.cfg.d_model, generator=torch.Generator().manual_seed(0))
        run.model.ln_f.weight.zero_()
        run.model.ln_f.bias.copy_(e)
        run.model.wte.weight[token] = 50 * e / e.norm() ** 2
    return run


def test_image_end_is_forced_after_one_grid_and_never_earlier(run_dir):
    run = load_run(run_dir, "cpu")
    vocab, n_codes = run.vocab, run.tokenizer("image").codes_per_image
    _favour(run, vocab.end("image"))
    logits, _ = run.model(torch.tensor([[vocab.eos, vocab.begin("image")]]))
    assert logits[0, -1].argmax() == vocab.end("image")  # unconstrained, the model would close at once
    s = generate(run, [], "image", SampleSettings(num_samples=2, temperature=0, seed=0))
    for sample in s:
        assert len(sample["tokens"]) == n_codes + 1 and sample["tokens"][-1] == vocab.end("image")
        check_segment(vocab, "image", sample["tokens"][:-1])


def test_no_image_is_opened_that_cannot_be_finished(run_dir):
    run = load_run(run_dir, "cpu")
    vocab, n_codes = run.vocab, run.tokenizer("image").codes_per_image
    _favour(run, vocab.begin("image"))
    whole = generate(run, [], None, SampleSettings(temperature=0, max_tokens=n_codes + 2, seed=0))[0]["tokens"]
    assert whole[0] == vocab.begin("image") and whole[-1] == vocab.end("image")
    short = generate(run, [], None, SampleSettings(temperature=0, max_tokens=n_codes + 1, seed=0))[0]["tokens"]
    assert vocab.begin("image") not in short


# ---- sampling ------------------------------------------------------------------------------------

def test_same_seed_same_tokens(run):
    def settings(seed):
        return SampleSettings(num_samples=3, max_tokens=20, temperature=1.5, top_k=50, top_p=0.95, seed=seed)
    a = generate(run, [("molecule", "CCO")], "text", settings(7))
    b = generate(run, [("molecule", "CCO")], "text", settings(7))
    c = generate(run, [("molecule", "CCO")], "text", settings(8))
    def tokens(samples):
        return [s["tokens"] for s in samples]
    assert tokens(a) == tokens(b)
    assert tokens(a) != tokens(c)
    assert a[0]["settings"]["seed"] == 7


@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_cached_and_uncached_decoding_agree_at_temperature_0(run, cfg_scale):
    out = {}
    for use_cache in (True, False):
        settings = SampleSettings(num_samples=2, max_tokens=40, temperature=0, cfg_scale=cfg_scale, use_cache=use_cache)
        out[use_cache] = [s["tokens"] for s in generate(run, [("text", "hello world")], "speech", settings)]
    assert out[True] == out[False]
    assert len(out[True][0]) > 1


def test_cfg_mixes_conditioned_and_unconditioned_logits(run):
    def greedy(prompts, cfg_scale=1.0):
        settings = SampleSettings(max_tokens=30, temperature=0, cfg_scale=cfg_scale)
        return generate(run, prompts, "text", settings)[0]["tokens"]

    prompt = [("text", "hello world, hello")]
    # scale 0 keeps only the unconditioned context: the same as no prompt at all
    assert greedy(prompt, cfg_scale=0.0) == greedy([])
    # scale 1 is the conditioned model alone, which the prompt changes
    assert greedy(prompt, cfg_scale=1.0) != greedy([])
    guided = generate(run, prompt, "text", SampleSettings(num_samples=2, max_tokens=30, cfg_scale=3.0, seed=0))
    assert all(s["settings"]["cfg_scale"] == 3.0 for s in guided)


def test_pick_top_k_and_top_p():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, float("-inf")]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(pick(logits, 1.0, 2, 1.0, g).tolist()) == {1, 3}
    assert set(pick(logits, 1.0, 0, 1.0, g).tolist()) == {0, 1, 2, 3}
    p = torch.tensor([0.0, 3.0, 1.0, 2.0]).softmax(-1)  # 0.032, 0.644, 0.087, 0.237
    assert set(pick(logits, 1.0, 0, 0.7, g).tolist()) == {1, 3}  # 0.644 alone is short of 0.7
    assert p[1] < 0.7 < p[1] + p[3]
    assert set(pick(logits, 0.0, 0, 1.0, g).tolist()) == {1}


def test_split_segments_positions():
    v = Vocab()
    v.add_space("text", 10, {})
    a, b = v.offset("text"), v.offset("text") + 1
    toks = [v.begin("code"), a, b, v.end("code"), v.begin("text"), a, v.eos]
    assert split_segments(v, toks, None) == [{"modality": "code", "start": 1, "end": 3},
                                              {"modality": "text", "start": 5, "end": 6}]
    assert split_segments(v, [a, b], "text") == [{"modality": "text", "start": 0, "end": 2}]


def test_prompts_of_every_modality_are_wrapped_in_sentinels(run, tmp_path):
    from PIL import Image
    import soundfile as sf

    Image.fromarray(np.full((20, 12, 3), 200, np.uint8)).save(tmp_path / "p.png")
    sf.write(tmp_path / "p.wav", wave(0.2), 16000)
    prompts = read_prompts(text="hello", image=tmp_path / "p.png", audio=tmp_path / "p.wav", smiles="CCO")
    context, uncond = build_context(run, prompts, "text")
    v = run.vocab
    assert uncond == [v.eos, v.begin("text")]
    order = [t for t in context if t in {v.begin(m) for m in run.modalities}]
    assert order == [v.begin(m) for m in ("image", "speech", "molecule", "text", "text")]
    n_codes = run.tokenizer("image").codes_per_image
    i = context.index(v.begin("image"))
    assert context[i + n_codes + 1] == v.end("image")
    check_segment(v, "image", context[i + 1:i + n_codes + 1])
    assert context[0] == v.eos and context[-1] == v.begin("text")


# ---- files ---------------------------------------------------------------------------------------

def test_write_samples_refuses_a_folder_it_did_not_write(run, tmp_path):
    samples = generate(run, [], "molecule", SampleSettings(num_samples=2, max_tokens=10, seed=0))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(MmlmError, match="not empty"):
        write_samples(samples, tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    files = write_samples(samples, tmp_path / "out")
    assert sorted(f.name for f in files) == ["sample-1.smi", "sample-2.smi", "samples.jsonl"]
    lines = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [x["tokens"] for x in lines] == [s["tokens"] for s in samples]
    seg = lines[0]["segments"][0]
    assert seg["file"] == "sample-1.smi" and isinstance(seg["valid"], bool)
    smiles = (tmp_path / "out" / "sample-1.smi").read_text().strip()
    assert smiles == run.tokenizer("molecule").decode(np.array(samples[0]["tokens"][seg["start"]:seg["end"]]) - run.vocab.offset("molecule"))
    write_samples(samples[:1], tmp_path / "out")  # an earlier output is replaced whole
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["sample-1.smi", "samples.jsonl"]


# ---- bad input -----------------------------------------------------------------------------------

def test_bad_runs_and_prompts_are_one_line_errors(run, run_dir, text_run_dir, tmp_path):
    with pytest.raises(MmlmError, match="no such run folder"):
        load_run(tmp_path / "missing", "cpu")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(MmlmError, match="vocab.json: missing"):
        load_run(partial, "cpu")
    (partial / "vocab.json").write_text((run_dir / "vocab.json").read_text())
    with pytest.raises(MmlmError, match="model.safetensors: missing"):
        load_run(partial, "cpu")
    (partial / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(MmlmError, match="not a safetensors file .no safetensors header"):
        load_run(partial, "cpu")
    torch.save({"w": torch.zeros(2)}, partial / "model.safetensors")
    with pytest.raises(MmlmError, match="not a safetensors file .it is a zip archive, as torch.save writes"):
        load_run(partial, "cpu")
    text_run = load_run(text_run_dir, "cpu")
    with pytest.raises(MmlmError, match="not trained with image tokens"):
        generate(text_run, [], "image", SampleSettings())
    with pytest.raises(MmlmError, match="--prompt-smiles: run .* not trained with molecule"):
        generate(text_run, [("molecule", "CCO")], "text", SampleSettings())
    with pytest.raises(MmlmError, match="--modality 'video': unknown modality"):
        generate(run, [], "video", SampleSettings())
    with pytest.raises(MmlmError, match="--prompt: empty prompt"):
        generate(run, [("text", "  ")], "text", SampleSettings())
    with pytest.raises(MmlmError, match="--prompt-smiles: the prompt gives no molecule tokens"):
        generate(run, [("molecule", "!!!")], "text", SampleSettings())
    with pytest.raises(MmlmError, match="--cfg-scale: .* give a prompt"):
        generate(run, [], "text", SampleSettings(cfg_scale=3.0))
    with pytest.raises(MmlmError, match="--max-tokens 500: .* at most 95 new tokens fit"):
        generate(run, [], "text", SampleSettings(max_tokens=500))
    with pytest.raises(MmlmError, match="--max-tokens 5: an image is 16 codes"):
        generate(run, [], "image", SampleSettings(max_tokens=5))
    with pytest.raises(MmlmError, match="--top-p 0"):
        generate(run, [], "text", SampleSettings(top_p=0))
    with pytest.raises(MmlmError, match="nope.png: no such file"):
        read_prompts(image=tmp_path / "nope.png")


class _Payload:
    """Unpickling this creates a file: proof that a loader executed the pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_cli_refuses_pickled_weights_without_running_them(run_dir, tmp_path):
    bad = tmp_path / "pickled"
    bad.mkdir()
    for name in ("config.json", "vocab.json"):
        (bad / name).write_bytes((run_dir / name).read_bytes())
    shutil.copytree(run_dir / "tokenizers", bad / "tokenizers")
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe))).close()
    assert probe.exists()  # the payload works: unpickling it creates its file
    marker = tmp_path / "payload-ran"
    (bad / "model.safetensors").write_bytes(pickle.dumps({"wte.weight": _Payload(marker)}))
    r = cli(bad, "--out", tmp_path / "out", "--modality", "text", "--device", "cpu")
    assert_one_line_error(r, "model.safetensors", "not a safetensors file", "pickle")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_prompt_modality_the_run_lacks(text_run_dir, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "p.wav", wave(0.2), 16000)
    r = cli(text_run_dir, "--out", tmp_path / "out", "--prompt-audio", tmp_path / "p.wav", "--modality", "text")
    assert_one_line_error(r, "--prompt-audio", "not trained with speech tokens")
    assert not (tmp_path / "out").exists()


def test_cli_generates_images_from_a_speech_prompt(run, run_dir, tmp_path):
    import soundfile as sf
    from PIL import Image

    sf.write(tmp_path / "p.wav", wave(0.3), 16000)
    out = tmp_path / "samples"
    r = cli(run_dir, "--out", out, "--prompt-audio", tmp_path / "p.wav", "--modality", "image", "--num-samples", 3,
            "--seed", 5, "--top-k", 8, "--cfg-scale", 2.0, "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    assert [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()] == records
    assert sorted(p.name for p in out.iterdir()) == ["sample-1.png", "sample-2.png", "sample-3.png", "samples.jsonl"]
    n_codes = run.tokenizer("image").codes_per_image
    for k, rec in enumerate(records, 1):
        assert rec["settings"]["seed"] == 5 and rec["settings"]["cfg_scale"] == 2.0
        assert len(rec["tokens"]) == n_codes + 1 and rec["tokens"][-1] == run.vocab.end("image")
        assert rec["segments"] == [{"modality": "image", "start": 0, "end": n_codes, "shape": [IMAGE_SIZE, IMAGE_SIZE, 3],
                                    "file": f"sample-{k}.png"}]
        with Image.open(out / f"sample-{k}.png") as im:
            assert im.format == "PNG" and im.size == (IMAGE_SIZE, IMAGE_SIZE)
            pixels = np.asarray(im.convert("RGB"))
        codes = np.array(rec["tokens"][:-1]) - run.vocab.offset("image")
        np.testing.assert_array_equal(pixels, run.tokenizer("image").decode(codes))


# ---- a real training run -------------------------------------------------------------------------

@pytest.mark.slow
def test_generate_from_a_trained_run(tmp_path):
    """Train a pico model for a few steps with `mmlm.train`, then sample through the CLI."""
    from mmlm.shards import DatasetWriter
    from mmlm.train import TrainConfig, train

    src = make_run(tmp_path / "src", spaces=("text", "image"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "vocab.json").write_bytes((src / "vocab.json").read_bytes())
    shutil.copytree(src / "tokenizers", data / "tokenizers")
    run = load_run(src, "cpu")
    v, text = run.vocab, run.tokenizer("text")
    rng = np.random.default_rng(0)
    for name, make in (("text", lambda i: [v.begin("text"), *(text.encode(TEXTS[i % 3]) + v.offset("text")), v.end("text")]),
                       ("image", lambda i: [v.begin("image"), *(rng.integers(0, 16, 16) + v.offset("image")), v.end("image")])):
        with DatasetWriter(data / name) as w:
            for i in range(40):
                w.add([*make(i), v.eos])
            w.meta.update(kind=name)
    out = tmp_path / "run"
    train(TrainConfig(data=str(data), out=str(out), size="pico", mix="text=1,image=1", tokens=4096, seq_len=64,
                      batch_tokens=1024, device="cpu", eval_tokens=256))
    r = cli(out, "--out", tmp_path / "samples", "--prompt", "the cat", "--modality", "image", "--num-samples", 2, "--seed", 0)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["sample-1.png", "sample-2.png", "samples.jsonl"]
