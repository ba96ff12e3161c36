"""`mmlm analyze study`: the preset report's baselines, shares and checks on planted run folders."""
import json

import numpy as np
import pytest

from mmlm.data import heldout_unigram_entropy
from mmlm.sweep import RunSpec
from mmlm.sweep.demo import PRESETS
from mmlm.sweep.demo_report import study_summary, write_study_report
from mmlm.sweep.run_folders import run_dir, write_spec
from test_sweep_grid import make_data


def planted(out, rid, mix, steps, eval_loss, drawn, se=0.01):
    spec = RunSpec(id=rid, size="s", mixture="+".join(mix), mix=mix, tokens=steps * 1024, n_params=1000, data="/d")
    write_spec(out, spec)
    summary = {"status": "done", "n_params": 1000 * (1 + rid.count("big")), "tokens": steps * 1024, "steps": steps,
               "eval_loss": eval_loss, "eval_loss_se": {d: se for d in eval_loss}, "tokens_by_dataset": drawn, "mix": mix}
    (run_dir(out, rid) / "summary.json").write_text(json.dumps(summary))


def test_study_summary_baselines_shares_and_checks(tmp_path):
    a, b = PRESETS["demo"].unimodal
    data = make_data(tmp_path / "data", names=(a, b, "image-text"))
    out = tmp_path / "sweep"
    h = {d: heldout_unigram_entropy(data, d, 65536, 128)["entropy"] for d in (a, b)}
    for d in h:
        planted(out, f"small-{d}", {d: 1.0}, 100, {d: 0.95 * h[d]}, {d: 102400})
        planted(out, f"big-{d}", {d: 1.0}, 400, {d: 0.85 * h[d]}, {d: 409600})  # 15% below the baseline
    # a mixed run whose drawn shares are 51/49: 1% off
    planted(out, f"big-{a}+{b}", {a: 0.5, b: 0.5}, 300, {a: 3.0, b: 3.0}, {a: 5100, b: 4900})
    laws = {"unimodal": {d: {"E": 1.0, "A": 2.0, "B": 3.0, "alpha": 0.3, "beta": 0.3, "holdout_error": 0.02, "warnings": []}
                         for d in h},
            "bimodal": {f"{a}|{b}": {"C": 0.1, "A": 1, "B": 1, "alpha": 0.2, "beta": 0.2, "warnings": ["beta at its bound"]}}}
    (out / "laws").mkdir()
    (out / "laws" / "laws.json").write_text(json.dumps(laws))
    s = study_summary(out, data, "demo", design=False)
    assert s["runs"] == 5 and s["min_steps"] == 100
    assert s["max_share_error"] == pytest.approx(0.01)
    for d in h:
        r = s["datasets"][d]
        assert r["unigram_entropy"] == pytest.approx(h[d]) and r["largest_run"] == f"big-{d}"
        assert r["below_unigram"] == pytest.approx(0.15) and r["holdout_error"] == 0.02 and r["identifiable"]
    assert s["pairs"][f"{a}|{b}"]["identifiable"] is False  # a parameter at a bound
    checks = {c["check"].split(" ")[0] + str(i): c["ok"] for i, c in enumerate(s["checks"])}
    assert list(checks.values()) == [True, True, True, True, True, False, True, False]  # SE > 0.1% of the loss; no digits
    path = write_study_report(out, s)
    text = path.read_text()
    assert "NOT identifiable" in text and "| text |" in text and "- [ ] eval standard error" in text
    assert json.loads((out / "demo.json").read_text())["min_steps"] == 100


def test_unigram_baseline_is_the_heldout_targets(tmp_path):
    data = make_data(tmp_path / "data", names=("text",))
    r = heldout_unigram_entropy(data, "text", 300, 16)
    assert 0 < r["entropy"] < np.log(200) and 0 < r["tokens"] <= 300


def test_design_hypothesis_puts_the_barrier_below_the_grid_centre():
    """The law simulated when the fitted pair law is at its bounds: exponents the uni-modal means, C a share of
    the loss, synergy winning at the grid's centre and losing at its smallest corner (the barrier in reach)."""
    from mmlm.sweep.demo_report import hypothesis

    uni = {"a": {"E": 1.0, "A": 50.0, "B": 400.0, "alpha": 0.4, "beta": 0.3},
           "b": {"E": 2.0, "A": 80.0, "B": 900.0, "alpha": 0.2, "beta": 0.5}}
    sizes, tokens = [4e4, 8e4, 1.6e5, 3.2e5], [2e5, 4e5, 8e5]
    h = hypothesis({"unimodal": uni}, "a|b", sizes, tokens, share=0.02)
    assert h["alpha"] == pytest.approx(0.3) and h["beta"] == pytest.approx(0.4)
    n_c, d_c = np.exp(np.mean(np.log(sizes))), np.exp(np.mean(np.log(tokens)))
    loss = np.mean([u["E"] + u["A"] / n_c ** u["alpha"] + u["B"] / d_c ** u["beta"] for u in uni.values()])
    assert h["C"] == pytest.approx(0.02 * loss)

    def competition(n, d):
        return h["A"] / n ** h["alpha"] + h["B"] / (2 * d) ** h["beta"]

    assert competition(n_c, d_c) == pytest.approx(0.75 * h["C"])  # synergy wins at the centre
    assert competition(min(sizes) / 4, min(tokens) / 4) > h["C"]  # and loses below the grid


def test_study_of_a_folder_that_is_not_a_sweep_is_one_error(tmp_path):
    from mmlm.errors import MmlmError

    data = make_data(tmp_path / "data", names=PRESETS["demo"].unimodal)
    with pytest.raises(MmlmError, match="not a sweep folder"):
        study_summary(tmp_path / "nothing", data, "demo", design=False)
