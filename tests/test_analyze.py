"""`mmlm analyze`: planted plateaus, spikes, competition, batch-size and size trends found as planted;
bad input gives a one-line error. Helpers at the top are shared with test_analyze_*.py."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmlm.analysis import PlateauRule, analyze_path, find_plateaus, modality_verdict, read_metrics
from mmlm.errors import MmlmError
from mmlm.stability import SpikeRule


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mmlm.cli.main", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def moving(n: int, plateaus=(), every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(steps, progress): logged steps 0, every, ... < n, and how many of the steps up to each one were
    not inside a planted plateau [a, b] (a loss that is a function of progress is held flat there)."""
    steps = np.arange(0, n, every)
    prog = steps.astype(float)
    for a, b in plateaus:
        prog -= np.clip(steps, a, b) - a
    return steps, prog


def write_run(folder: Path, losses: dict, grad_norm=None, every: int = 1, eval_every: int | None = None,
              eval_losses: dict | None = None, batch_tokens: int = 1024, config: dict | None = None,
              summary: dict | None = None) -> Path:
    """A run folder in the documented format: one metrics line per logged step (steps 0, every, ...),
    eval/<d> every `eval_every` steps; config.json and summary.json when given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(losses)
    eval_losses = eval_losses if eval_losses is not None else losses
    with open(folder / "metrics.jsonl", "w") as f:
        for i in range(len(losses[names[0]])):
            step = i * every
            row = {"step": step, "tokens": step * batch_tokens, "lr": 1e-3,
                   "loss": float(np.mean([losses[d][i] for d in names])),
                   "grad_norm": float(grad_norm[i]) if grad_norm is not None else 1.0}
            row.update({f"loss/{d}": float(losses[d][i]) for d in names})
            if eval_every and step % eval_every == 0:
                row.update({f"eval/{d}": float(eval_losses[d][i]) for d in names})
            f.write(json.dumps(row) + "\n")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def grad_norms(n: int, spikes=(), seed: int = 0) -> np.ndarray:
    g = 1.0 + 0.1 * np.random.default_rng(seed).random(n)
    g[list(spikes)] = 20.0
    return g


# Noise-free coordinate ascent: a is flat on two stretches while b falls, b on one while a falls.
# Losses fall 0.02 per step elsewhere, more than tol (0.001) times the loss, so the ends are exact.
EXACT = {"a": [(100, 180), (400, 470)], "b": [(250, 330)]}


def exact_run(folder: Path, **kw) -> Path:
    losses = {d: 14.0 - 0.02 * moving(600, p)[1] for d, p in EXACT.items()}
    return write_run(folder, losses, **kw)


# --- plateaus ---------------------------------------------------------------------------------

def test_plateaus_noise_free_found_exactly(tmp_path):
    m = read_metrics(exact_run(tmp_path / "r") / "metrics.jsonl")
    p = find_plateaus(m, PlateauRule(window=20, tol=0.001))
    assert p.intervals == {d: [list(iv) for iv in ivs] for d, ivs in EXACT.items()}
    assert p.fraction["a"] == pytest.approx((81 + 71) / 600)
    assert p.fraction["b"] == pytest.approx(81 / 600)
    assert p.window == 20 and p.min_len == 40


def test_plateaus_with_logging_interval_and_min_len(tmp_path):
    # logged every 5 steps: windows are in steps, ends fall on logged steps
    losses = {d: 14.0 - 0.02 * moving(600, p, every=5)[1] for d, p in EXACT.items()}
    m = read_metrics(write_run(tmp_path / "r", losses, every=5) / "metrics.jsonl")
    p = find_plateaus(m, PlateauRule(window=20, tol=0.001))
    assert p.intervals == {d: [list(iv) for iv in ivs] for d, ivs in EXACT.items()}
    # min_len drops the shorter plateau of a (70 steps) and keeps the 80-step ones
    p = find_plateaus(m, PlateauRule(window=20, tol=0.001, min_len=75))
    assert p.intervals == {"a": [[100, 180]], "b": [[250, 330]]}


def test_plateaus_noisy_ends_within_half_window(tmp_path):
    n, planted = 1000, [(300, 600)]
    rng = np.random.default_rng(1)
    la = 2 + 4 * np.exp(-moving(n, planted)[1] / 400) + rng.normal(0, 0.01, n)
    lb = 2 + 4 * np.exp(-np.arange(n) / 400) + rng.normal(0, 0.01, n)
    m = read_metrics(write_run(tmp_path / "r", {"a": la, "b": lb}) / "metrics.jsonl")
    p = find_plateaus(m)  # defaults: window 5% of the run (50 steps), tol 0.01
    assert p.window == 50
    assert p.intervals["b"] == []
    [[start, end]] = p.intervals["a"]
    assert abs(start - 300) <= p.window / 2 and abs(end - 600) <= p.window / 2
    assert p.fraction["a"] == pytest.approx((end - start + 1) / n)


def test_no_plateaus_where_none_planted(tmp_path):
    n = 1000
    rng = np.random.default_rng(2)
    t = np.arange(n)
    # both improve at the same relative rate, then flatten together (the average stops falling too)
    la = 4 * (1 + np.exp(-t / 250)) + rng.normal(0, 0.01, n)
    lb = 3 * (1 + np.exp(-t / 250)) + rng.normal(0, 0.01, n)
    p = find_plateaus(read_metrics(write_run(tmp_path / "r", {"a": la, "b": lb}) / "metrics.jsonl"))
    assert p.intervals == {"a": [], "b": []}
    assert p.fraction == {"a": 0.0, "b": 0.0}


def test_plateaus_need_two_datasets(tmp_path):
    m = read_metrics(write_run(tmp_path / "r", {"text": np.linspace(5, 3, 100)}) / "metrics.jsonl")
    with pytest.raises(MmlmError, match="mixed run.*found text"):
        find_plateaus(m)


# --- metrics.jsonl ----------------------------------------------------------------------------

def test_read_metrics_merges_steps_and_resumes(tmp_path):
    f = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 0, "loss": 5.0, "loss/a": 5.0},
        {"step": 0, "eval/a": 5.5},                      # an eval line for the same step: merged
        {"step": 10, "loss": 4.0, "loss/a": 4.0, "note": "ignored", "grad_norm": None},
        {"step": 20, "loss": 3.9, "loss/a": 3.9},
        {"step": 10, "loss": 4.1, "loss/a": 4.1},        # resumed from step 10: replaces 10 and 20
        {"step": 20, "loss": 3.5, "loss/a": 3.5, "grad_norm": float("nan")},
    ]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n" + '{"step": 30, "lo')  # cut short
    m = read_metrics(f)
    assert m.steps.tolist() == [0, 10, 20]
    assert m.series("loss/a")[1].tolist() == [5.0, 4.1, 3.5]
    assert m.series("eval/a")[0].tolist() == [0]
    s, g = m.series("grad_norm")
    assert s.tolist() == [20] and math.isnan(g[0])  # null = not logged; NaN = logged non-finite
    assert m.datasets == ["a"] and m.eval_datasets == ["a"]


@pytest.mark.parametrize("line, why", [
    ("{not json", "malformed metrics line"),
    ('[1, 2]', "not a JSON object"),
    ('{"loss": 3.0}', "no 'step'"),
    ('{"step": 2, "loss/a": "high"}', "'loss/a' must be a number"),
    ('{"step": -1}', "non-negative integer"),
])
def test_read_metrics_malformed_line_names_file_and_line(tmp_path, line, why):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 0, "loss": 5}\n\n' + line + "\n" + '{"step": 9, "loss": 4}\n')
    with pytest.raises(MmlmError) as e:
        read_metrics(f)
    assert str(e.value).startswith(f"{f}:3: ") and why in str(e.value) and "\n" not in str(e.value)


# --- spikes -----------------------------------------------------------------------------------

def test_spikes_found_exactly_and_none_where_none_planted(tmp_path):
    n = 600
    planted = [30, 250, 251, 480]
    g = grad_norms(n, planted)
    g[500] = float("nan")  # a non-finite norm always counts
    losses = {d: 14.0 - 0.02 * moving(n, p)[1] for d, p in EXACT.items()}
    write_run(tmp_path / "sweep" / "runs" / "spiky", losses, grad_norm=g)
    write_run(tmp_path / "sweep" / "runs" / "calm", losses, grad_norm=grad_norms(n, seed=3))
    r = analyze_path(tmp_path / "sweep", plateau_rule=PlateauRule(window=20, tol=0.001))
    assert r["spike_steps"] == {"calm": [], "spiky": planted + [500]}
    assert r["spikes"] == {"calm": 0, "spiky": 5}
    # the rule's parameters are settable: a higher k misses spikes of 20x
    r = analyze_path(tmp_path / "sweep", spike_rule=SpikeRule(k=30.0))
    assert r["spikes"] == {"calm": 0, "spiky": 1}


# --- sweep-level ------------------------------------------------------------------------------

def law(n_params: float, tokens: float, e: float) -> float:
    """A Chinchilla-form loss at the end of a run's schedule."""
    return e + 40.0 / n_params ** 0.3 + 60.0 / tokens ** 0.3


def schedule_run(folder: Path, dataset_losses: dict, tokens: dict, size: str, n_params: int, batch: int = 1024,
                 mix: dict | None = None, status: str = "done") -> None:
    """A finished run: 20 steps, mid-schedule evals 5% above the end-of-schedule loss (a run part-way
    through its decay is worse than one ending there), the final eval and drawn tokens in summary.json."""
    total = sum(tokens.values())
    steps = 20
    losses = {d: np.full(steps + 1, loss + 1.0) for d, loss in dataset_losses.items()}
    evals = {d: np.where(np.arange(steps + 1) == steps, loss, loss * 1.05) for d, loss in dataset_losses.items()}
    write_run(folder, losses, eval_every=5, eval_losses=evals, batch_tokens=int(total / steps),
              config={"size": size, "batch_tokens": batch, "mix": mix or {d: 1.0 for d in dataset_losses}},
              summary={"status": status, "n_params": n_params, "eval_loss": dict(dataset_losses),
                       "tokens": total, "tokens_by_dataset": tokens})


def test_competition_on_a_planted_neutral_sweep_is_one(tmp_path):
    """Mixed runs whose final losses equal the uni-modal law at their drawn per-dataset tokens are exactly
    neutral: the ratio is 1.000 +- 0.005, though uni-modal runs at longer budgets evaluate mid-schedule
    at those tokens (and read off there, as before, would say 'synergy')."""
    runs = tmp_path / "sweep" / "runs"
    e = {"a": 2.0, "b": 3.0}
    budgets = [10_000, 30_000, 90_000]
    for size, n in (("s", 20_000), ("m", 80_000)):
        for d in e:
            for t in budgets:
                schedule_run(runs / f"{size}-{d}-{t}", {d: law(n, t, e[d])}, {d: t}, size, n)
        for t in budgets:
            # the interleaver's realised shares differ from 50/50 by up to 1.5%
            drawn = {"a": t * 1.015 if t < 90_000 else t * 0.99, "b": t * 0.985 if t < 90_000 else t * 1.01}
            schedule_run(runs / f"{size}-ab-{2 * t}", {d: law(n, drawn[d], e[d]) for d in e}, drawn, size, n,
                         mix={"a": 0.5, "b": 0.5})
    # an unfinished mixed run is not compared
    schedule_run(runs / "s-ab-stopped", {"a": 3.0, "b": 4.0}, {"a": 20_000, "b": 20_000}, "s", 20_000,
                 mix={"a": 0.5, "b": 0.5}, status="stopped: loss was nan")
    r = analyze_path(tmp_path / "sweep")
    comp = r["competition"]
    assert len(comp) == 6 and "s-ab-stopped" not in comp
    for rid, c in comp.items():
        assert c["final_ratio"] == pytest.approx(1.0, abs=0.005), rid
        assert all(u.startswith(rid.split("-")[0] + "-") for ids in c["unimodal"].values() for u in ids)
    c = comp["m-ab-60000"]
    assert c["tokens"] == {"a": [pytest.approx(30_450)], "b": [pytest.approx(29_550)]}
    assert c["loss_mixed"]["a"] == [pytest.approx(law(80_000, 30_450, 2.0))]
    assert any("s-ab-stopped" in n and "not finished" in n for n in r["notes"])


def test_competition_finds_planted_synergy_and_refuses_to_extrapolate(tmp_path):
    runs = tmp_path / "sweep" / "runs"
    for d in ("a", "b"):
        for t in (10_000, 20_000, 30_000):
            schedule_run(runs / f"s-{d}-{t}", {d: law(1e4, t, 2.0)}, {d: t}, "s", 10_000)
    # 3% better than neutral on both datasets: ratio 1 / 0.97
    schedule_run(runs / "s-ab-40000", {d: 0.97 * law(1e4, 20_000, 2.0) for d in "ab"}, {"a": 20_000, "b": 20_000},
                 "s", 10_000, mix={"a": 0.5, "b": 0.5})
    # per-dataset tokens past the largest budget (+10%): no answer rather than a guess
    schedule_run(runs / "s-ab-66000", {d: law(1e4, 33_000, 2.0) for d in "ab"}, {"a": 33_000, "b": 33_000},
                 "s", 10_000, mix={"a": 0.5, "b": 0.5})
    r = analyze_path(tmp_path / "sweep")
    c = r["competition"]["s-ab-40000"]
    assert c["final_ratio"] == pytest.approx(1 / 0.97, rel=2e-3)
    assert c["first_step_above_barrier"] == 20
    assert "s-ab-66000" not in r["competition"]
    assert any("s-ab-66000" in n and "outside the uni-modal budgets" in n for n in r["notes"])


def test_batch_size_guideline_and_beta(tmp_path):
    runs, n = tmp_path / "sweep" / "runs", 50
    laws = {"bimodal": {"a|b": {"alpha": 0.3, "beta": 0.1}, "c|a": {"alpha": 0.2, "beta": 0.2},
                        "b|c": {"alpha": 0.1, "beta": 0.3}}}
    (tmp_path / "laws.json").write_text(json.dumps(laws))
    best = {("a", "b"): 512, ("a", "c"): 1024, ("b", "c"): 2048}  # grows with beta_ij, falls with alpha_ij
    for (i, j), b_best in best.items():
        for b in (512, 1024, 2048):
            loss = 3.0 + abs(math.log2(b / b_best))
            write_run(runs / f"{i}{j}-{b}", {i: np.linspace(5, 3, n), j: np.linspace(5, 3, n)}, batch_tokens=b,
                      config={"size": "nano", "mix": {i: 0.5, j: 0.5}, "batch_tokens": b, "tokens": 1e6},
                      summary={"n_params": 1000, "eval_loss": {i: loss, j: loss + 0.5}})
    # another budget is another group, and a lone batch size is no guideline
    write_run(runs / "ab-other-budget", {"a": np.linspace(5, 3, n), "b": np.linspace(5, 3, n)},
              config={"size": "nano", "mix": {"a": 0.5, "b": 0.5}, "batch_tokens": 512, "tokens": 5e6},
              summary={"n_params": 1000, "eval_loss": {"a": 1.0, "b": 1.0}})
    r = analyze_path(tmp_path / "sweep", laws=tmp_path / "laws.json")
    groups = {g["pair"]: g for g in r["batch_size"]["groups"]}
    assert sorted(groups) == ["a|b", "a|c", "b|c"]
    assert {p: g["best_batch_tokens"] for p, g in groups.items()} == {"a|b": 512, "a|c": 1024, "b|c": 2048}
    assert [x["batch_tokens"] for x in groups["a|b"]["runs"]] == [512, 1024, 2048]
    assert groups["a|c"]["beta_ij"] == 0.2 and groups["a|c"]["alpha_ij"] == 0.2
    assert r["batch_size"]["spearman"]["nano"] == {"pairs": 3, "best_batch~beta_ij": pytest.approx(1.0),
                                                   "best_batch~alpha_ij": pytest.approx(-1.0)}


def test_by_size_trends(tmp_path):
    runs, n = tmp_path / "sweep" / "runs", 600
    # bigger models: shorter plateaus and more spikes
    for size, n_params, plateau, n_spikes in (("s", 1e5, (100, 300), 1), ("m", 4e5, (100, 220), 2), ("l", 1.6e6, (100, 160), 4)):
        losses = {"a": 14.0 - 0.02 * moving(n, [plateau])[1], "b": 14.0 - 0.02 * np.arange(n)}
        write_run(runs / size, losses, grad_norm=grad_norms(n, range(100, 100 + 50 * n_spikes, 50)),
                  config={"size": size, "mix": {"a": 0.5, "b": 0.5}}, summary={"n_params": n_params})
    (tmp_path / "laws.json").write_text(json.dumps({"bimodal": {"b|a": {"alpha": 0.25, "beta": 0.2}}}))
    r = analyze_path(tmp_path / "sweep", plateau_rule=PlateauRule(window=20, tol=0.001), laws=tmp_path / "laws.json")
    assert r["plateaus"]["l"] == {"a": [[100, 160]], "b": []}
    assert [s["size"] for s in r["by_size"]["sizes"]] == ["s", "m", "l"]
    assert [s["plateau_fraction"] for s in r["by_size"]["sizes"]] == pytest.approx([201 / n, 121 / n, 61 / n])
    row = next(x for x in r["by_size"]["runs"] if x["run"] == "m")
    assert row["alpha_ij"] == 0.25 and row["log_n_over_alpha"] == pytest.approx(math.log(4e5) / 0.25)
    assert r["by_size"]["spearman"] == {"plateau_fraction~n_params": pytest.approx(-1.0), "plateau_fraction~alpha_ij": None,
                                        "spikes~log_n_over_alpha": pytest.approx(1.0)}


def test_bad_laws_and_out(tmp_path):
    run = exact_run(tmp_path / "run")
    (tmp_path / "laws.json").write_text(json.dumps({"bimodal": {"a|b": {"alpha": 0.3}}}))
    with pytest.raises(MmlmError, match="'a\\|b' needs a non-negative number 'beta'"):
        analyze_path(run, laws=tmp_path / "laws.json")
    with pytest.raises(MmlmError, match="no such file"):
        analyze_path(run, laws=tmp_path / "nope.json")
    (tmp_path / "file").write_text("x")
    with pytest.raises(MmlmError, match="not a folder"):
        analyze_path(run, out=tmp_path / "file")


def test_spearman_with_ties():
    from mmlm.analysis.trends import spearman

    # y ranks 1, 2, 3.5, 5, 3.5 against 1..5: rho = 8 / sqrt(10 * 9.5)
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert spearman([1, 2], [3, 4]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


# --- modality rule ----------------------------------------------------------------------------

def test_modality_verdict_rule():
    a = np.array([10.0, 20.0, 30.0])  # mean 20
    v = modality_verdict(a, [50.0, 70.0], sigma=3)  # mean 60 = 3 x 20: not more than sigma times
    assert v["distinct"] is False and v["ratio"] == pytest.approx(3.0) and v["threshold"] == pytest.approx(60.0)
    v = modality_verdict(a, [50.0, 80.0], sigma=3)
    assert v["distinct"] is True and v["share_b_above"] == 0.5
    assert modality_verdict(a, [50.0, 80.0], sigma=4)["distinct"] is False
    with pytest.raises(MmlmError, match="sigma"):
        modality_verdict(a, a, sigma=0)


# --- CLI, end to end --------------------------------------------------------------------------

def test_cli_run_folder_json_plots_and_tables(tmp_path):
    run = exact_run(tmp_path / "run", grad_norm=grad_norms(600, [200]))
    out = tmp_path / "out"
    r = run_cli("analyze", run, "--out", out, "--json", "--window", "20", "--tol", "0.001")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res == json.loads((out / "analysis.json").read_text())
    assert res["plateaus"] == {"run": {d: [list(iv) for iv in ivs] for d, ivs in EXACT.items()}}
    assert res["plateau_fraction"]["run"]["b"] == pytest.approx(81 / 600)
    assert res["spikes"] == {"run": 1}
    for key in ("batch_size", "competition", "by_size", "settings"):
        assert key in res
    assert res["settings"]["plateau"] == {"window": 20, "tol": 0.001, "min_len": None}
    assert res["plots"] == ["run_run.png"] and (out / "run_run.png").read_bytes()[:4] == b"\x89PNG"
    # options before PATH, rich tables, default output folder
    r = run_cli("analyze", "--no-plots", "--window", "20", "--tol", "0.001", run)
    assert r.returncode == 0, r.stderr
    assert "100-180, 400-470" in r.stdout and "250-330" in r.stdout
    assert (run / "analysis" / "analysis.json").is_file() and not list((run / "analysis").glob("*.png"))


def test_cli_bad_input_one_line_error(tmp_path):
    def check(r, *needles):
        assert r.returncode == 1
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        for s in needles:
            assert s in r.stderr
        assert not (tmp_path / "out").exists()

    (tmp_path / "empty").mkdir()
    check(run_cli("analyze", tmp_path / "empty", "--out", tmp_path / "out"), "no metrics.jsonl")
    run = exact_run(tmp_path / "bad")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[6] = lines[6][:-3]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    check(run_cli("analyze", run, "--out", tmp_path / "out"), "metrics.jsonl:7: malformed metrics line")
    single = write_run(tmp_path / "single", {"text": np.linspace(5, 3, 100)})
    check(run_cli("analyze", single, "--out", tmp_path / "out"), "one dataset only (text)", "mixed run")
    check(run_cli("analyze", "modality", "--data", tmp_path, "--a", "text", "--b", "text", "--run", single),
          "needs a pair of datasets")


def test_cli_modality_is_a_subcommand():
    r = run_cli("analyze", "modality", "--help")
    assert r.returncode == 0 and "--sigma" in r.stdout and "--max-docs" in r.stdout
    r = run_cli("analyze", "--help")
    assert r.returncode == 0 and "modality" in r.stdout and "PATH --out DIR" in r.stdout
