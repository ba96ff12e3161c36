"""Training data and objectives; `make_root` here is the tiny data root the other train tests use."""
from pathlib import Path

import numpy as np
import pytest
import torch

from mmlm.data import PAD_ID, Mixture, heldout_split, parse_mix
from mmlm.errors import MmlmError
from mmlm.objectives import CausalMasked, make_objective
from mmlm.shards import Dataset, DatasetWriter
from mmlm.train import lr_at
from mmlm.vocab import Vocab


def make_root(root, n_docs=60, seed=0, datasets=(("text", "text", 3), ("image", "image", 5)), extra_space=None):
    """A data root with learnable toy datasets: each document is an arithmetic pattern of ids in its
    modality's range, inside its sentinels, closed by <eos>. Made with Vocab + DatasetWriter only."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    v = Vocab()
    v.add_space("text", 120, {"kind": "test"})
    v.add_space("image", 64, {"kind": "test"})
    if extra_space:
        v.add_space(extra_space, 10, {"kind": "test"})
    v.save(root / "vocab.json")
    rng = np.random.default_rng(seed)
    for name, mod, period in datasets:
        lo, hi = v.range_of(mod)
        with DatasetWriter(root / name) as w:
            for _ in range(n_docs):
                n = int(rng.integers(20, 120))
                body = lo + (np.arange(n) * period + int(rng.integers(0, period))) % (hi - lo + 1)
                w.add([v.begin(mod), *body.tolist(), v.end(mod), v.eos])
            w.meta.update(kind=mod)
    return v


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("data")
    make_root(r)
    return r


def test_parse_mix():
    assert parse_mix("text=0.5, code=1.5") == {"text": 0.5, "code": 1.5}
    assert parse_mix("text,code") == {"text": 1.0, "code": 1.0}
    for bad, msg in [("text=0", "positive"), ("text=-1", "positive"), ("text=abc", "not a number"),
                     ("text=nan", "positive"), ("", "no datasets"), ("text=1,text=2", "twice"), ("=1", "without")]:
        with pytest.raises(MmlmError, match=msg):
            parse_mix(bad)


def test_mixture_rejects_unknown_dataset_and_missing_root(root, tmp_path):
    with pytest.raises(MmlmError, match="no dataset 'code'.*has: image, text"):
        Mixture.open(root, {"text": 1, "code": 1})
    with pytest.raises(MmlmError, match="no such folder"):
        Mixture.open(tmp_path / "nope", {"text": 1})


def test_heldout_split_fixed_by_split_seed(root):
    ds = Dataset(root / "text")
    a, b = heldout_split(ds, 500, 0), heldout_split(ds, 500, 0)
    assert np.array_equal(a.eval, b.eval) and np.array_equal(a.train, b.train)
    assert len(np.intersect1d(a.eval, a.train)) == 0 and len(a.eval) + len(a.train) == len(ds)
    assert 1 <= len(a.eval) <= len(ds) // 10
    assert not np.array_equal(heldout_split(ds, 500, 1).eval, a.eval)


def test_eval_rows_hold_the_heldout_tokens(root):
    m = Mixture.open(root, {"text": 1, "image": 1}, eval_tokens=300)
    tokens, ids = m.eval_rows(1, seq_len=64)
    assert tokens.shape == ids.shape and tokens.shape[1] == 65
    real = ids != PAD_ID
    assert np.all(ids[real] == 1)
    # rows overlap by one token, and the stream is the held-out documents in order
    assert np.array_equal(tokens[1:, 0], tokens[:-1, -1])
    stream = np.concatenate([m.datasets[1].doc(int(k)) for k in m.splits[1].eval])
    flat = np.concatenate([tokens[0], *[r[1:] for r in tokens[1:]]])[: real.sum() - (len(tokens) - 1)]
    assert np.array_equal(flat, stream[: len(flat)])
    assert real.sum() - (len(tokens) - 1) == min(len(stream), 301)


def test_interleaver_draws_only_training_documents(root):
    m = Mixture.open(root, {"text": 1, "image": 1}, eval_tokens=300)
    il = m.interleaver(seq_len=32, seed=0)
    rows, ids = il.next_rows(40)
    assert rows.shape == (40, 33) and set(np.unique(ids)) == {0, 1}
    held = {tuple(m.datasets[0].doc(int(k))) for k in m.splits[0].eval}
    stream = np.concatenate([rows[0], *[r[1:] for r in rows[1:]]])
    text = stream[np.concatenate([ids[0], *[r[1:] for r in ids[1:]]]) == 0]
    s = text.tobytes()
    for doc in held:
        if len(doc) > 40:
            assert np.asarray(doc, dtype=np.int64).tobytes() not in s


def _undo_cm3(piece, vocab):
    """Rebuild the original document from a CM3-transformed one (checks the format)."""
    masks = {vocab.mask(i): i for i in range(16)}
    eos = vocab.eos
    closed = piece[-1] == eos
    body = list(piece[:-1] if closed else piece)
    first = next(j for j, t in enumerate(body) if t in masks)
    # the tail starts at the second occurrence of <mask:0>
    tail_at = [j for j, t in enumerate(body) if t == vocab.mask(0)][1]
    head, tail = body[:tail_at], body[tail_at:]
    spans, cur = {}, None
    for t in tail:
        if t in masks:
            cur = masks[t]
            spans[cur] = []
        else:
            spans[cur].append(t)
    out = []
    for t in head:
        out.extend(spans[masks[t]] if t in masks else [t])
    assert first < tail_at
    return out + ([eos] if closed else [])


def test_cm3_moves_spans_to_the_end_behind_sentinels():
    v = Vocab()
    v.add_space("text", 100, {})
    obj = CausalMasked(v, seed=3)
    lo = v.offset("text")
    docs = [list(range(lo, lo + 30)) + [v.eos], list(range(lo + 40, lo + 60)) + [v.eos]]
    row = np.array(docs[0] + docs[1], dtype=np.int64)
    (tok, dsid), w = obj.transform_row(row, np.zeros(len(row), np.uint8))
    # each document became body + <mask:i> span ... + <eos>: two more tokens per span
    cut = int(np.flatnonzero(tok == v.eos)[0]) + 1
    pieces = [tok[:cut], tok[cut:]]
    for piece, doc in zip(pieces, docs):
        assert _undo_cm3(list(piece), v) == doc
        n_masks = int(np.isin(piece, [v.mask(i) for i in range(16)]).sum())
        assert n_masks % 2 == 0 and len(piece) == len(doc) + n_masks
    # placeholders in the body (first occurrence of each sentinel) weigh 0, nothing else does
    zero = np.flatnonzero(w == 0)
    assert len(zero) == int(np.isin(tok, [v.mask(i) for i in range(16)]).sum()) // 2
    assert all(tok[z] in [v.mask(i) for i in range(16)] for z in zero)


def test_cm3_batch_keeps_shape_and_is_seeded():
    v = Vocab()
    v.add_space("text", 100, {})
    rng = np.random.default_rng(0)
    tokens = rng.integers(v.offset("text"), v.size, size=(4, 65))
    tokens[:, 20] = v.eos
    ids = np.zeros_like(tokens, dtype=np.uint8)
    ids[:, 40:] = 1
    a = make_objective("cm3", v, 7)(tokens, ids)
    b = make_objective("cm3", v, 7)(tokens, ids)
    assert a.inputs.shape == (4, 64) and a.weights.shape == (4, 64)
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.weights, b.weights)
    assert np.array_equal(a.inputs[:, 1:], a.targets[:, :-1])
    assert (a.weights == 0).any() and not np.array_equal(a.inputs, tokens[:, :-1])
    # the dataset ids move with their tokens: every piece keeps its own id
    assert set(np.unique(a.ids)) == {0, 1}
    c = make_objective("clm", v, 7)(tokens, ids)
    assert c.weights is None and np.array_equal(c.targets, tokens[:, 1:])


def test_torch_aggregation_equals_numba_kernel():
    from mmlm.kernels.aggregate import loss_by_dataset, loss_by_dataset_torch

    g = torch.Generator().manual_seed(0)
    losses = torch.rand(5000, generator=g) * 8
    ids = torch.randint(0, 3, (5000,), generator=g, dtype=torch.uint8)
    mask = (torch.rand(5000, generator=g) > 0.2).float()
    for m in (None, mask):
        s1, c1 = loss_by_dataset(losses, ids, 3, mask=m)
        s2, c2 = loss_by_dataset_torch(losses, ids, 3, mask=m)
        assert np.array_equal(c1, c2.numpy())
        np.testing.assert_allclose(s1, s2.numpy(), rtol=1e-12)
        ref = [losses[(ids == d) & ((m if m is not None else torch.ones(5000)) > 0)].double().sum().item() for d in range(3)]
        np.testing.assert_allclose(s1, ref, rtol=1e-9)


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    lrs = [lr_at(s, 1.0, 10, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.1 + 0.9 / 90)
