"""A tiny real sweep (`mmlm sweep`, pico models on CPU) analysed end to end, and the modality test
on a model it trained. Slow: about a minute of CPU."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_analyze import run_cli

pytestmark = pytest.mark.slow


def make_data(root: Path) -> None:
    """Three small datasets: `a` and `a2` draw from one process over text ids, `b` from another over
    image ids (so under a model of `a`, `b` should be a distinct modality and `a2` not)."""
    from mmlm.shards import DatasetWriter
    from mmlm.vocab import Vocab

    root.mkdir(parents=True)
    v = Vocab()
    t0 = v.add_space("text", 64, {"kind": "test"})
    i0 = v.add_space("image", 64, {"kind": "test"})
    v.save(root / "vocab.json")
    rng = np.random.default_rng(0)
    for name, modality, first, stride in (("a", "text", t0, 1), ("a2", "text", t0, 1), ("b", "image", i0, 7)):
        with DatasetWriter(root / name) as w:
            for _ in range(200):
                n = int(rng.integers(20, 60))
                body = first + (int(rng.integers(0, 64)) + stride * np.arange(n)) % 64
                noise = rng.random(n) < 0.1
                body[noise] = first + rng.integers(0, 64, int(noise.sum()))
                w.add([v.begin(modality), *body.tolist(), v.end(modality), v.eos])
            w.meta.update(kind=modality)


GRID = """
data = "{data}"
sizes = ["pico"]
tokens = [{tokens}]
{mixtures}
[train]
seq_len = 32
batch_tokens = {batch}
device = "cpu"
threads = 1
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    make_data(tmp / "data")
    # one grid for the uni-modal and mixed runs, a second adds the mixed run at another batch size
    # (g0: the uni-modal runs at the mixed runs' per-dataset tokens, which the competition ratio compares with)
    grids = {
        "g0.toml": GRID.format(data=tmp / "data", batch=256, tokens="1.5e4", mixtures='[mixtures.a]\na = 1\n[mixtures.b]\nb = 1\n'),
        "g1.toml": GRID.format(data=tmp / "data", batch=256, tokens="3e4", mixtures='[mixtures.a]\na = 1\n[mixtures.b]\nb = 1\n'
                                                                        '[mixtures."a+b"]\na = 0.5\nb = 0.5\n'),
        "g2.toml": GRID.format(data=tmp / "data", batch=512, tokens="3e4", mixtures='[mixtures."a+b"]\na = 0.5\nb = 0.5\n'),
    }
    for name, text in grids.items():
        (tmp / name).write_text(text)
        r = run_cli("sweep", tmp / name, "--out", tmp / "sw")
        assert r.returncode == 0, r.stderr[-2000:]
    return tmp


def test_real_sweep_analysed(sweep):
    laws = sweep / "laws.json"
    laws.write_text(json.dumps({"bimodal": {"a|b": {"C": 0.1, "A": 1.0, "B": 1.0, "alpha": 0.3, "beta": 0.2}}}))
    r = run_cli("analyze", sweep / "sw", "--out", sweep / "an", "--laws", laws, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    runs = {rid: info for rid, info in res["runs"].items()}
    mixed = [rid for rid, info in runs.items() if sorted(info["datasets"]) == ["a", "b"]]
    assert len(runs) == 6 and len(mixed) == 2
    for rid in runs:
        # same spike rule as training's counter: the count matches summary.json's
        summary = json.loads((sweep / "sw" / "runs" / rid / "summary.json").read_text())
        assert res["spikes"][rid] == summary["spikes"]
    for rid in mixed:
        assert set(res["plateaus"][rid]) == {"a", "b"}
        assert all(0.0 <= f <= 1.0 for f in res["plateau_fraction"][rid].values())
        comp = res["competition"][rid]
        # at the end of the mixed run, against the uni-modal runs that end at its per-dataset tokens
        assert len(comp["ratio"]) == 1 and 0.5 < comp["final_ratio"] < 2
        assert all(any("-15k-" in u for u in ids) for ids in comp["unimodal"].values()), comp["unimodal"]
    [group] = res["batch_size"]["groups"]
    assert [x["batch_tokens"] for x in group["runs"]] == [256, 512]
    assert group["best_batch_tokens"] == min(group["runs"], key=lambda x: x["eval_loss"])["batch_tokens"]
    assert group["beta_ij"] == 0.2
    assert all(row["log_n_over_alpha"] is not None for row in res["by_size"]["runs"])
    for png in ("competition.png", "batch_size.png", "by_size.png"):
        assert (sweep / "an" / png).is_file()


def test_modality_test_on_a_trained_model(sweep):
    uni_a = next(p for p in (sweep / "sw" / "runs").iterdir()
                 if json.loads((p / "config.json").read_text())["mix"] == {"a": 1.0})
    r = run_cli("analyze", "modality", "--data", sweep / "data", "--a", "a", "--b", "b", "--run", uni_a,
                "--max-docs", "20", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["distinct"] is True and res["ratio"] > 3 and res["datasets"]["b"]["documents"] == 20
    r = run_cli("analyze", "modality", "--data", sweep / "data", "--a", "a", "--b", "a2", "--run", uni_a,
                "--max-docs", "20")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "a2 is the SAME modality as a" in " ".join(r.stdout.split())
    # a model that saw B cannot judge it
    mixed = next(p for p in (sweep / "sw" / "runs").iterdir()
                 if json.loads((p / "config.json").read_text())["mix"] == {"a": 0.5, "b": 0.5})
    r = run_cli("analyze", "modality", "--data", sweep / "data", "--a", "a", "--b", "b", "--run", mixed)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "never saw B" in r.stderr
