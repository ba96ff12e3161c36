"""`mmlm fit` and `mmlm law` end to end, through the installed CLI, on tables generated here."""
import json
import subprocess
import sys

import numpy as np
import pytest

from mmlm.laws import synthetic
from mmlm.laws.fitted import bimodal_law, load_laws, unimodal_law

UNI_KEYS = {"E", "A", "B", "alpha", "beta", "objective", "n_points", "ci", "holdout_error", "warnings",
            "holdout", "fit_objective", "tie_exponents", "identifiable", "why", "sigma"}
BI_KEYS = {"C", "A", "B", "alpha", "beta", "objective", "n_points", "ci", "warnings", "holdout", "identifiable", "why",
           "ci_level", "ci_barrier", "matched", "n_matched", "sigma", "design"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mmlm.cli.main", *map(str, args)], capture_output=True, text=True)


def write_table(path, columns, rows):
    path.write_text(",".join(columns) + "\n" + "".join(",".join(str(r[c]) for c in columns) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One `mmlm fit` of a sweep-style table, shared by the tests that read its outputs."""
    tmp = tmp_path_factory.mktemp("fit")
    csv_path = tmp / "results.csv"
    csv_path.write_text(synthetic.sweep_csv(noise=1e-3, seed=1))
    out = tmp / "fit"
    r = run_cli("fit", csv_path, "--out", out, "--bootstrap", 8, "--holdout", "largest", "--jobs", 1, "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_fit_writes_laws_json_plots_and_report(fitted):
    out, laws = fitted
    assert json.loads((out / "laws.json").read_text()) == laws
    assert set(laws) == {"unimodal", "bimodal", "noise"}
    assert set(laws["unimodal"]) == {"code", "text"}
    assert set(laws["bimodal"]) == {"code|text"}
    for name, d in laws["unimodal"].items():
        assert set(d) == UNI_KEYS
        assert set(d["ci"]) == {"E", "A", "B", "alpha", "beta"}
        assert d["n_points"] == len(synthetic.SIZES) * len(synthetic.TOKENS)
        assert 0 < d["holdout_error"] < 0.01
        for k, v in synthetic.UNIMODAL[name].items():
            assert d[k] == pytest.approx(v, rel=0.1)
            lo, hi = d["ci"][k]
            assert lo <= d[k] <= hi
    d = laws["bimodal"]["code|text"]
    assert set(d) == BI_KEYS
    for k, v in synthetic.BIMODAL["code|text"].items():
        assert d[k] == pytest.approx(v, rel=0.25)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["isoflop_code.png", "isoflop_text.png", "loss_vs_d_code.png", "loss_vs_d_text.png", "pair_code_text.png"]
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    for name in pngs:
        assert f"]({name})" in report
    assert "| text |" in report and "| code\\|text |" in report  # the pair's "|" escaped in the table
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_law_commands_json(fitted):
    out, _ = fitted
    laws_path = out / "laws.json"
    laws = load_laws(laws_path)
    r = run_cli("law", "predict", laws_path, "--n", 1e9, "--d", 2e10, "--dataset", "text", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["loss"] == pytest.approx(float(unimodal_law(laws, "text")[1].predict(1e9, 2e10)))

    r = run_cli("law", "optimal", laws_path, "--flops", 1e21, "--dataset", "code", "--json")
    assert r.returncode == 0, r.stderr
    opt = json.loads(r.stdout)
    assert {"n", "d", "loss"} <= set(opt)
    assert 6 * opt["n"] * opt["d"] == pytest.approx(1e21)
    law = unimodal_law(laws, "code")[1]
    assert opt["loss"] == pytest.approx(float(law.predict(opt["n"], opt["d"])))
    assert law.predict(opt["n"] * 1.3, opt["d"] / 1.3) > opt["loss"]

    r = run_cli("law", "barrier", laws_path, "--pair", "text,code", "--n", 1e12, "--d", 1e14, "--json")
    assert r.returncode == 0, r.stderr
    bar = json.loads(r.stdout)
    pair = bimodal_law(laws, "code,text")[1]
    assert bar["pair"] == "code|text"
    assert bar["n_min"] == pytest.approx((pair.A_ / pair.C_) ** (1 / pair.alpha_))
    assert bar["point"]["side"] == ("synergy" if -pair.interaction(1e12, 1e14) > 0 else "competition")

    r = run_cli("law", "plan", laws_path, "--flops", 1e22, "--datasets", "code,text", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["winner"] == ("mixed" if plan["mixed"]["loss"] < plan["separate"]["loss"] else "separate")
    assert 0 < plan["separate"]["split"] < 1


def test_law_commands_print_tables(fitted):
    out, _ = fitted
    r = run_cli("law", "optimal", out / "laws.json", "--flops", 1e21, "--dataset", "text")
    assert r.returncode == 0, r.stderr
    assert "compute-optimal" in r.stdout and "loss" in r.stdout
    r = run_cli("law", "plan", out / "laws.json", "--flops", 1e22, "--datasets", "text,code")
    assert r.returncode == 0, r.stderr
    assert "one mixed model" in r.stdout and "winner" in r.stdout


def test_fit_generic_csv_with_flops_and_dataset_columns_prints_tables_and_warnings(tmp_path):
    law = synthetic.laws()[0]["text"]
    N, D = (a.ravel() for a in np.meshgrid(synthetic.SIZES, synthetic.TOKENS))
    good = law.predict(N, D)
    rising = 1.5 + 300 / N**0.3 + 0.01 * np.log(D)  # rises with D: no B / D^beta term fits it
    csv_path = tmp_path / "generic.csv"
    csv_path.write_text("params,compute,domain,val_loss\n" + "".join(
        f"{n},{6 * n * d},good,{g}\n{n},{6 * n * d},rising,{r}\n" for n, d, g, r in zip(N, D, good, rising)))
    out = tmp_path / "fit"
    r = run_cli("fit", csv_path, "-o", out, "--n-col", "params", "--flops-col", "compute", "--loss-col", "val_loss",
                "--dataset-col", "domain", "--no-plots")
    assert r.returncode == 0, r.stderr
    assert "uni-modal laws" in r.stdout and "good" in r.stdout
    assert "warning" in r.stdout and "rising: B at its lower bound" in r.stdout
    laws = json.loads((out / "laws.json").read_text())["unimodal"]
    for k, v in synthetic.UNIMODAL["text"].items():
        assert laws["good"][k] == pytest.approx(v, rel=1e-4)  # D = C / 6N recovered the tokens
    assert laws["good"]["warnings"] == []
    assert "B at its lower bound (~0)" in laws["rising"]["warnings"]
    assert not list(out.glob("*.png"))


def test_fit_datasets_leaves_out_the_runs_of_others(tmp_path):
    """A dataset with a single run (the demo's digits model) stops a fit; --datasets leaves it and every
    mixture that trained on it out, and the laws of the rest are as without it."""
    columns, rows = synthetic.sweep_rows(noise=0.0)
    columns = [*columns, "tokens_image-text"]
    rows = [dict(r, **{"tokens_image-text": 0}) for r in rows]
    one = dict(rows[0], run_id="digits", mixture="image-text", eval_dataset="image-text", tokens_code=0,
               **{"tokens_image-text": rows[0]["tokens"]})
    csv_path = write_table(tmp_path / "results.csv", columns, [*rows, one])
    assert "dataset 'image-text': 1 points" in run_cli("fit", csv_path, "-o", tmp_path / "a", "--no-plots").stderr
    r = run_cli("fit", csv_path, "-o", tmp_path / "b", "--no-plots", "--datasets", "text", "--json")
    assert r.returncode == 0, r.stderr
    laws = json.loads(r.stdout)
    assert list(laws["unimodal"]) == ["text"] and not laws.get("bimodal")
    for k, v in synthetic.UNIMODAL["text"].items():
        assert laws["unimodal"]["text"][k] == pytest.approx(v, rel=1e-4)


def _sweep_with(tmp_path, edit=None, **kwargs):
    columns, rows = synthetic.sweep_rows(noise=0.0, **kwargs)
    if edit:
        rows = edit(rows)
    return write_table(tmp_path / "results.csv", columns, rows)


def _nan_loss(rows):
    rows[4]["loss"] = "nan"
    return rows


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda t: _sweep_with(t, _nan_loss), (), r"results.csv line 6: loss is 'nan'"),
        (lambda t: _sweep_with(t), ("--loss-col", "val"), "missing column(s) 'val' (--loss-col)"),
        (lambda t: _sweep_with(t, sizes=synthetic.SIZES[:2], tokens=synthetic.TOKENS[:2]), (),
         "dataset 'code': 4 points"),
        (lambda t: _sweep_with(t, lambda rows: [r for r in rows if r["mixture"] != "text"]), (),
         "pair code|text has no runs trained on text alone"),
        (lambda t: t / "missing.csv", (), "missing.csv: no such file"),
        (lambda t: _sweep_with(t), ("--method", "magic"), "--method must be one of fast, reference"),
        (lambda t: _sweep_with(t), ("--holdout", "smallest"), "--holdout 'smallest' is not a rule"),
        (lambda t: _sweep_with(t), ("--datasets", "text,speech"), "--datasets: speech not in"),
        (lambda t: _sweep_with(t), ("--datasets", ","), "--datasets names no dataset"),
    ],
)
def test_fit_bad_input_is_one_line_error(tmp_path, make, args, message):
    csv_path = make(tmp_path)
    out = tmp_path / "fit"
    r = run_cli("fit", csv_path, "--out", out, *args)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert message in " ".join(r.stderr.split())
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize(
    "args, message",
    [
        (("predict", "{laws}", "--n", 1e9, "--d", 1e10), "has 2 uni-modal laws; pick one with --dataset"),
        (("predict", "{laws}", "--n", -5, "--d", 1e10, "--dataset", "text"), "--n must be a finite positive number"),
        (("optimal", "{laws}", "--flops", 1e21, "--dataset", "speech"), "no uni-modal law 'speech'"),
        (("barrier", "{laws}", "--pair", "text,speech"), "no bi-modal law for text|speech"),
        (("plan", "{missing}", "--flops", 1e21, "--datasets", "text,code"), "no such file"),
        (("plan", "{broken}", "--flops", 1e21, "--datasets", "text,code"), "unreadable laws.json file"),
    ],
)
def test_law_bad_input_is_one_line_error(fitted, tmp_path, args, message):
    out, _ = fitted
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    paths = {"laws": out / "laws.json", "missing": tmp_path / "nope.json", "broken": broken}
    r = run_cli("law", *(str(a).format(**paths) for a in args))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error:") and message in " ".join(r.stderr.split()), r.stderr
