"""Mixture interleaver: draws documents from several token datasets in fixed proportions and packs them
into fixed-length training rows with a parallel row of dataset ids.

    il = Interleaver([(tokens, starts, lengths), ...], weights=[0.5, 0.5], seq_len=512, seed=0)
    rows, ids = il.next_rows(8)          # int64[8, 513], uint8[8, 513]
    x, y = rows[:, :-1], rows[:, 1:]     # consecutive rows overlap by one token: nothing is lost
    state = il.state_dict()              # plain ints + numpy arrays; load_state_dict(state) resumes exactly

The rules (dataset choice, per-dataset permutations, packing) are specified in `interleave_ref.py`, the
plain-Python twin that produces the same rows token for token; the work happens in `_interleave.pyx`.
"""
from __future__ import annotations

import numpy as np

from mmlm.errors import MmlmError

from ._interleave import Core
from .interleave_ref import MASK64, STATE_VERSION, _as_int, check_inputs, check_open, check_state


class Interleaver:
    """Draw documents in mixture proportion and pack them into rows of seq_len + 1 tokens.

    datasets: list of (tokens uint32[n] (np.memmap is fine, it is not copied), starts int64[k], lengths int64[k]).
    weights: positive token shares, one per dataset (normalised here).
    """

    def __init__(self, datasets, weights, seq_len: int, seed: int):
        toks, starts, lengths, w, self.seq_len, seed = check_inputs(datasets, weights, seq_len, seed)
        self.weights = w
        self.n_docs = [int(s.size) for s in starts]
        self._lengths = lengths
        self._core = Core(toks, starts, lengths, w, self.seq_len, seed & MASK64)

    @property
    def n_datasets(self) -> int:
        return len(self.n_docs)

    @property
    def tokens_by_dataset(self) -> np.ndarray:
        """int64 per dataset: stream tokens emitted so far (the token repeated at a row start counts once)."""
        return self._core.tokens_by_dataset()

    def next_rows(self, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The next n_rows rows: (tokens int64[n_rows, seq_len + 1], ids uint8[n_rows, seq_len + 1])."""
        n_rows = _as_int(n_rows, "n_rows")
        if n_rows < 0:
            raise MmlmError(f"interleaver: n_rows must be non-negative, got {n_rows}")
        tokens = np.empty((n_rows, self.seq_len + 1), dtype=np.int64)
        ids = np.empty((n_rows, self.seq_len + 1), dtype=np.uint8)
        self._core.fill(tokens, ids)
        return tokens, ids

    def state_dict(self) -> dict:
        """The exact position: plain ints and numpy arrays (int64, float64), JSON- and safetensors-friendly."""
        state = {"version": STATE_VERSION, "seq_len": self.seq_len, **self._core.get_state()}
        state["n_docs"] = np.asarray(self.n_docs, dtype=np.int64)
        state["weights"] = self.weights.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by `state_dict()` of an interleaver over the same datasets and settings."""
        s = check_state(state, self.n_docs, self.weights, self.seq_len)
        check_open(s, self._lengths)
        self._core.set_state(s["rows"], s["carry_token"], s["carry_id"], s["open_doc"], s["open_offset"],
                             s["emitted"], s["pos"], s["passes"], s["pass_rng"].view(np.uint64))
