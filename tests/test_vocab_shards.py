"""The on-disk formats every other module reads: vocab.json, token datasets, atomic writes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import assert_bad_json_rejected

from mmlm import atomic
from mmlm.errors import MmlmError
from mmlm.shards import Dataset, DatasetWriter, list_datasets
from mmlm.vocab import SEGMENT_MODALITIES, Vocab


def test_vocab_ranges_are_appended_and_never_overlap(tmp_path):
    v = Vocab()
    n_special = len(v.special)
    assert sorted(v.special.values()) == list(range(n_special))
    first_text = v.add_space("text", 100, {"kind": "bpe"})
    first_image = v.add_space("image", 16, {"kind": "image"})
    assert first_text == n_special and first_image == n_special + 100
    assert v.size == n_special + 116
    assert v.range_of("code") == v.range_of("text")  # code shares the text BPE
    assert v.offset("image") == first_image
    for m in SEGMENT_MODALITIES:  # every segment modality has distinct begin/end sentinels
        assert v.begin(m) != v.end(m)
    assert v.space_of_id(first_text + 99) == "text"
    assert v.space_of_id(first_image) == "image"
    assert v.space_of_id(v.eos) is None
    with pytest.raises(MmlmError, match="already has"):
        v.add_space("text", 5, {})
    with pytest.raises(MmlmError, match="no 'speech' tokens"):
        v.range_of("speech")

    v.save(tmp_path / "vocab.json")
    w = Vocab.load(tmp_path / "vocab.json")
    assert w.to_json() == v.to_json()
    # adding a space later keeps every existing id
    w.add_space("molecule", 7, {"kind": "smiles-regex"})
    assert w.ranges["text"] == v.ranges["text"] and w.ranges["image"] == v.ranges["image"]
    assert w.ranges["molecule"][0] == v.size


def test_vocab_rejects_other_versions_and_garbage(tmp_path):
    assert_bad_json_rejected(Vocab.load, tmp_path / "vocab.json",
                             {"format": "mmlm-vocab/999", "special": {}, "ranges": {}, "tokenizers": {}}, "{not json",
                             tmp_path / "missing.json", "no vocabulary")


def test_dataset_round_trip_and_checksums(tmp_path):
    docs = [np.arange(5), np.array([7]), np.arange(100, 140)]
    with DatasetWriter(tmp_path / "ds") as w:
        for d in docs:
            w.add(d)
        w.meta.update(kind="text")
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 3 and ds.kind == "text"
    assert ds.meta["tokens"] == 46 and ds.meta["documents"] == 3
    for k, d in enumerate(docs):
        np.testing.assert_array_equal(ds.doc(k), d)
    ds.verify()
    with pytest.raises(MmlmError, match="no document 3"):
        ds.doc(3)
    assert list_datasets(tmp_path) == ["ds"]
    # flip one byte: the checksum notices
    raw = bytearray((tmp_path / "ds" / "tokens.bin").read_bytes())
    raw[0] ^= 1
    (tmp_path / "ds" / "tokens.bin").write_bytes(bytes(raw))
    with pytest.raises(MmlmError, match="checksum mismatch"):
        Dataset(tmp_path / "ds").verify()
    # cut the file: the size check notices on open
    (tmp_path / "ds" / "tokens.bin").write_bytes(bytes(raw[:-4]))
    with pytest.raises(MmlmError, match="size does not match"):
        Dataset(tmp_path / "ds")
    (tmp_path / "ds" / "offsets.npy").write_bytes(b"garbage")
    with pytest.raises(MmlmError, match="unreadable dataset"):
        Dataset(tmp_path / "ds")
    np.save(tmp_path / "ds" / "offsets.npy", np.array([0, 5, 3]))
    with pytest.raises(MmlmError, match="not a document index"):
        Dataset(tmp_path / "ds")
    (tmp_path / "ds" / "tokens.bin").unlink()
    with pytest.raises(MmlmError, match="unreadable dataset"):
        Dataset(tmp_path / "ds")


def test_failed_or_empty_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "ds") as w:
            w.add([1, 2, 3])
            raise RuntimeError("crash mid-way")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MmlmError, match="empty input"):
        with DatasetWriter(tmp_path / "ds"):
            pass
    assert not (tmp_path / "ds").exists()
    assert list_datasets(tmp_path) == []
    with pytest.raises(MmlmError, match="not a dataset"):
        Dataset(tmp_path / "ds")


def test_dataset_folder_replaced_whole(tmp_path):
    for n in (3, 5):
        with DatasetWriter(tmp_path / "ds") as w:
            w.add(np.arange(n))
    ds = Dataset(tmp_path / "ds")
    np.testing.assert_array_equal(ds.doc(0), np.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert oct((tmp_path / "ds").stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "a.json"
    atomic.write_json(p, {"x": 1})
    with pytest.raises(ValueError):
        with atomic.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise ValueError
    assert json.loads(p.read_text()) == {"x": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]


def test_remove_if_stale_only_removes_dead_writers(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".ds.tmp-{dead_pid}-abc"
    stale.mkdir()
    (stale / "tokens.bin").write_bytes(b"1234")
    live = tmp_path / f".ds.tmp-{os.getppid()}-xyz"
    live.mkdir()
    assert atomic.remove_if_stale(stale) is True and not stale.exists()
    assert atomic.remove_if_stale(live) is False and live.exists()
