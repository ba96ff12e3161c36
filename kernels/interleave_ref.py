"""Plain-Python reference twin of the interleaver: the specification the Cython core matches token for token.

The rules (shared by both implementations):
- Dataset choice: at the start of every row, and whenever the current document ends inside a row, take
  the dataset furthest below its target share of the tokens emitted so far, i.e. the largest
  `weights[d] * total - emitted[d]` computed in float64 (ties go to the lowest index).
- Each dataset keeps its open document: a document cut at a row end is continued where it stopped the
  next time its dataset is chosen, so a long document cannot hold a row-sized share hostage. No piece is
  longer than a row, so each dataset's token count stays within one row (seq_len + 1 tokens) of its
  target share at every row boundary, whatever the document lengths.
- Document order within a dataset: a permutation made by Fisher-Yates driven by splitmix64, a fresh one
  each pass over the dataset. Dataset d's generator starts at `(seed + (d + 1) * DATASET_STRIDE) mod 2**64`.
- Packing: pieces go back to back. A row holds
  seq_len + 1 tokens and row r + 1 starts with the last token of row r, so inputs = rows[:, :-1] and
  targets = rows[:, 1:] lose nothing. `emitted` counts each stream token once (the repeat is not counted).

Validation of inputs and of saved states also lives here, so both implementations reject the same things.
"""
from __future__ import annotations

import operator

import numpy as np

from mmlm.errors import MmlmError

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15  # splitmix64 increment
DATASET_STRIDE = 0xD1B54A32D192ED69  # separates the per-dataset generator streams
MAX_DATASETS = 256  # dataset ids are uint8
STATE_VERSION = 2  # 2: per-dataset open documents (1: one current document, not resumable by 2)


def splitmix64(state: int) -> tuple[int, int]:
    """One step of splitmix64 (Steele, Lea, Flood 2014): returns (new state, 64-bit output)."""
    state = (state + GAMMA) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def initial_rng(seed: int, d: int) -> int:
    return (seed + (d + 1) * DATASET_STRIDE) & MASK64


def shuffle(n: int, state: int) -> tuple[list[int], int]:
    """Fisher-Yates over range(n): for i = n-1 .. 1 swap i with j = next() % (i + 1). Returns (perm, state)."""
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        state, z = splitmix64(state)
        j = z % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm, state


def _as_int(value, what: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise MmlmError(f"interleaver: {what} must be an integer, got {value!r}") from None


def check_inputs(datasets, weights, seq_len, seed):
    """Validate constructor arguments. Returns (tokens, starts, lengths, weights float64 normalised, seq_len, seed)."""
    seq_len = _as_int(seq_len, "seq_len")
    if seq_len < 1:
        raise MmlmError(f"interleaver: seq_len must be at least 1, got {seq_len}")
    seed = _as_int(seed, "seed")
    datasets = list(datasets)
    if not datasets:
        raise MmlmError("interleaver: no datasets given")
    if len(datasets) > MAX_DATASETS:
        raise MmlmError(f"interleaver: {len(datasets)} datasets, at most {MAX_DATASETS} fit uint8 dataset ids")
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size != len(datasets):
        raise MmlmError(f"interleaver: {w.size} weights for {len(datasets)} datasets")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise MmlmError(f"interleaver: weights must be positive and finite, got {w.tolist()}")
    w = w / w.sum()
    toks, starts, lengths = [], [], []
    for d, item in enumerate(datasets):
        try:
            tok, st, ln = item
        except (TypeError, ValueError):
            raise MmlmError(f"interleaver: dataset {d} must be a (tokens, starts, lengths) triple") from None
        tok, st, ln = np.asarray(tok), np.asarray(st), np.asarray(ln)
        if tok.ndim != 1 or st.ndim != 1 or ln.ndim != 1:
            raise MmlmError(f"interleaver: dataset {d}: tokens, starts and lengths must be 1-D arrays")
        for name, a in (("tokens", tok), ("starts", st), ("lengths", ln)):
            if a.size and a.dtype.kind not in "iu":
                raise MmlmError(f"interleaver: dataset {d}: {name} must be integers, got {a.dtype}")
        if st.size != ln.size:
            raise MmlmError(f"interleaver: dataset {d}: {st.size} starts but {ln.size} lengths")
        if st.size == 0:
            raise MmlmError(f"interleaver: dataset {d} has no documents")
        if tok.dtype != np.uint32:  # memmaps of uint32 pass through untouched; anything else is converted once
            if tok.size and (tok.min() < 0 or tok.max() > 0xFFFFFFFF):
                raise MmlmError(f"interleaver: dataset {d}: token ids must fit uint32")
            tok = tok.astype(np.uint32)
        tok = np.ascontiguousarray(tok)  # no copy for a contiguous array or memmap
        st = np.ascontiguousarray(st, dtype=np.int64)
        ln = np.ascontiguousarray(ln, dtype=np.int64)
        if ln.min() < 1:
            k = int(np.argmin(ln))
            raise MmlmError(f"interleaver: dataset {d}: document {k} has length {int(ln[k])} (must be at least 1)")
        if st.min() < 0 or (st + ln).max() > tok.size:
            k = int(np.argmax((st < 0) | (st + ln > tok.size)))
            raise MmlmError(
                f"interleaver: dataset {d}: document {k} (start {int(st[k])}, length {int(ln[k])}) "
                f"lies outside its {tok.size} tokens")
        toks.append(tok)
        starts.append(st)
        lengths.append(ln)
    return toks, starts, lengths, w, seq_len, seed


def check_state(state, n_docs, weights, seq_len) -> dict:
    """Validate a state dict against the datasets it is loaded into; returns it with numpy/int values."""
    n = len(n_docs)
    try:
        s = {k: int(state[k]) for k in ("version", "seq_len", "rows", "carry_token", "carry_id")}
        for k in ("emitted", "pos", "passes", "pass_rng", "n_docs", "open_doc", "open_offset"):
            s[k] = np.asarray(state[k], dtype=np.int64).reshape(-1)
        s["weights"] = np.asarray(state["weights"], dtype=np.float64).reshape(-1)
    except KeyError as e:
        raise MmlmError(f"interleaver state: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise MmlmError(f"interleaver state: malformed value ({e})") from None
    if s["version"] != STATE_VERSION:
        raise MmlmError(f"interleaver state: version {s['version']}, expected {STATE_VERSION}")
    if s["seq_len"] != seq_len:
        raise MmlmError(f"interleaver state: saved with seq_len {s['seq_len']}, this interleaver has {seq_len}")
    if any(s[k].size != n for k in ("emitted", "pos", "passes", "pass_rng", "n_docs", "weights", "open_doc", "open_offset")):
        raise MmlmError(f"interleaver state: saved for {s['n_docs'].size} datasets, this interleaver has {n}")
    if not np.array_equal(s["n_docs"], np.asarray(n_docs, dtype=np.int64)):
        raise MmlmError(f"interleaver state: saved for datasets of {s['n_docs'].tolist()} documents, "
                        f"these have {list(n_docs)}")
    if not np.allclose(s["weights"], weights, rtol=1e-12, atol=0):
        raise MmlmError(f"interleaver state: saved with weights {s['weights'].tolist()}, these are {list(weights)}")
    if np.any(s["pos"] < 0) or np.any(s["pos"] > s["n_docs"]) or np.any(s["emitted"] < 0):
        raise MmlmError("interleaver state: document positions out of range")
    if any(not (-1 <= int(doc) < k) for doc, k in zip(s["open_doc"], n_docs)) or np.any(s["open_offset"] < 0):
        raise MmlmError("interleaver state: open document out of range")
    if s["rows"] < 0 or not (0 <= s["carry_id"] < n) or s["carry_token"] < 0:
        raise MmlmError("interleaver state: row position out of range")
    return s


def check_open(s: dict, lengths) -> None:
    """An open document's offset must lie inside it (an offset at its end would have closed it)."""
    for d, (doc, off) in enumerate(zip(s["open_doc"], s["open_offset"])):
        if (doc < 0 and off != 0) or (doc >= 0 and off >= lengths[d][int(doc)]):
            raise MmlmError(f"interleaver state: open document offset of dataset {d} out of range")


class InterleaverRef:
    """Same face as `mmlm.kernels.interleave.Interleaver`, one token at a time in plain Python."""

    def __init__(self, datasets, weights, seq_len: int, seed: int):
        toks, starts, lengths, w, self.seq_len, seed = check_inputs(datasets, weights, seq_len, seed)
        self._tokens = toks
        self._starts = [a.tolist() for a in starts]
        self._lengths = [a.tolist() for a in lengths]
        self._weights = [float(x) for x in w]
        n = len(toks)
        self._n_docs = [len(a) for a in self._starts]
        self._emitted = [0] * n
        self._pos = [0] * n
        self._passes = [0] * n
        self._pass_rng = [initial_rng(seed & MASK64, d) for d in range(n)]  # generator state before this pass's shuffle
        self._perm, self._rng = [], []
        for d in range(n):
            perm, rng = shuffle(self._n_docs[d], self._pass_rng[d])
            self._perm.append(perm)
            self._rng.append(rng)
        self._open = [[-1, 0] for _ in range(n)]  # per dataset: open document (-1: none), tokens of it emitted
        self._rows = 0
        self._carry = (0, 0)  # last token of the previous row and its dataset id

    @property
    def tokens_by_dataset(self) -> np.ndarray:
        return np.asarray(self._emitted, dtype=np.int64)

    def _choose(self) -> int:
        """The dataset of the next piece; opens its next document unless one is open."""
        total = sum(self._emitted)
        best, best_deficit = 0, None
        for d, w in enumerate(self._weights):
            deficit = w * total - self._emitted[d]
            if best_deficit is None or deficit > best_deficit:
                best, best_deficit = d, deficit
        d = best
        if self._open[d][0] >= 0:
            return d
        if self._pos[d] == self._n_docs[d]:  # pass finished: a fresh permutation
            self._pass_rng[d] = self._rng[d]
            self._perm[d], self._rng[d] = shuffle(self._n_docs[d], self._rng[d])
            self._pos[d] = 0
            self._passes[d] += 1
        self._open[d] = [self._perm[d][self._pos[d]], 0]
        self._pos[d] += 1
        return d

    def next_rows(self, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        n_rows = _as_int(n_rows, "n_rows")
        if n_rows < 0:
            raise MmlmError(f"interleaver: n_rows must be non-negative, got {n_rows}")
        width = self.seq_len + 1
        out_tokens, out_ids = [], []
        for _ in range(n_rows):
            row, ids = [], []
            if self._rows > 0:
                row.append(self._carry[0])
                ids.append(self._carry[1])
            d = -1  # a new piece at every row start
            while len(row) < width:
                if d < 0:
                    d = self._choose()
                doc, off = self._open[d]
                row.append(int(self._tokens[d][self._starts[d][doc] + off]))
                ids.append(d)
                self._emitted[d] += 1
                self._open[d][1] += 1
                if self._open[d][1] == self._lengths[d][doc]:  # document done: close it, choose again
                    self._open[d] = [-1, 0]
                    d = -1
            self._carry = (row[-1], ids[-1])
            self._rows += 1
            out_tokens.append(row)
            out_ids.append(ids)
        return (np.asarray(out_tokens, dtype=np.int64).reshape(n_rows, width),
                np.asarray(out_ids, dtype=np.uint8).reshape(n_rows, width))

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION, "seq_len": self.seq_len, "rows": self._rows,
            "carry_token": self._carry[0], "carry_id": self._carry[1],
            "open_doc": np.asarray([o[0] for o in self._open], dtype=np.int64),
            "open_offset": np.asarray([o[1] for o in self._open], dtype=np.int64),
            "emitted": np.asarray(self._emitted, dtype=np.int64),
            "pos": np.asarray(self._pos, dtype=np.int64),
            "passes": np.asarray(self._passes, dtype=np.int64),
            # uint64 generator states stored bit for bit as int64 (safetensors- and torch-friendly)
            "pass_rng": np.asarray(self._pass_rng, dtype=np.uint64).view(np.int64),
            "n_docs": np.asarray(self._n_docs, dtype=np.int64),
            "weights": np.asarray(self._weights, dtype=np.float64),
        }

    def load_state_dict(self, state: dict) -> None:
        s = check_state(state, self._n_docs, self._weights, self.seq_len)
        check_open(s, self._lengths)
        self._rows, self._carry = s["rows"], (s["carry_token"], s["carry_id"])
        self._open = [[int(doc), int(off)] for doc, off in zip(s["open_doc"], s["open_offset"])]
        self._emitted = s["emitted"].tolist()
        self._pos = s["pos"].tolist()
        self._passes = s["passes"].tolist()
        self._pass_rng = s["pass_rng"].view(np.uint64).tolist()
        self._perm, self._rng = [], []
        for d, k in enumerate(self._n_docs):
            perm, rng = shuffle(k, self._pass_rng[d])
            self._perm.append(perm)
            self._rng.append(rng)
