"""Sampling from a trained run: prompts of any modality in, decoded samples of any modality out.

    run = load_run("runs/a", device="auto")
    prompts = read_prompts(text="a red square", image=None, audio=None, smiles=None)
    samples = generate(run, prompts, target="image", settings=SampleSettings(num_samples=4, seed=0))
    write_samples(samples, "out/")      # sample-1.png ... and samples.jsonl (mmlm.media)

Context. A sample's context is `<eos>` (the token that ends the previous document in training rows,
so what follows reads as a fresh document), then each prompt segment inside its sentinels (from the
command line: image, then speech, molecule, text), then `<target>` when a target modality is asked for.

Constrained decoding, a small state machine run on tensors for the whole batch (`Grammar`):
inside a segment only that modality's ids and its end sentinel can be drawn; an image segment is
exactly one code grid long (its end sentinel is forced after the last code and impossible before);
other segments end at their sentinel or at `max_tokens`. With a target the sample is that one
segment; without one ("the model chooses") the model may open any modality the run has, close it,
open another, and end the sample with `<eos>`.

Classifier-free guidance (CM3Leon): logits = uncond + s * (cond - uncond), where the unconditioned
context is the same context without the prompt (`<eos> <target>`); both are decoded in lockstep and
every sampled token is appended to both. They take two forward calls per step, each over all the
samples: a KV cache has one position counter and the model takes no padding mask, so two contexts
of different lengths cannot share one batch.

Decoding is KV-cached (one preallocated `mmlm.model.KVCache` per context); `use_cache=False`
recomputes the whole context every step (the reference the cache is tested and benchmarked against).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import MmlmError
from .device import resolve_device
from .documents import segment_spans
from .media import EXTENSIONS, earlier_output, write_samples  # noqa: F401  (its output files; imported from here)
from .modalities import MODALITIES
from .progress import Progress
from .tokenizers.loading import load_tokenizer
from .vocab import SEGMENT_MODALITIES, SPACE_OF, Vocab

PROMPT_OPTION = {m.name: m.prompt_option for m in MODALITIES.values() if m.prompt_option}
DEFAULT_MAX_TOKENS = 256
DONE_CHECK_EVERY = 8  # steps between checks that every row has finished (each check syncs a GPU)


# ---- the run -----------------------------------------------------------------------------------

class LoadedRun:
    """A trained run folder opened for sampling: model (eval mode), vocabulary, tokenizers on demand."""

    def __init__(self, path: Path, model, config: dict, vocab: Vocab, device: torch.device):
        self.path, self.model, self.config, self.vocab, self.device = path, model, config, vocab, device
        self._tokenizers: dict[str, Any] = {}

    @property
    def modalities(self) -> list[str]:
        """Segment modalities whose ids the run's vocabulary holds."""
        return [m for m in SEGMENT_MODALITIES if SPACE_OF[m] in self.vocab.ranges]

    def require(self, modality: str, option: str) -> None:
        if modality not in SEGMENT_MODALITIES:
            raise MmlmError(f"{option} {modality!r}: unknown modality (choose from {', '.join(SEGMENT_MODALITIES)})")
        if modality not in self.modalities:
            have = ", ".join(self.modalities) or "none"
            raise MmlmError(f"{option}: run {self.path} was not trained with {modality} tokens "
                            f"(its vocabulary has no '{SPACE_OF[modality]}' range; it has: {have})")

    def tokenizer(self, modality: str):
        space = SPACE_OF[modality]
        if space not in self._tokenizers:
            self._tokenizers[space] = load_tokenizer(self.path, space, self.vocab)
        return self._tokenizers[space]


def load_run(path: str | Path, device: str = "auto") -> LoadedRun:
    """Open a run folder made by `mmlm train`; one-line MmlmError when anything is missing or unsafe."""
    from .checkpoint import load_model
    from .model import resolve_attention

    path = Path(path)
    if not path.is_dir():
        raise MmlmError(f"{path}: no such run folder")
    for name, why in (("config.json", "not a run folder, or its training never started"),
                      ("vocab.json", "incomplete run folder"),
                      ("model.safetensors", "the run has no weights yet")):
        if not (path / name).is_file():
            raise MmlmError(f"{path / name}: missing ({why})")
    dev = resolve_device(device)
    vocab = Vocab.load(path / "vocab.json")
    model, config = load_model(path, dev, attention=resolve_attention("auto", dev))
    if model.cfg.vocab_size != vocab.size:
        raise MmlmError(f"{path / 'vocab.json'}: {vocab.size} ids, but the model was built for {model.cfg.vocab_size}")
    return LoadedRun(path, model, config, vocab, dev)


# ---- prompts -----------------------------------------------------------------------------------

def read_prompts(text: str | None = None, image: str | Path | None = None, audio: str | Path | None = None,
                 smiles: str | None = None) -> list[tuple[str, Any]]:
    """[(modality, item)] from the command-line prompt options (files read and checked here), in the
    order their segments take in the context: image, speech, molecule, text."""
    given = {"text": text, "image": image, "speech": audio, "molecule": smiles}
    # media segments first, then text (a stable sort of the registry's order)
    order = sorted((m for m in MODALITIES.values() if m.prompt_option), key=lambda m: m.name == "text")
    return [(m.name, m.read_prompt(given[m.name])) for m in order if given.get(m.name) is not None]


def encode_prompt(run: LoadedRun, modality: str, item: Any) -> list[int]:
    """One prompt segment as ids of the shared vocabulary, inside its sentinels."""
    option = PROMPT_OPTION.get(modality, modality)
    run.require(modality, option)
    vocab = run.vocab
    if isinstance(item, str) and not item.strip():
        raise MmlmError(f"{option}: empty prompt")
    tok = run.tokenizer(modality)
    if getattr(tok, "external", False):
        raise MmlmError(f"{option}: the run's {SPACE_OF[modality]} tokens were imported as external codes; "
                        f"it has no encoder for {modality} files")
    local = np.asarray(tok.encode(item), dtype=np.int64).reshape(-1)
    if local.size == 0:
        raise MmlmError(f"{option}: the prompt gives no {modality} tokens")
    return [vocab.begin(modality), *(local + vocab.offset(modality)).tolist(), vocab.end(modality)]


def build_context(run: LoadedRun, prompts: list[tuple[str, Any]], target: str | None) -> tuple[list[int], list[int]]:
    """(context with the prompt segments in their order, the same without them) as id lists."""
    if target is not None:
        run.require(target, "--modality")
    head = [run.vocab.eos]
    tail = [run.vocab.begin(target)] if target is not None else []
    body = [t for modality, item in prompts for t in encode_prompt(run, modality, item)]
    return head + body + tail, head + tail


# ---- constrained decoding ----------------------------------------------------------------------

class Grammar:
    """Which ids each row may draw next, and where each drawn id leads: a state per row and two
    [state, id] tables, so a step costs a few tensor ops for the whole batch and never syncs.

    States: DONE (finished: only <pad>, ignored), BETWEEN (outside segments: a begin sentinel or
    <eos>), BETWEEN_NO_IMAGE (the same when no whole image fits in the tokens left; used for the
    mask only), IMAGE_FULL (a complete code grid: only </image>), then one IN state per modality.
    """

    DONE, BETWEEN, BETWEEN_NO_IMAGE, IMAGE_FULL = range(4)

    def __init__(self, vocab: Vocab, modalities: list[str], target: str | None, image_codes: int | None,
                 device: torch.device):
        self.vocab, self.target, self.image_codes = vocab, target, image_codes
        self.in_state = {m: 4 + i for i, m in enumerate(modalities)}
        self.in_image = self.in_state.get("image")
        n_states, V = 4 + len(self.in_state), vocab.size
        allowed = torch.zeros(n_states, V, dtype=torch.bool)
        allowed[self.DONE, vocab.pad] = True
        allowed[self.BETWEEN, vocab.eos] = True
        nxt = torch.arange(n_states).repeat_interleave(V).view(n_states, V)  # by default a state stays
        after_end = self.BETWEEN if target is None else self.DONE
        for m, s in self.in_state.items():
            first, last = vocab.range_of(m)
            allowed[s, first:last + 1] = True
            allowed[s, vocab.end(m)] = m != "image"  # an image closes only when its grid is full
            allowed[self.BETWEEN, vocab.begin(m)] = True
            nxt[:, vocab.begin(m)] = s
            nxt[:, vocab.end(m)] = after_end
        nxt[:, vocab.eos] = self.DONE
        nxt[self.DONE] = self.DONE
        allowed[self.BETWEEN_NO_IMAGE] = allowed[self.BETWEEN]
        if self.in_image is not None:
            allowed[self.IMAGE_FULL, vocab.end("image")] = True
            allowed[self.BETWEEN_NO_IMAGE, vocab.begin("image")] = False
        self.blocked, self.next = (~allowed).to(device), nxt.to(device)
        self.device = device

    def start(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(state, image codes drawn so far) of every row after the context."""
        s = self.BETWEEN if self.target is None else self.in_state[self.target]
        zeros = torch.zeros(batch, dtype=torch.long, device=self.device)
        return zeros + s, zeros.clone()

    def mask(self, state: torch.Tensor, remaining: int) -> torch.Tensor:
        """[B, V] True where an id may not be drawn, with `remaining` tokens left (this one included)."""
        if self.in_image is not None and remaining < self.image_codes + 2:  # <image>, the grid, </image>
            state = torch.where(state == self.BETWEEN, self.BETWEEN_NO_IMAGE, state)
        return self.blocked[state]

    def advance(self, state: torch.Tensor, count: torch.Tensor, tok: torch.Tensor):
        nxt = self.next[state, tok]
        if self.in_image is not None:  # inside an image only codes can be drawn: count them
            count = (count + 1) * (state == self.in_image)
            nxt = torch.where(count >= self.image_codes, self.IMAGE_FULL, nxt)
        return nxt, count


# ---- the sampling loop -------------------------------------------------------------------------

@dataclass
class SampleSettings:
    num_samples: int = 1
    max_tokens: int | None = None  # generated tokens at most (closing sentinels included); None: a default
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    cfg_scale: float = 1.0  # 1: no guidance (the conditioned logits alone)
    seed: int | None = None  # None: a fresh random seed (recorded in the output)
    use_cache: bool = True

    def check(self) -> None:
        if self.num_samples < 1:
            raise MmlmError(f"--num-samples {self.num_samples}: must be at least 1")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise MmlmError(f"--max-tokens {self.max_tokens}: must be at least 1")
        if not (np.isfinite(self.temperature) and self.temperature >= 0):
            raise MmlmError(f"--temperature {self.temperature}: must be 0 (greedy) or positive")
        if self.top_k < 0:
            raise MmlmError(f"--top-k {self.top_k}: must be 0 (off) or positive")
        if not 0 < self.top_p <= 1:
            raise MmlmError(f"--top-p {self.top_p}: must be in (0, 1]")
        if not (np.isfinite(self.cfg_scale) and self.cfg_scale >= 0):
            raise MmlmError(f"--cfg-scale {self.cfg_scale}: must be 0 or more (1: no guidance)")


class _Stream:
    """One context decoded for a batch of rows: the KV cache (or the whole sequence) and the
    logits of its next position."""

    def __init__(self, model, context: list[int], batch: int, new_tokens: int, use_cache: bool):
        self.model = model
        dev = model.wte.weight.device
        ids = torch.tensor(context, dtype=torch.long, device=dev)[None].expand(batch, -1)
        n = len(context)
        if use_cache:
            self.cache = model.new_kv_cache(batch, n + new_tokens - 1)
            self.logits = model(ids, kv_cache=self.cache, last_only=True)[0][:, -1]
        else:
            self.cache, self.n = None, n
            self.seq = torch.empty(batch, n + new_tokens - 1, dtype=torch.long, device=dev)
            self.seq[:, :n] = ids
            self.logits = model(ids, last_only=True)[0][:, -1]

    def push(self, tok: torch.Tensor) -> None:
        if self.cache is not None:
            self.logits = self.model(tok[:, None], kv_cache=self.cache, last_only=True)[0][:, -1]
        else:
            self.seq[:, self.n] = tok
            self.n += 1
            self.logits = self.model(self.seq[:, :self.n], last_only=True)[0][:, -1]


def pick(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
         generator: torch.Generator | None) -> torch.Tensor:
    """One id per row from [B, V] logits (blocked ids at -inf): greedy, or temperature / top-k / top-p."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


@torch.inference_mode()
def sample_tokens(model, grammar: Grammar, context: list[int], settings: SampleSettings, max_tokens: int,
                  uncond: list[int] | None = None, generator: torch.Generator | None = None,
                  on_progress: Progress | None = None) -> list[list[int]]:
    """Draw `settings.num_samples` continuations of `context` (at most `max_tokens` ids each, the
    grammar's constraints applied); with `uncond`, classifier-free guidance at settings.cfg_scale."""
    B = settings.num_samples
    cond = _Stream(model, context, B, max_tokens, settings.use_cache)
    guide = _Stream(model, uncond, B, max_tokens, settings.use_cache) if uncond is not None else None
    state, count = grammar.start(B)
    pad = grammar.vocab.pad  # drawn by finished rows only
    out = torch.full((B, max_tokens), pad, dtype=torch.long, device=state.device)
    steps = max_tokens
    for t in range(max_tokens):
        logits = cond.logits.float()
        if guide is not None:
            u = guide.logits.float()
            logits = u + settings.cfg_scale * (logits - u)
        logits = logits.masked_fill(grammar.mask(state, max_tokens - t), float("-inf"))
        tok = pick(logits, settings.temperature, settings.top_k, settings.top_p, generator)
        out[:, t] = tok
        state, count = grammar.advance(state, count, tok)
        if on_progress is not None:
            on_progress("generate", t + 1, max_tokens)
        if t + 1 == max_tokens or ((t + 1) % DONE_CHECK_EVERY == 0 and bool((state == Grammar.DONE).all())):
            steps = t + 1
            break
        cond.push(tok)
        if guide is not None:
            guide.push(tok)
    return [[t for t in row if t != pad] for row in out[:, :steps].tolist()]


# ---- segments and files ------------------------------------------------------------------------

def split_segments(vocab: Vocab, tokens: list[int], target: str | None) -> list[dict]:
    """The segments of a generated sequence: [{"modality", "start", "end"}], content = tokens[start:end]
    (sentinels excluded). With a target the sequence starts inside its segment (mmlm.documents)."""
    return [{"modality": m, "start": start, "end": end} for m, start, end in segment_spans(vocab, tokens, target)]


def decode_segment(run: LoadedRun, modality: str, ids: list[int]) -> tuple[Any, dict]:
    """(decoded item, what to report about it)."""
    local = np.asarray(ids, dtype=np.int64) - run.vocab.offset(modality)
    item = run.tokenizer(modality).decode(local)
    return item, MODALITIES[modality].describe(item)


def _check_batch_memory(cfg, settings: SampleSettings, context: int, max_tokens: int, guided: bool) -> None:
    """Refuse a batch whose decoding state cannot fit, before allocating it: per context (two with
    guidance) a KV cache (keys and values of every layer and position) and a few [B, vocab] float
    copies of the logits (scores, mask, softmax), all float32."""
    from .bounds import check_memory

    B, positions = settings.num_samples, context + max_tokens
    per_stream = 4 * B * (2 * cfg.n_layer * positions * cfg.d_model + 4 * cfg.vocab_size + 8 * positions)
    check_memory(per_stream * (2 if guided else 1), f"--num-samples {B}",
                 f"the decoding state ({B} samples x {positions} positions)")


def generate(run: LoadedRun, prompts: list[tuple[str, Any]], target: str | None, settings: SampleSettings,
             on_progress: Progress | None = None) -> list[dict]:
    """Sample from a run. Returns one dict per sample: {"tokens", "segments": [{"modality", "start",
    "end", "item", ...}], "settings"}; `write_samples` turns them into files."""
    settings.check()
    vocab, model = run.vocab, run.model
    context, uncond = build_context(run, prompts, target)
    guided = settings.cfg_scale != 1.0
    if guided and len(context) == len(uncond):
        raise MmlmError("--cfg-scale: guidance contrasts the prompted with the unprompted context; give a prompt")
    modalities = [target] if target is not None else run.modalities  # what the sample may hold
    image_codes = run.tokenizer("image").codes_per_image if "image" in modalities else None
    room = model.cfg.seq_len - len(context) + 1  # the last drawn token is never fed back
    need = image_codes + 1 if target == "image" else 1
    if room < need:
        raise MmlmError(f"prompt: {len(context)} context tokens leave no room for the {target or 'sample'} "
                        f"in the model's {model.cfg.seq_len} positions")
    max_tokens = settings.max_tokens or (need if target == "image" else min(DEFAULT_MAX_TOKENS, room))
    if max_tokens > room:
        raise MmlmError(f"--max-tokens {max_tokens}: the context takes {len(context)} of the model's "
                        f"{model.cfg.seq_len} positions; at most {room} new tokens fit")
    if max_tokens < need:
        raise MmlmError(f"--max-tokens {max_tokens}: an image is {image_codes} codes and its end sentinel; "
                        f"use at least {need}")
    _check_batch_memory(model.cfg, settings, len(context), max_tokens, guided)
    seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
    generator = torch.Generator(device=run.device).manual_seed(seed)
    grammar = Grammar(vocab, modalities, target, image_codes, run.device)
    rows = sample_tokens(model, grammar, context, settings, max_tokens, uncond if guided else None, generator,
                         on_progress)
    record = {**asdict(settings), "max_tokens": max_tokens, "seed": seed, "run": str(run.path), "target": target,
              "prompt": [m for m, _ in prompts], "context": context, "device": str(run.device)}
    samples = []
    for tokens in rows:
        segments = []
        for seg in split_segments(vocab, tokens, target):
            item, info = decode_segment(run, seg["modality"], tokens[seg["start"]:seg["end"]])
            segments.append({**seg, "item": item, **info})
        samples.append({"tokens": tokens, "segments": segments, "settings": record})
    return samples
