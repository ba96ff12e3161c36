"""bench/tokenizers_speed.py's pure-Python BPE baseline gives exactly our BPETokenizer's ids."""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("tokenizers")


def _bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "tokenizers_speed.py"
    spec = importlib.util.spec_from_file_location("mmlm_bench_tokenizers_speed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


EDGE = ["don't we'll I'M 'Ve 's", "  \n\t x  \r\n\r\n   y   ", "naïve café ÉCOLE", "日本語のテキスト",
        "😀👍🏽 a\u200db", "a_b __init__ ._x (1, 2.5e-3)", "e\u0301 combining", "   ", "", "tab\tsep\x0bv\x0cf",
        "def f(x):\n    return x ** 2  # square\n"]


def test_byte_symbols_match_hf_alphabet():
    from tokenizers import pre_tokenizers

    table = _bench()._byte_symbols()
    assert len(set(table)) == 256 and set(table) == set(pre_tokenizers.ByteLevel.alphabet())


def test_pure_python_bpe_matches_ours():
    from mmlm.tokenizers.text import BPETokenizer

    bench = _bench()
    corpus = ["The quick brown fox jumps over the lazy dog. " * 20, "def add(a, b):\n    return a + b\n" * 20,
              "Ünïcödé tëxt, 数字 12345 and symbols ->=<- !!" * 10] + EDGE
    tok = BPETokenizer.train(corpus, vocab_size=400)
    enc = bench.PurePythonBPE(tok._tok.to_str())
    extra = ["x² ½ Ⅻ ٣ 𝟙", "\x00\x01\x1c\x1f\x85\xa0\u2028\u3000 end"] if enc.exact_split else []
    for text in corpus + extra:
        assert enc.encode(text) == tok.encode(text).tolist(), repr(text)
    assert enc.cache  # words were cached, and cached results stay right
    for text in corpus:
        assert enc.encode(text) == tok.encode(text).tolist()
