"""--tensorboard: the same scalars as metrics.jsonl, grouped by prefix (skipped without the extra)."""
import json

import pytest

from mmlm.train import TrainConfig, train
from test_train_data import make_root


def test_tensorboard_has_the_metrics_jsonl_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_root(tmp_path / "data")
    train(TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "r"), mix="text=1,image=1", size="pico", seq_len=32,
                      batch_tokens=512, tokens=512 * 4, eval_tokens=256, eval_every=2, threads=1, tensorboard=True))
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr", "grad_norm", "loss/text", "loss/image", "eval/text", "speed/mfu", "speed/tokens_per_s"} <= tags
    for tag in ("loss", "loss/image", "eval/text", "speed/mfu"):
        want = [(m["step"], m[tag]) for m in lines if tag in m]
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)  # float32 in the event file
