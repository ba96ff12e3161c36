"""The demo corpus: its sources (fast checks) and the whole build (slow)."""
import json

import numpy as np
import pytest

from mmlm.demo_data import common, speech, stdlib
from mmlm.demo_data import images as demo_images
from mmlm.errors import MmlmError


def test_digits_are_read_like_sklearn_without_importing_it():
    images, labels = demo_images.digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 255
    assert sorted(set(labels.tolist())) == list(range(10))


def test_espeak_speaks_a_sentence():
    pytest.importorskip("espeakng_loader")
    tts = speech.Espeak.get()
    pcm = tts.say("The quick brown fox.", "en-us", rate=170, pitch=50)
    assert tts.sample_rate == 22050 and pcm.dtype == np.int16
    assert 0.5 < pcm.size / tts.sample_rate < 3.0 and np.abs(pcm).max() > 1000
    with pytest.raises(MmlmError, match="no voice"):
        tts.say("x", "no-such-voice", rate=170, pitch=50)


def test_sentences_for_speech_are_short_and_plain():
    sentences = stdlib.sentences(common.stdlib_files(), 50)
    assert len(set(sentences)) == 50
    for s in sentences:
        assert s.endswith(".") and 4 <= len(s.split()) <= 14 and s.isascii()


@pytest.mark.slow
def test_demo_builds_all_seven_and_a_rerun_keeps_them(tmp_path):
    from mmlm.shards import Dataset
    from mmlm.demo_build import build_demo
    from mmlm.dataset_build import data_info
    from mmlm.media import decode_document

    result = build_demo(tmp_path / "demo")
    info = data_info(tmp_path / "demo")
    d = info["datasets"]
    assert set(d) == {"text", "code", "image", "image-text", "speech", "speech-text", "molecule"}
    assert d["text"]["tokens"] > 400_000 and d["code"]["tokens"] > 800_000
    assert d["image"]["documents"] >= 1000 and d["image-text"]["documents"] >= 1000
    assert d["speech"]["documents"] >= 300 and d["speech-text"]["documents"] >= 300
    assert d["molecule"]["documents"] >= 5000
    for name in d:
        Dataset(tmp_path / "demo" / name).verify()
        decode_document(tmp_path / "demo", name, 0, tmp_path / f"out-{name}")
    rows = (tmp_path / "demo" / "raw" / "image-text" / "manifest.jsonl").read_text().splitlines()
    assert json.loads(rows[0])["text"]
    again = build_demo(tmp_path / "demo")  # everything exists: kept, not rebuilt
    assert all(r.get("kept") for r in again["datasets"].values())
    assert again["seconds"] < result["seconds"]
