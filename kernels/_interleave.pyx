# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython core of the interleaver. The rules are specified (and validated) in interleave_ref.py;
this file implements the same rules in C, one memcpy-like span per document piece."""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memset

import numpy as np

cdef extern from *:
    void __builtin_prefetch(const void* addr) noexcept nogil  # gcc and clang

cdef enum:
    MAX_DATASETS = 256
    PREFETCH_TOKENS = 1024  # how much of the next document to pull into cache ahead of time
    PREFETCH_ABOVE = 1 << 18  # only for datasets of more tokens than this (1 MB): smaller ones stay in cache


cdef inline uint64_t splitmix64(uint64_t* state) noexcept nogil:
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef void shuffle(int64_t* perm, int64_t n, uint64_t* state) noexcept nogil:
    cdef int64_t i, j, t
    for i in range(n):
        perm[i] = i
    for i in range(n - 1, 0, -1):
        j = <int64_t>(splitmix64(state) % <uint64_t>(i + 1))
        t = perm[i]
        perm[i] = perm[j]
        perm[j] = t


cdef class Core:
    """All state of one interleaver in C arrays; `Interleaver` (interleave.py) is the public face."""
    cdef int n_ds
    cdef int64_t seq_len, rows, total
    cdef const uint32_t* tok[MAX_DATASETS]
    cdef const int64_t* starts[MAX_DATASETS]
    cdef const int64_t* lengths[MAX_DATASETS]
    cdef int64_t* perm[MAX_DATASETS]
    cdef int64_t n_docs[MAX_DATASETS]
    cdef double weights[MAX_DATASETS]
    cdef int64_t emitted[MAX_DATASETS]
    cdef int64_t pos[MAX_DATASETS]
    cdef int64_t passes[MAX_DATASETS]
    cdef uint64_t rng[MAX_DATASETS]
    cdef uint64_t pass_rng[MAX_DATASETS]
    cdef int64_t open_doc[MAX_DATASETS]  # per dataset: the document being emitted (-1: none open)
    cdef int64_t open_off[MAX_DATASETS]  # ... and how many of its tokens are out
    cdef int64_t carry_tok
    cdef uint8_t carry_id
    cdef bint prefetch
    cdef list _keep  # the arrays the pointers above point into

    def __init__(self, list tokens, list starts, list lengths, double[::1] weights, int64_t seq_len, uint64_t seed):
        # inputs already validated by interleave_ref.check_inputs
        cdef const uint32_t[::1] tv
        cdef const int64_t[::1] sv
        cdef const int64_t[::1] lv
        cdef int64_t[::1] pv
        cdef int d
        cdef Py_ssize_t i
        cdef int64_t doc_tokens = 0
        self.n_ds = len(tokens)
        self.seq_len = seq_len
        self._keep = []
        for d in range(self.n_ds):
            tv = tokens[d]
            sv = starts[d]
            lv = lengths[d]
            perm = np.empty(sv.shape[0], dtype=np.int64)
            pv = perm
            self._keep += [tokens[d], starts[d], lengths[d], perm]
            self.tok[d] = &tv[0]
            self.starts[d] = &sv[0]
            self.lengths[d] = &lv[0]
            self.perm[d] = &pv[0]
            self.n_docs[d] = sv.shape[0]
            self.weights[d] = weights[d]
            self.emitted[d] = 0
            self.pos[d] = 0
            self.passes[d] = 0
            self.pass_rng[d] = seed + <uint64_t>(d + 1) * 0xD1B54A32D192ED69ULL
            self.rng[d] = self.pass_rng[d]
            self.open_doc[d] = -1
            self.open_off[d] = 0
            shuffle(self.perm[d], self.n_docs[d], &self.rng[d])
            for i in range(self.n_docs[d]):
                doc_tokens += lv[i]
        self.prefetch = doc_tokens > PREFETCH_ABOVE
        self.total = 0
        self.rows = 0
        self.carry_tok = 0
        self.carry_id = 0

    cdef int choose(self) noexcept nogil:
        """The dataset of the next piece; opens its next document unless one is open."""
        cdef int d, best = 0
        cdef double deficit, best_deficit = self.weights[0] * <double>self.total - <double>self.emitted[0]
        for d in range(1, self.n_ds):
            deficit = self.weights[d] * <double>self.total - <double>self.emitted[d]
            if deficit > best_deficit:
                best = d
                best_deficit = deficit
        d = best
        if self.open_doc[d] >= 0:
            return d
        if self.pos[d] == self.n_docs[d]:  # pass finished: a fresh permutation
            self.pass_rng[d] = self.rng[d]
            shuffle(self.perm[d], self.n_docs[d], &self.rng[d])
            self.pos[d] = 0
            self.passes[d] += 1
        self.open_doc[d] = self.perm[d][self.pos[d]]
        self.open_off[d] = 0
        self.pos[d] += 1
        return d

    cdef void prefetch_next(self, int cur, int64_t left) noexcept nogil:
        """Start loading the piece likely to follow the current one (dataset `cur`, `left` tokens to go) into
        cache, while the current one is copied. Read-only, and only a hint: the guess assumes the current
        piece runs to its document's end. On datasets larger than the cache this doubles throughput
        (bench/interleave.py, cold); on datasets that fit it costs ~15%, hence PREFETCH_ABOVE."""
        cdef int d, best = 0
        cdef double total = <double>(self.total + left)
        cdef double deficit, best_deficit = 0
        cdef int64_t doc, j, k, n
        cdef const uint32_t* p
        for d in range(self.n_ds):  # the same rule as next_document, on the counts it will see
            deficit = self.weights[d] * total - <double>(self.emitted[d] + (left if d == cur else 0))
            if d == 0 or deficit > best_deficit:
                best = d
                best_deficit = deficit
        # the index entries of each dataset's document after that (cheap, and a likely miss otherwise)
        for d in range(self.n_ds):
            j = self.pos[d] + (1 if d == best else 0)
            if j < self.n_docs[d]:
                __builtin_prefetch(self.starts[d] + self.perm[d][j])
                __builtin_prefetch(self.lengths[d] + self.perm[d][j])
        if best != cur and self.open_doc[best] >= 0:  # it continues its open document
            doc = self.open_doc[best]
            p = self.tok[best] + self.starts[best][doc] + self.open_off[best]
            n = min(self.lengths[best][doc] - self.open_off[best], PREFETCH_TOKENS)
        else:
            if self.pos[best] == self.n_docs[best]:
                return  # a new pass starts: its permutation is not made yet
            doc = self.perm[best][self.pos[best]]
            p = self.tok[best] + self.starts[best][doc]
            n = min(self.lengths[best][doc], PREFETCH_TOKENS)
        for k in range(0, n, 16):  # one 64-byte cache line per 16 tokens
            __builtin_prefetch(p + k)

    def fill(self, int64_t[:, ::1] out, uint8_t[:, ::1] ids):
        """Fill out[n_rows, seq_len + 1] and ids[n_rows, seq_len + 1] with the next rows."""
        cdef Py_ssize_t n_rows = out.shape[0], width = out.shape[1], r, col, i, n
        cdef int64_t* row
        cdef uint8_t* rid
        cdef const uint32_t* src
        cdef int64_t left  # tokens of the current document not yet emitted
        cdef int64_t doc
        cdef uint8_t d = 0
        if width != self.seq_len + 1 or ids.shape[0] != n_rows or ids.shape[1] != width:
            raise ValueError("fill: output arrays must both be [n_rows, seq_len + 1]")
        if n_rows == 0:
            return
        with nogil:
            # the current piece lives in locals (src, left, d) so the copy loops see no aliasing with self
            for r in range(n_rows):
                left = 0  # a new piece at every row start
                row = &out[r, 0]
                rid = &ids[r, 0]
                col = 0
                if self.rows > 0:
                    row[0] = self.carry_tok
                    rid[0] = self.carry_id
                    col = 1
                while col < width:
                    if left == 0:
                        d = <uint8_t>self.choose()
                        doc = self.open_doc[d]
                        left = self.lengths[d][doc] - self.open_off[d]
                        src = self.tok[d] + self.starts[d][doc] + self.open_off[d]
                        if self.prefetch:
                            self.prefetch_next(d, left)
                    n = left if left < width - col else width - col
                    for i in range(n):  # uint32 -> int64 widening copy; the compiler vectorises it
                        row[col + i] = src[i]
                    memset(rid + col, d, n)
                    col += n
                    src += n
                    left -= n
                    self.open_off[d] += n
                    self.emitted[d] += n
                    self.total += n
                    if left == 0:  # document done: close it
                        self.open_doc[d] = -1
                        self.open_off[d] = 0
                self.carry_tok = row[width - 1]
                self.carry_id = rid[width - 1]
                self.rows += 1

    def tokens_by_dataset(self):
        return np.array([self.emitted[d] for d in range(self.n_ds)], dtype=np.int64)

    def get_state(self):
        """The position as plain ints and int64 arrays (uint64 generator states bit for bit as int64)."""
        cdef int d
        return {
            "rows": self.rows, "carry_token": self.carry_tok, "carry_id": self.carry_id,
            "open_doc": np.array([self.open_doc[d] for d in range(self.n_ds)], dtype=np.int64),
            "open_offset": np.array([self.open_off[d] for d in range(self.n_ds)], dtype=np.int64),
            "emitted": np.array([self.emitted[d] for d in range(self.n_ds)], dtype=np.int64),
            "pos": np.array([self.pos[d] for d in range(self.n_ds)], dtype=np.int64),
            "passes": np.array([self.passes[d] for d in range(self.n_ds)], dtype=np.int64),
            "pass_rng": np.array([self.pass_rng[d] for d in range(self.n_ds)], dtype=np.uint64).view(np.int64),
        }

    def set_state(self, int64_t rows, int64_t carry_token, int carry_id, int64_t[::1] open_doc,
                  int64_t[::1] open_offset, int64_t[::1] emitted, int64_t[::1] pos, int64_t[::1] passes,
                  uint64_t[::1] pass_rng):
        """Restore a position already validated by interleave_ref.check_state and check_open."""
        cdef int d
        self.rows = rows
        self.carry_tok = carry_token
        self.carry_id = carry_id
        self.total = 0
        for d in range(self.n_ds):
            self.open_doc[d] = open_doc[d]
            self.open_off[d] = open_offset[d]
            self.emitted[d] = emitted[d]
            self.total += emitted[d]
            self.pos[d] = pos[d]
            self.passes[d] = passes[d]
            self.pass_rng[d] = pass_rng[d]
            self.rng[d] = pass_rng[d]
            shuffle(self.perm[d], self.n_docs[d], &self.rng[d])
