"""Training objectives: turn packed rows of tokens into (inputs, targets, dataset ids, weights).

Rows come from the interleaver as `tokens int64[B, T + 1]` and `ids uint8[B, T + 1]`
(rows overlap by one token, so inputs = rows[:, :-1] and targets = rows[:, 1:]).

- "clm": plain causal language modelling, every target weighted 1.
- "cm3": the causal-masked objective of CM3 (the paper's). In every document a few spans
  (count ~ clamp(Poisson(1), 1, 16)) are cut out, each replaced by a sentinel <mask:i>, and
  moved to the end of the document behind the same sentinel:
      a b c d e f g <eos>  ->  a <mask:0> e f g <mask:0> b c d <eos>
  The placeholder <mask:i> in the body is unpredictable, so its target weight is 0. The model
  learns to infill: after the body it generates <mask:0> and the missing span.
  Because documents are already packed into rows, the transform works on each document piece of
  a row (a piece ends at <eos> or at a change of dataset); a transformed row is 2 tokens per span
  longer, and is cut back to T + 1 (the cut tokens are not trained on).
  Span positions: 2n distinct cut points drawn uniformly over the piece's content (its tokens
  before the closing <eos>), paired into n non-empty, non-overlapping spans.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import MmlmError
from .vocab import N_MASKS, Vocab

OBJECTIVES = ("clm", "cm3")
MIN_PIECE = 4  # pieces with fewer content tokens are left as they are


@dataclass
class Batch:
    inputs: np.ndarray  # int64 [B, T]
    targets: np.ndarray  # int64 [B, T]
    ids: np.ndarray  # uint8 [B, T], dataset index of each target
    weights: np.ndarray | None  # float32 [B, T]; None means every target counts 1

    @property
    def n_targets(self) -> float:
        return float(self.targets.size if self.weights is None else self.weights.sum())


def split_rows(tokens: np.ndarray, ids: np.ndarray, weights: np.ndarray | None = None) -> Batch:
    """Overlapping rows [B, T + 1] -> inputs/targets [B, T]; ids and weights follow the targets."""
    return Batch(
        inputs=np.ascontiguousarray(tokens[:, :-1], dtype=np.int64),
        targets=np.ascontiguousarray(tokens[:, 1:], dtype=np.int64),
        ids=np.ascontiguousarray(ids[:, 1:], dtype=np.uint8),
        weights=None if weights is None else np.ascontiguousarray(weights[:, 1:], dtype=np.float32),
    )


class Objective:
    """Causal LM; subclasses transform the rows first. `state_dict` restores any randomness."""

    name = "clm"

    def __call__(self, tokens: np.ndarray, ids: np.ndarray) -> Batch:
        return split_rows(tokens, ids)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class CausalMasked(Objective):
    name = "cm3"

    def __init__(self, vocab: Vocab, seed: int):
        self.eos = vocab.eos
        self.masks = np.array([vocab.mask(i) for i in range(N_MASKS)], dtype=np.int64)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def __call__(self, tokens: np.ndarray, ids: np.ndarray) -> Batch:
        out_t = np.empty_like(tokens, dtype=np.int64)
        out_i = np.empty_like(ids)
        weights = np.ones(tokens.shape, dtype=np.float32)
        n = tokens.shape[1]
        for r in range(tokens.shape[0]):
            t, w = self.transform_row(tokens[r].astype(np.int64), ids[r])
            out_t[r], out_i[r], weights[r] = t[0][:n], t[1][:n], w[:n]
        return split_rows(out_t, out_i, weights)

    def transform_row(self, row: np.ndarray, row_ids: np.ndarray):
        """One row -> ((tokens, ids), weights), possibly longer than the row."""
        # piece boundaries: after every <eos>, and wherever the dataset changes
        cuts = set((np.flatnonzero(row == self.eos) + 1).tolist())
        cuts |= set((np.flatnonzero(row_ids[1:] != row_ids[:-1]) + 1).tolist())
        bounds = [0] + sorted(c for c in cuts if 0 < c < len(row)) + [len(row)]
        toks, dsid, wts = [], [], []
        for a, b in zip(bounds[:-1], bounds[1:]):
            piece, w = self.transform_piece(row[a:b])
            toks.append(piece)
            wts.append(w)
            dsid.append(np.full(len(piece), row_ids[a], dtype=row_ids.dtype))
        return (np.concatenate(toks), np.concatenate(dsid)), np.concatenate(wts)

    def transform_piece(self, piece: np.ndarray):
        closed = len(piece) > 0 and piece[-1] == self.eos
        content = piece[:-1] if closed else piece
        c = len(content)
        if c < MIN_PIECE:
            return piece, np.ones(len(piece), dtype=np.float32)
        n_spans = int(min(max(self.rng.poisson(1.0), 1), N_MASKS, c // 2))
        points = np.sort(self.rng.choice(c + 1, size=2 * n_spans, replace=False))
        body, tail, placeholders = [], [], []
        prev, length = 0, 0
        for i in range(n_spans):
            s, e = int(points[2 * i]), int(points[2 * i + 1])
            body.append(content[prev:s])
            length += s - prev
            placeholders.append(length)
            body.append(self.masks[i : i + 1])
            length += 1
            tail += [self.masks[i : i + 1], content[s:e]]
            prev = e
        body.append(content[prev:])
        parts = body + tail + ([piece[-1:]] if closed else [])
        out = np.concatenate(parts)
        w = np.ones(len(out), dtype=np.float32)
        w[placeholders] = 0.0
        return out, w

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def make_objective(name: str, vocab: Vocab, seed: int) -> Objective:
    if name == "clm":
        return Objective()
    if name == "cm3":
        return CausalMasked(vocab, seed)
    raise MmlmError(f"--objective {name!r}: unknown objective (choose from {', '.join(OBJECTIVES)})")
