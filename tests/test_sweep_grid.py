"""Grid files: expansion into runs, stable ids, IsoFLOP budgets, and every problem reported up front."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mmlm.model import SIZES, count_params, model_config
from mmlm.shards import DatasetWriter
from mmlm.sweep import GridError, load_grid, parse_grid, run_id
from mmlm.vocab import Vocab

MIXTURES = """[mixtures.text]
text = 1.0
[mixtures."text+code"]
text = 0.5
code = 0.5
"""  # one uni-modal and one mixed run per size and budget (the sweep tests share it)
GRID = """
data = "{data}"
sizes = ["pico", "nano"]
tokens = [4096, 8192]
""" + MIXTURES + """[train]
seq_len = 32
batch_tokens = 512
"""


def make_data(root, names=("text", "code"), docs=40):
    """A tiny data root: a 200-token text space, and per dataset `docs` random documents of its ids."""
    vocab = Vocab()
    first = vocab.add_space("text", 200, {"kind": "bpe"})
    vocab.save(root / "vocab.json")
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        with DatasetWriter(root / name) as w:
            for _ in range(docs):  # each dataset favours its own slice of ids, so losses differ
                ids = first + (k * 37 + rng.zipf(1.5, size=int(rng.integers(20, 80)))) % 200
                w.add(np.append(ids, vocab.eos))
            w.meta.update(kind=name)
    return root


@pytest.fixture
def data(tmp_path):
    return make_data(tmp_path / "data")


def shapes_grid(data, d_model=32):
    return GRID.format(data=data).replace('sizes = ["pico", "nano"]', 'sizes = ["pico", {name = "w32", n_layer = 2, '
                                          f'd_model = {d_model}, n_head = 2}}, {{n_layer = 1, d_model = 16, n_head = 2}}]')


def test_custom_shapes_in_sizes_have_stable_ids_that_include_the_shape(data):
    g = parse_grid(shapes_grid(data))
    assert g.sizes == ["pico", "w32", "L1d16h2"]
    assert g.shapes == {"w32": {"n_layer": 2, "d_model": 32, "n_head": 2}, "L1d16h2": {"n_layer": 1, "d_model": 16, "n_head": 2}}
    vocab = Vocab.load(data / "vocab.json").size
    w32 = [r for r in g.runs if r.size == "w32"]
    assert len(w32) == 4 and all(r.train == {"seq_len": 32, "batch_tokens": 512, "n_layer": 2, "d_model": 32, "n_head": 2}
                                 for r in w32)
    assert w32[0].n_params == count_params(model_config("w32", vocab, 32, shape=(2, 32, 2)))["n_params"]
    assert all(r.id.startswith("w32-") for r in w32)
    # the named sizes keep the ids they had; the same name with another shape is another run
    plain = parse_grid(GRID.format(data=data))
    assert {r.id for r in g.runs if r.size == "pico"} == {r.id for r in plain.runs if r.size == "pico"}
    again = parse_grid(shapes_grid(data))
    assert [r.id for r in again.runs] == [r.id for r in g.runs]
    wider = parse_grid(shapes_grid(data, d_model=64))
    assert not {r.id for r in wider.runs if r.size == "w32"} & {r.id for r in w32}


@pytest.mark.parametrize("entry, words", [
    ('{name = "w", n_layer = 2, d_model = 32}', "needs all of"),
    ('{name = "w", n_layer = 2, d_model = 30, n_head = 4}', "not divisible by n_head 4"),
    ('{name = "pico", n_layer = 2, d_model = 32, n_head = 2}', "is a named size"),
    ('{name = "a-b", n_layer = 2, d_model = 32, n_head = 2}', "letters, digits"),
    ('{name = "w", n_layer = 2, d_model = 32, n_head = 2, dropout = 0.1}', "unknown key 'dropout'"),
    ('{name = "w", n_layer = 0, d_model = 32, n_head = 2}', "n_layer must be a positive whole number"),
])
def test_bad_shapes_are_named(data, entry, words):
    with pytest.raises(GridError) as e:
        parse_grid(GRID.format(data=data).replace('sizes = ["pico", "nano"]', f"sizes = [{entry}]"), source="g.toml")
    assert any(words in p and p.startswith("g.toml: sizes") for p in e.value.problems), e.value.problems


def test_grid_expands_to_every_combination_with_stable_ids(data):
    g = parse_grid(GRID.format(data=data))
    assert len(g.runs) == 2 * 2 * 2
    combos = {(r.size, r.mixture, r.tokens) for r in g.runs}
    assert combos == {(s, m, t) for s in ("pico", "nano") for m in ("text", "text+code") for t in (4096, 8192)}
    assert len({r.id for r in g.runs}) == 8
    again = parse_grid(GRID.format(data=data))
    assert [r.id for r in again.runs] == [r.id for r in g.runs]
    for r in g.runs:
        assert r.id.startswith(f"{r.size}-{r.mixture}-{r.tokens}-")
        assert r.train == {"seq_len": 32, "batch_tokens": 512}
        assert r.n_params == count_params(model_config(r.size, Vocab.load(data / "vocab.json").size, 32))["n_params"]
    assert g.datasets == ["code", "text"]


def test_run_id_follows_settings_that_change_the_result():
    base = run_id("pico", "m", {"text": 1.0}, 4096, {"lr": 1e-3})
    assert run_id("pico", "m", {"text": 1.0}, 4096, {"lr": 1e-3}) == base
    assert run_id("pico", "m", {"text": 2.0}, 4096, {"lr": 1e-3}) == base  # weights are shares
    assert run_id("pico", "m", {"text": 1.0}, 4096, {"lr": 1e-3, "device": "cuda", "threads": 4}) == base
    assert run_id("pico", "m", {"text": 1.0}, 4096, {"lr": 2e-3}) != base
    assert run_id("pico", "m", {"text": 1.0, "code": 1.0}, 4096, {"lr": 1e-3}) != base
    assert run_id("nano", "m", {"text": 1.0}, 4096, {"lr": 1e-3}) != base
    assert run_id("pico", "m", {"text": 1.0}, 8192, {"lr": 1e-3}) != base


def test_isoflop_budgets_give_tokens_c_over_6n(data):
    text = GRID.format(data=data).replace("tokens = [4096, 8192]", "flops = [1e11, 3e11]")
    g = parse_grid(text)
    vocab = Vocab.load(data / "vocab.json").size
    assert len(g.runs) == 8
    for r in g.runs:
        n = count_params(model_config(r.size, vocab, 32))["n_params"]
        assert r.flops_budget in (1e11, 3e11)
        assert r.tokens == int(r.flops_budget // (6 * n))
    # the smaller model gets more tokens for the same compute
    by = {(r.size, r.flops_budget, r.mixture): r.tokens for r in g.runs}
    assert by[("pico", 1e11, "text")] > by[("nano", 1e11, "text")]


def test_data_option_overrides_the_grid(data, tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(GRID.format(data=tmp_path / "nowhere"))
    with pytest.raises(GridError):
        load_grid(path)
    g = load_grid(path, data=data)
    assert g.data == data.resolve() and len(g.runs) == 8


def test_every_problem_is_reported_at_once(data):
    text = f"""
data = "{data}"
sizes = ["pico", "huge"]
tokens = [100]
colour = "blue"
[mixtures.a]
text = 0.0
[mixtures.b]
pictures = 1.0
[train]
seq_len = 32
batch_tokens = 512
learning_rate = 0.1
tokens = 5
"""
    with pytest.raises(GridError) as e:
        parse_grid(text, source="g.toml")
    problems = e.value.problems
    joined = "\n".join(problems)
    assert all(p.startswith("g.toml: ") for p in problems)
    assert "unknown key 'colour'" in joined
    assert "unknown size 'huge'" in joined
    assert "weight of 'text' must be a positive number" in joined
    assert "unknown dataset 'pictures'" in joined
    assert "train.learning_rate: not an `mmlm train` option" in joined
    assert "train.tokens: set by the sweep" in joined
    assert len(problems) == 6


def test_options_train_rejects_are_problems(data):
    text = GRID.format(data=data).replace("batch_tokens = 512", "batch_tokens = 512\nlr = -1\nseed = \"zero\"")
    with pytest.raises(GridError) as e:
        parse_grid(text)
    assert e.value.problems == ["grid: train.seed: expected int, got 'zero'"]
    with pytest.raises(GridError) as e:
        parse_grid(text.replace('seed = "zero"', "seed = 1"))
    assert e.value.problems == ["grid: train: --lr -1.0: must be positive"]  # once, not once per run


def test_budget_smaller_than_one_step_is_a_problem(data):
    text = GRID.format(data=data).replace("tokens = [4096, 8192]", "tokens = [100, 8192]")
    with pytest.raises(GridError) as e:
        parse_grid(text)
    assert len(e.value.problems) == 4  # 2 sizes x 2 mixtures at 100 tokens
    assert all("smaller than one optimizer step (batch_tokens = 512)" in p for p in e.value.problems)


def test_missing_data_root_and_invalid_toml(tmp_path):
    with pytest.raises(GridError) as e:
        parse_grid(GRID.format(data=tmp_path / "nowhere"))
    assert any("data root" in p and "does not exist" in p for p in e.value.problems)
    with pytest.raises(GridError) as e:
        parse_grid('sizes = ["pico"\ntokens = [1]\n', source="bad.toml")
    assert e.value.problems[0].startswith("bad.toml:2: invalid TOML:")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mmlm.cli.main", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_bad_grid_lists_problems_and_launches_nothing(data, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(data=data).replace('"pico"', '"gigantic"').replace("text = 0.5", "text = -1"))
    out = tmp_path / "out"
    r = run_cli("sweep", str(grid), "--out", str(out))
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert any("unknown size 'gigantic'" in line for line in lines)
    assert any("weight of 'text' must be a positive number" in line for line in lines)
    assert all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in r.stderr
    assert not out.exists()

    grid.write_text("sizes = [\n")
    r = run_cli("sweep", str(grid), "--out", str(out))
    assert r.returncode == 1 and "grid.toml:1: invalid TOML" in r.stderr
    r = run_cli("sweep", str(tmp_path / "missing.toml"), "--out", str(out))
    assert r.returncode == 1 and "cannot read grid file" in r.stderr
    r = run_cli("sweep", "--out", str(out))
    assert r.returncode == 1 and "exactly one" in r.stderr
    assert not out.exists()


def test_cli_dry_run_lists_runs_and_writes_nothing(data, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(data=data))
    out = tmp_path / "out"
    r = run_cli("sweep", str(grid), "--out", str(out), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    import json

    report = json.loads(r.stdout)
    assert len(report["runs"]) == 8 and {x["action"] for x in report["runs"]} == {"new"}
    assert {x["id"] for x in report["runs"]} == {s.id for s in parse_grid(GRID.format(data=data)).runs}
    assert not out.exists()


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine has SLURM")
def test_slurm_launcher_without_slurm_is_a_clear_error(data, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(data=data) + '\n[slurm]\npartition = "gpu"\ntime_limit = "1:30:00"\n')
    g = load_grid(grid)
    assert g.slurm == {"partition": "gpu", "time_limit": 90}
    r = run_cli("sweep", str(grid), "--out", str(tmp_path / "out"), "--launcher", "slurm")
    assert r.returncode == 1
    assert "error: --launcher slurm: SLURM is not available" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_bad_slurm_options(data):
    text = GRID.format(data=data) + '\n[slurm]\npartition = ""\ntime_limit = "soon"\nnodes = 4\n'
    with pytest.raises(GridError) as e:
        parse_grid(text)
    joined = "\n".join(e.value.problems)
    assert len(e.value.problems) == 3
    assert "slurm.nodes: unknown option" in joined
    assert "slurm.partition: expected a partition name" in joined
    assert "slurm.time_limit: expected minutes or 'H:MM:SS', got 'soon'" in joined


def test_known_sizes_are_the_models(data):
    g = parse_grid(GRID.format(data=data).replace('["pico", "nano"]', str(list(SIZES)[:3]).replace("'", '"')))
    assert g.sizes == list(SIZES)[:3]


@pytest.mark.parametrize("preset", ["demo", "cpu-study"])
def test_preset_grids_give_fit_and_analyze_what_they_need(tmp_path, preset):
    """Every uni-modal dataset has >= 4 sizes x >= 3 budgets (so holding out the largest size leaves >= 9
    points for 5 parameters); one image-text run is the digits model; every run has >= 100 optimizer steps; sizes are custom shapes below pico,
    spread evenly in log N; each pair run at T tokens is matched by uni-modal runs of both its datasets
    at T/2 at the same size and seed; cpu-study has all seven datasets, >= 2 seeds and >= 2 pairs."""
    from mmlm.sweep.demo import DEMO_DATASETS, PRESETS, preset_grid

    g = preset_grid(preset, make_data(tmp_path / "data", names=DEMO_DATASETS, docs=4))
    study = PRESETS[preset]
    assert len({r.id for r in g.runs}) == len(g.runs)
    assert all(r.tokens // study.batch_tokens >= 100 for r in g.runs)
    sizes = sorted({(r.n_params, r.size) for r in g.runs})
    pico = count_params(model_config("pico", Vocab.load(tmp_path / "data" / "vocab.json").size, 128))["n_params"]
    assert len(sizes) >= 4 and sizes[0][0] < 0.5 * pico
    steps = np.diff(np.log([n for n, _ in sizes]))
    assert steps.max() < 2.5 * steps.min()  # about even in log N
    shape, steps = study.digits
    digits = [r for r in g.runs if r.mix == {"image-text": 1.0} and r.size == shape["name"]
              and r.tokens == steps * study.batch_tokens]
    assert len(digits) == 1  # the model `mmlm analyze digits` draws from
    uni = {}
    for r in g.runs:
        if len(r.mix) == 1 and r is not digits[0]:
            uni.setdefault(next(iter(r.mix)), set()).add((r.size, r.tokens, r.train.get("seed", 0)))
    assert sorted(uni) == sorted(study.unimodal)
    for d, pts in uni.items():
        assert len({s for s, _, _ in pts}) >= 4 and len({t for _, t, _ in pts}) >= 3, d
    pairs = {}
    for r in g.runs:
        if len(r.mix) == 2:
            assert sorted(r.mix.values()) == [0.5, 0.5]
            pairs.setdefault(tuple(sorted(r.mix)), []).append(r)
            for ds in r.mix:
                assert (r.size, r.tokens // 2, r.train.get("seed", 0)) in uni[ds], f"{r.id}: no uni-modal {ds} at T/2"
    assert len(pairs) == len(study.pairs) and all(len(runs) >= 8 for runs in pairs.values())
    if preset == "cpu-study":
        assert sorted(uni) == sorted(DEMO_DATASETS) and len(study.seeds) >= 2 and len(pairs) >= 2
        seeds = {r.train.get("seed", 0) for r in g.runs}
        assert len(seeds) >= 2


def test_make_demo_fits_the_demo_presets_law_datasets():
    """`make demo` names the datasets it fits (leaving out the digits model); they are the preset's."""
    import re
    from pathlib import Path

    from mmlm.sweep.demo import PRESETS

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    laws = re.search(r"^DEMO_LAWS := (\S+)", makefile, re.M).group(1)
    assert laws.split(",") == list(PRESETS["demo"].unimodal) and "--datasets $(DEMO_LAWS)" in makefile


def test_cli_demo_dry_run(tmp_path):
    import json

    from mmlm.sweep.demo import DEMO_DATASETS

    data = make_data(tmp_path / "data", names=DEMO_DATASETS, docs=4)
    r = run_cli("sweep", "--preset", "demo", "--data", str(data), "--out", str(tmp_path / "out"), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    runs = json.loads(r.stdout)["runs"]
    from mmlm.sweep.demo import preset_grid

    assert len(runs) == len(preset_grid("demo", data).runs) and {x["action"] for x in runs} == {"new"}
    r = run_cli("sweep", "--preset", "nope", "--out", str(tmp_path / "out"))
    assert r.returncode == 1 and "unknown preset" in r.stderr


def test_sweep_grid_builds_a_presets_missing_data_except_on_a_dry_run(tmp_path, monkeypatch):
    from pathlib import Path

    from mmlm.errors import MmlmError
    from mmlm.sweep import demo
    from mmlm.sweep.grid_source import sweep_grid

    built = []
    monkeypatch.setattr(demo, "ensure_demo_data", lambda data, on_progress=None: built.append((Path(data), on_progress)))
    monkeypatch.setattr(demo, "preset_grid", lambda name, data: (name, Path(data)))
    hear = print  # any callable: it must reach the build
    assert sweep_grid(None, "demo", out=tmp_path / "o", data=tmp_path / "d", jobs=3, dry_run=True) == (
        ("demo", tmp_path / "d"), 3)
    assert built == []
    sweep_grid(None, "demo", out=tmp_path / "o", data=tmp_path / "d", jobs=3, on_data_progress=hear)
    assert built == [(tmp_path / "d", hear)]
    with pytest.raises(MmlmError, match="exactly one"):
        sweep_grid(tmp_path / "g.toml", "demo", out=tmp_path / "o")
    (tmp_path / "f").write_text("x")
    with pytest.raises(MmlmError, match="not a folder"):
        sweep_grid(None, "demo", out=tmp_path / "f")
