"""Branched WSD grids: one trunk per (size, mixture), cooldown branches that are ordinary run folders
with their own results rows, the compute they save, and the grid's checks."""
import csv

import pytest

from test_sweep_grid import make_data

from mmlm.sweep import GridError, load_grid, parse_grid, run_sweep

GRID = """
data = "{data}"
sizes = ["pico"]
tokens = [{tokens}]
schedule = "wsd"
branch = true
[mixtures.text]
text = 1.0
[train]
seq_len = 32
batch_tokens = 256
eval_tokens = 256
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data") / "data")


def test_branched_grid_has_one_trunk_and_saves_compute(data, tmp_path):
    grid = parse_grid(GRID.format(data=data, tokens="2560, 5120, 10240, 20480"))  # four budgets spaced x2
    trunk, = [r for r in grid.runs if r.branch_of is None]
    branches = [r for r in grid.runs if r.branch_of]
    assert trunk.tokens == 20480 and len(branches) == 3 and all(b.branch_of == trunk.id for b in branches)
    assert trunk.train["keep_steps"] == ",".join(str(b.branch_step) for b in sorted(branches, key=lambda b: b.tokens))
    for b in branches:
        steps = b.tokens // 256
        assert b.branch_step == steps - -(-steps // 5) and b.start_tokens == b.branch_step * 256
        assert b.train["warmup"] == trunk.train["warmup"] and b.train["stall_tokens"] == trunk.train["stall_tokens"]
    report = run_sweep(grid, tmp_path / "sw", dry_run=True)
    c = report["compute"]
    assert c["saved"] == pytest.approx(1 - (20480 + 0.2 * (2560 + 5120 + 10240)) / (20480 + 10240 + 5120 + 2560), abs=0.02)
    assert c["saved"] >= 0.30 and c["flops"] < c["flops_separate"]
    assert not (tmp_path / "sw").exists()
    # the ids are stable, and differ from an unbranched grid's (the shared warm-up is part of them)
    again = parse_grid(GRID.format(data=data, tokens="2560, 5120, 10240, 20480"))
    assert sorted(r.id for r in again.runs) == sorted(r.id for r in grid.runs)


def test_grid_checks_branch_and_schedule(data):
    with pytest.raises(GridError, match='branch = true: cooldown branches need schedule = "wsd"'):
        parse_grid(GRID.format(data=data, tokens="2560").replace('schedule = "wsd"\n', ""))
    with pytest.raises(GridError, match="schedule: 'cosine' is not a schedule"):
        parse_grid(GRID.format(data=data, tokens="2560").replace('"wsd"', '"cosine"'))
    with pytest.raises(GridError, match="train.keep_steps: set by the sweep"):
        parse_grid(GRID.format(data=data, tokens="2560") + 'keep_steps = "3"\n')


@pytest.mark.slow
def test_branched_sweep_runs_trunk_then_branches(data, tmp_path):
    from mmlm.train import TrainConfig, train

    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(data=data, tokens="2560, 5120"))
    grid = load_grid(path)
    report = run_sweep(grid, tmp_path / "sw", jobs=1)
    assert report["counts"]["done"] == 2
    rows = {r["run_id"]: r for r in csv.DictReader(open(tmp_path / "sw" / "results.csv"))}
    branch, = [r for r in grid.runs if r.branch_of]
    # the branch's row is the separately trained WSD run with the same settings
    alone = train(TrainConfig(**branch.train, data=branch.data, size="pico", mix="text=1.0", tokens=branch.tokens,
                              out=str(tmp_path / "alone")))
    assert float(rows[branch.id]["loss"]) == pytest.approx(alone["eval_loss"]["text"], rel=1e-6)
    assert int(rows[branch.id]["tokens"]) == 2560
    assert run_sweep(grid, tmp_path / "sw", dry_run=True)["runs"][0]["action"] == "skip"  # resumable: done is done


def test_worker_points_runs_at_one_tensorboard_folder_and_branches_at_their_trunk(data, tmp_path, monkeypatch):
    import mmlm.train
    from mmlm.errors import MmlmError
    from mmlm.schedule import branch_point
    from mmlm.sweep.run_folders import run_dir, write_spec
    from mmlm.sweep.worker import _train

    monkeypatch.setattr("mmlm.board.check_available", lambda: None)  # the folders are checked, not the package
    grid = parse_grid(GRID.format(data=data, tokens="2560, 5120") + "tensorboard = true\n")
    seen = []
    monkeypatch.setattr(mmlm.train, "train", lambda cfg, on_log=None: seen.append(cfg) or {"status": "done"})
    trunk, = [r for r in grid.runs if r.branch_of is None]
    branch, = [r for r in grid.runs if r.branch_of]
    for spec in grid.runs:
        write_spec(tmp_path, spec)
    with pytest.raises(MmlmError, match=f"trunk run {trunk.id} has no branch point at update {branch.branch_step}"):
        _train(run_dir(tmp_path, branch.id), None, None)
    branch_point(run_dir(tmp_path, trunk.id), branch.branch_step).mkdir(parents=True)
    _train(run_dir(tmp_path, trunk.id), None, None)
    _train(run_dir(tmp_path, branch.id), None, None)
    t, b = seen
    assert t.tensorboard_dir == str(tmp_path / "tensorboard" / trunk.id)
    assert b.tensorboard_dir == str(tmp_path / "tensorboard" / branch.id)
    assert t.keep_steps == str(branch.branch_step) and t.branch_from is None
    assert b.branch_from == str(branch_point(run_dir(tmp_path, trunk.id), branch.branch_step))
