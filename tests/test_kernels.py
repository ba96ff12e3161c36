"""Kernels: the Cython interleaver and the Numba aggregation against their reference twins and their contracts."""
import json

import numpy as np
import pytest
import torch

from mmlm.errors import MmlmError
from mmlm.kernels import aggregate, aggregate_ref
from mmlm.kernels.interleave import Interleaver
from mmlm.kernels.interleave_ref import InterleaverRef

# ---------------------------------------------------------------- interleaver


def make_dataset(rng, d, n_docs, max_len):
    """Documents whose tokens say where they come from: token = (d * 1000 + k) * 1000 + position, k being
    the document's index in the returned starts/lengths (stored out of order, with gaps between them)."""
    lengths = rng.integers(1, max_len + 1, n_docs)
    if n_docs > 1:
        lengths[rng.integers(n_docs)] = 1  # always a single-token document
    gaps = rng.integers(0, 3, n_docs)
    starts = np.cumsum(gaps + np.concatenate([[0], lengths[:-1]]))
    tokens = np.zeros(int(starts[-1] + lengths[-1]), dtype=np.uint32)
    order = rng.permutation(n_docs)
    starts, lengths = starts[order].astype(np.int64), lengths[order].astype(np.int64)
    for k, (s, n) in enumerate(zip(starts, lengths)):
        tokens[s:s + n] = (d * 1000 + k) * 1000 + np.arange(n)
    return tokens, starts, lengths


def random_mixture(seed):
    rng = np.random.default_rng(seed)
    n_ds = int(rng.integers(1, 8))
    seq_len = int(rng.choice([1, 2, 7, 16, 33]))
    datasets = [make_dataset(rng, d, int(rng.integers(1, 12)), int(rng.choice([1, 5, 40, 90])))
                for d in range(n_ds)]
    weights = rng.random(n_ds) + 0.05
    return datasets, weights, seq_len, rng


def stream(tokens):
    """Rows -> the token stream they carry (each row after the first repeats its predecessor's last token)."""
    return np.concatenate([tokens[0], tokens[1:, 1:].ravel()]) if len(tokens) else tokens.ravel()


@pytest.mark.parametrize("seed", range(40))
def test_twins_agree_token_for_token(seed):
    datasets, weights, seq_len, rng = random_mixture(seed)
    fast, ref = Interleaver(datasets, weights, seq_len, seed), InterleaverRef(datasets, weights, seq_len, seed)
    for _ in range(8):
        n = int(rng.integers(0, 9))
        (ta, ia), (tb, ib) = fast.next_rows(n), ref.next_rows(n)
        assert ta.shape == ia.shape == (n, seq_len + 1) and ta.dtype == np.int64 and ia.dtype == np.uint8
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(fast.tokens_by_dataset, ref.tokens_by_dataset)
    sa, sb = fast.state_dict(), ref.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_twins_agree_on_datasets_big_enough_for_prefetching():
    # datasets over 1 MB of tokens take the Cython core's prefetching path; a small one keeps starting new passes
    rng = np.random.default_rng(9)
    big = np.arange(300_000, dtype=np.uint32)
    lengths = rng.integers(1, 3000, 200)
    starts = rng.integers(0, big.size - 3000, 200)
    datasets = [(big, starts, lengths), make_dataset(rng, 1, 3, 40), (big, starts[:50] + 7, lengths[:50])]
    fast, ref = Interleaver(datasets, [0.6, 0.1, 0.3], 1000, 4), InterleaverRef(datasets, [0.6, 0.1, 0.3], 1000, 4)
    for n in (1, 7, 30):
        (ta, ia), (tb, ib) = fast.next_rows(n), ref.next_rows(n)
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(ia, ib)
    assert fast.state_dict()["passes"][1] > 10


@pytest.mark.parametrize("seed", range(12))
def test_rows_overlap_ids_match_and_every_document_once_per_pass(seed):
    datasets, weights, seq_len, rng = random_mixture(seed)
    il = Interleaver(datasets, weights, seq_len, seed + 100)
    tokens, ids = il.next_rows(int(rng.integers(150, 300)))
    np.testing.assert_array_equal(tokens[1:, 0], tokens[:-1, -1])
    np.testing.assert_array_equal(ids[1:, 0], ids[:-1, -1])
    toks, sid = stream(tokens), stream(ids)
    assert len(toks) == il.tokens_by_dataset.sum()
    np.testing.assert_array_equal(np.bincount(sid, minlength=len(datasets)), il.tokens_by_dataset)
    for d, (_, starts, lengths) in enumerate(datasets):
        mine = toks[sid == d]
        assert np.all(mine // 1_000_000 == d)  # ids name the dataset each token came from
        doc, position = (mine // 1000) % 1000, mine % 1000
        # the sub-stream is whole documents back to back (the last one may be cut off by the end of the run)
        begins = np.flatnonzero(position == 0)
        assert begins[0] == 0
        drawn = doc[begins]
        for b, e, k in zip(begins, list(begins[1:]) + [len(mine)], drawn):
            assert np.all(doc[b:e] == k)
            np.testing.assert_array_equal(position[b:e], np.arange(e - b))
            assert e - b == lengths[k] or e == len(mine)
        # each complete pass is a permutation of all documents, and passes differ in order
        k = len(starts)
        for p in range(len(drawn) // k):
            assert sorted(drawn[p * k:(p + 1) * k].tolist()) == list(range(k))
        assert len(set(drawn[len(drawn) // k * k:].tolist())) == len(drawn) % k


def test_fresh_permutation_each_pass():
    rng = np.random.default_rng(0)
    il = Interleaver([make_dataset(rng, 0, 50, 3)], [1.0], 8, seed=3)
    tokens, _ = il.next_rows(200)
    toks = stream(tokens)
    drawn = ((toks // 1000) % 1000)[toks % 1000 == 0]
    passes = [tuple(drawn[i:i + 50]) for i in range(0, len(drawn) - 49, 50)]
    assert len(passes) >= 3 and len(set(passes)) == len(passes)
    assert passes[0] != tuple(sorted(passes[0]))


@pytest.mark.parametrize("seed", range(20))
def test_token_shares_track_weights_within_one_document(seed):
    rng = np.random.default_rng(1000 + seed)
    n_ds = int(rng.integers(2, 8))
    max_lens = rng.choice([1, 3, 50, 300], n_ds)
    datasets = [make_dataset(rng, d, int(rng.integers(1, 30)), int(m)) for d, m in enumerate(max_lens)]
    weights = rng.random(n_ds) ** 3 + 1e-3  # some very skewed mixtures
    il = Interleaver(datasets, weights, int(rng.integers(1, 200)), seed)
    longest = max(int(ln.max()) for _, _, ln in datasets)
    share = weights / weights.sum()
    for _ in range(30):
        il.next_rows(int(rng.integers(1, 40)))
        got = il.tokens_by_dataset
        assert np.all(np.abs(got - share * got.sum()) <= longest), (got, share * got.sum(), longest)


@pytest.mark.parametrize("seed", range(10))
def test_token_shares_hold_within_one_row_whatever_the_document_lengths(seed):
    """Documents far longer than a row are continued in later rows, so at every row boundary each dataset
    is within one row (seq_len + 1 tokens) of its share, twins alike."""
    rng = np.random.default_rng(2000 + seed)
    n_ds = int(rng.integers(2, 5))
    datasets = [make_dataset(rng, d, int(rng.integers(1, 6)), int(rng.choice([5, 400, 900]))) for d in range(n_ds)]
    weights = rng.random(n_ds) + 0.1
    seq_len = int(rng.choice([4, 16, 33]))
    share = weights / weights.sum()
    for cls in (Interleaver, InterleaverRef):
        il = cls(datasets, weights, seq_len, seed)
        for _ in range(25):
            il.next_rows(int(rng.integers(1, 6)))
            got = il.tokens_by_dataset
            assert np.all(np.abs(got - share * got.sum()) <= seq_len + 1), (cls.__name__, got, share * got.sum())


def test_fifty_fifty_at_a_small_budget_with_long_documents():
    """The issue's case: text+code 50/50 at 8,192 tokens, documents of thousands of tokens (whole documents
    at once drew no code at all): now each share is within 2%."""
    def doc(n):
        return (np.arange(8 * n, dtype=np.uint32), np.arange(8) * n, np.full(8, n))
    datasets = [doc(900), doc(6000)]  # eight documents each, of 900 and 6,000 tokens
    il = Interleaver(datasets, [0.5, 0.5], 128, 0)
    il.next_rows(8192 // 128)
    got = il.tokens_by_dataset
    assert np.all(np.abs(got / got.sum() - 0.5) <= 0.02), got


def test_resume_from_state_equals_uninterrupted_stream():
    datasets, weights, seq_len, _ = random_mixture(7)
    whole = Interleaver(datasets, weights, seq_len, 11)
    expected = whole.next_rows(120)
    for cls_a, cls_b in [(Interleaver, Interleaver), (Interleaver, InterleaverRef), (InterleaverRef, Interleaver)]:
        for k in (0, 1, 37, 119):
            a = cls_a(datasets, weights, seq_len, 11)
            first = a.next_rows(k)
            state = a.state_dict()
            assert all(isinstance(v, int) or (isinstance(v, np.ndarray) and v.dtype in (np.int64, np.float64))
                       for v in state.values())
            # through JSON, as a trainer might store it
            state = json.loads(json.dumps({key: v.tolist() if isinstance(v, np.ndarray) else v
                                           for key, v in state.items()}))
            b = cls_b(datasets, weights, seq_len, 999)  # the seed comes from the state
            b.load_state_dict(state)
            rest = b.next_rows(120 - k)
            np.testing.assert_array_equal(np.concatenate([first[0], rest[0]]), expected[0])
            np.testing.assert_array_equal(np.concatenate([first[1], rest[1]]), expected[1])
            np.testing.assert_array_equal(b.tokens_by_dataset, whole.tokens_by_dataset)


def test_seed_changes_order_and_memmap_input(tmp_path):
    rng = np.random.default_rng(5)
    tokens, starts, lengths = make_dataset(rng, 0, 40, 20)
    path = tmp_path / "tokens.bin"
    tokens.tofile(path)
    mm = np.memmap(path, dtype=np.uint32, mode="r")
    a = Interleaver([(mm, starts, lengths)], [1.0], 32, seed=1).next_rows(10)[0]
    b = Interleaver([(tokens, starts, lengths)], [1.0], 32, seed=1).next_rows(10)[0]
    c = Interleaver([(tokens, starts, lengths)], [1.0], 32, seed=2).next_rows(10)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def _one():
    return np.arange(10, dtype=np.uint32), np.array([0, 5]), np.array([5, 5])


@pytest.mark.parametrize("args, words", [
    (([], [], 8, 0), "no datasets"),
    (([(np.arange(4, dtype=np.uint32), np.array([], np.int64), np.array([], np.int64))], [1], 8, 0), "no documents"),
    (([_one()], [0.0], 8, 0), "positive"),
    (([_one()], [-1.0], 8, 0), "positive"),
    (([_one()], [float("nan")], 8, 0), "positive"),
    (([_one(), _one()], [1.0], 8, 0), "2 datasets"),
    (([_one()], [1.0], 0, 0), "seq_len"),
    (([_one()], [1.0], 2.5, 0), "seq_len"),
    (([(np.arange(10, dtype=np.uint32), np.array([0, 5]), np.array([5]))], [1], 8, 0), "2 starts but 1 lengths"),
    (([(np.arange(10, dtype=np.uint32), np.array([0, 6]), np.array([5, 5]))], [1], 8, 0), "document 1"),
    (([(np.arange(10, dtype=np.uint32), np.array([0, 5]), np.array([5, 0]))], [1], 8, 0), "length 0"),
    (([_one()] * 257, [1.0] * 257, 8, 0), "at most 256"),
])
@pytest.mark.parametrize("cls", [Interleaver, InterleaverRef])
def test_bad_inputs_raise_one_line(cls, args, words):
    with pytest.raises(MmlmError, match=words) as e:
        cls(*args)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cls", [Interleaver, InterleaverRef])
def test_state_from_other_datasets_is_refused(cls):
    a = cls([_one()], [1.0], 8, 0)
    a.next_rows(3)
    state = a.state_dict()
    with pytest.raises(MmlmError, match="documents"):
        cls([(np.arange(10, dtype=np.uint32), np.array([0]), np.array([10]))], [1.0], 8, 0).load_state_dict(state)
    with pytest.raises(MmlmError, match="seq_len"):
        cls([_one()], [1.0], 9, 0).load_state_dict(state)
    with pytest.raises(MmlmError, match="missing key 'rows'"):
        cls([_one()], [1.0], 8, 0).load_state_dict({k: v for k, v in state.items() if k != "rows"})
    with pytest.raises(MmlmError, match="n_rows"):
        a.next_rows(-1)

# ---------------------------------------------------------------- aggregation


def random_losses(seed, shape, n_ds):
    rng = np.random.default_rng(seed)
    losses = (rng.random(shape, dtype=np.float32) * 8).astype(np.float32)
    ids = rng.integers(0, n_ds, shape).astype(np.uint8)
    if rng.random() < 0.5:  # runs of one dataset, as the interleaver makes them
        ids = np.repeat(ids.ravel(), 16)[: ids.size].reshape(shape)
    mask = rng.random(shape) < 0.8
    return losses, ids, mask


@pytest.mark.parametrize("seed", range(15))
def test_aggregation_twins_agree_exactly(seed):
    rng = np.random.default_rng(seed)
    n_ds = int(rng.integers(1, 8))
    B, T = int(rng.integers(1, 9)), int(rng.integers(1, 300))
    n_buckets = int(rng.choice([1, 3, 8, 500]))  # more buckets than positions is allowed
    losses, ids, mask = random_losses(seed, (B, T), n_ds)
    for m in (None, mask, mask.astype(np.float32)):
        for fast, ref in [(aggregate.loss_by_dataset(losses.ravel(), ids.ravel(), n_ds, mask=m),
                           aggregate_ref.loss_by_dataset(losses.ravel(), ids.ravel(), n_ds, mask=m)),
                          (aggregate.loss_by_dataset_position(losses, ids, n_ds, n_buckets, mask=m),
                           aggregate_ref.loss_by_dataset_position(losses, ids, n_ds, n_buckets, mask=m))]:
            assert fast[0].dtype == np.float64 and fast[1].dtype == np.int64
            np.testing.assert_array_equal(fast[0], ref[0])
            np.testing.assert_array_equal(fast[1], ref[1])
    kept = mask.sum()
    assert aggregate.loss_by_dataset(losses, ids, n_ds, mask=mask)[1].sum() == kept


def test_position_buckets_by_hand():
    T, n_buckets = 10, 3  # buckets: t 0-3 -> 0, t 4-6 -> 1, t 7-9 -> 2
    losses = np.arange(2 * T, dtype=np.float32).reshape(2, T)
    ids = np.array([[0] * T, [1] * 5 + [0] * 5], dtype=np.uint8)
    sums, counts = aggregate.loss_by_dataset_position(losses, ids, 2, n_buckets)
    expect_sums, expect_counts = np.zeros((2, 3)), np.zeros((2, 3), dtype=np.int64)
    for b in range(2):
        for t in range(T):
            expect_sums[ids[b, t], t * n_buckets // T] += losses[b, t]
            expect_counts[ids[b, t], t * n_buckets // T] += 1
    np.testing.assert_array_equal(sums, expect_sums)
    np.testing.assert_array_equal(counts, expect_counts)
    np.testing.assert_array_equal(counts, [[4, 5, 6], [4, 1, 0]])


def test_aggregation_takes_torch_tensors_and_torch_twin_agrees():
    losses, ids, mask = random_losses(3, (4, 64), 5)
    want = aggregate_ref.loss_by_dataset(losses, ids, 5, mask=mask)
    got = aggregate.loss_by_dataset(torch.from_numpy(losses), torch.from_numpy(ids), 5, mask=torch.from_numpy(mask))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    sums, counts = aggregate.loss_by_dataset_torch(torch.from_numpy(losses), torch.from_numpy(ids), 5,
                                                   mask=torch.from_numpy(mask))
    np.testing.assert_allclose(sums.numpy(), want[0], rtol=1e-12)
    np.testing.assert_array_equal(counts.numpy(), want[1])
    padded = np.where(mask, ids, 255).astype(np.uint8)  # masked tokens may carry any id
    sums, counts = aggregate.loss_by_dataset_torch(torch.from_numpy(losses), torch.from_numpy(padded), 5,
                                                   mask=torch.from_numpy(mask).float())
    np.testing.assert_allclose(sums.numpy(), want[0], rtol=1e-12)
    np.testing.assert_array_equal(counts.numpy(), want[1])
    got = aggregate.loss_by_dataset(torch.from_numpy(losses).bfloat16(), torch.from_numpy(ids).long(), 5)
    np.testing.assert_array_equal(got[1], aggregate_ref.loss_by_dataset(losses, ids, 5)[1])


def test_aggregation_bad_inputs():
    losses, ids, _ = random_losses(1, (2, 50), 3)
    ids[1, 7] = 3
    with pytest.raises(MmlmError, match="dataset id 3 at flat index 57 is out of range for 3 datasets"):
        aggregate.loss_by_dataset(losses, ids, 3)
    with pytest.raises(MmlmError, match="out of range"):
        aggregate.loss_by_dataset_position(losses, ids, 3, 4)
    with pytest.raises(MmlmError, match="out of range"):
        aggregate.loss_by_dataset(losses, ids.astype(np.int64) + 300, 3)
    with pytest.raises(MmlmError, match="negative"):
        aggregate.loss_by_dataset(losses, ids.astype(np.int64) - 5, 3)
    with pytest.raises(MmlmError, match="differ in shape"):
        aggregate.loss_by_dataset(losses, ids[:1], 3)
    with pytest.raises(MmlmError, match="n_buckets"):
        aggregate.loss_by_dataset_position(losses, ids, 3, 0)
    with pytest.raises(MmlmError, match="n_datasets"):
        aggregate.loss_by_dataset(losses, ids, 0)
    mask = np.ones(ids.shape, dtype=bool)
    mask[1, 7] = False  # a masked token's id is ignored (padding may carry any id)
    for agg in (aggregate, aggregate_ref):
        got = agg.loss_by_dataset_position(losses, ids, 3, 2, mask=mask)
        assert got[1].sum() == ids.size - 1
    with pytest.raises(MmlmError, match="must lie in 0..2"):
        aggregate_ref.loss_by_dataset(losses, ids, 3)
