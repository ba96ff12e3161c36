"""Scaling-law fitting on synthetic data drawn from known coefficients: the objective, both methods,
both laws, the bootstrap, the planning helpers and reading results tables."""
import math

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from mmlm.errors import MmlmError
from mmlm.laws import BimodalLaw, UnimodalLaw, barrier, optimal, plan
from mmlm.laws import fitting, forms, synthetic
from mmlm.laws.planning import optimal_numeric
from mmlm.laws.fitted import fit_table
from mmlm.laws.table import read_table

TRUE = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.28}
TRUE_PAIR = {"C": 0.15, "A": 60.0, "B": 200.0, "alpha": 0.3, "beta": 0.25}
# A 162-start part of Epoch's grid for the reference method (the full 4,500 starts: slow tests).
SMALL_GRID = ((0.0, 0.5), (0.0, 5.0, 10.0), (0.0, 5.0, 10.0), (0.0, 0.5, 1.0), (0.0, 0.5, 1.0))
SMALL_GRID_BIMODAL = ((-3.0, -1.0),) + SMALL_GRID[1:]


def grid_points():
    N, D = np.meshgrid(np.logspace(6.5, 9.5, 6), np.logspace(7.5, 10.5, 6))
    return N.ravel(), D.ravel()


def noisy(x, noise, seed):
    return x * np.exp(np.random.default_rng(seed).normal(0.0, noise, np.shape(x)))


def assert_close_params(law, truth, rtol):
    for k, v in truth.items():
        got = getattr(law, k + "_")
        assert got == pytest.approx(v, rel=rtol), f"{k}: fitted {got}, true {v}"


# ---- the objective --------------------------------------------------------------------------

def test_objective_matches_hoffmann_lse_form_and_its_gradient_is_exact():
    N, D = grid_points()
    L = noisy(UnimodalLaw.from_dict(TRUE).predict(N, D), 2e-3, 0)
    p = forms.make_problem(N, D, L)
    theta = np.array([0.4, 6.2, 7.1, 0.31, 0.27])
    # log L_hat = LSE(a - alpha log N, b - beta log D, e), Huber(delta=1e-3) summed
    lse = np.logaddexp(np.logaddexp(theta[1] - theta[3] * np.log(N), theta[2] - theta[4] * np.log(D)), theta[0])
    r = lse - np.log(L)
    huber = np.where(np.abs(r) <= 1e-3, 0.5 * r**2, 1e-3 * (np.abs(r) - 0.5e-3))
    f, g = fitting.objective_grad(theta, p)
    assert f == pytest.approx(huber.sum(), rel=1e-12)
    assert forms.objective(theta, p) == pytest.approx(f, rel=1e-12)
    num = approx_fprime(theta, lambda t: fitting.objective_grad(t, p)[0], 1e-7)
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-9)


def test_bimodal_objective_gradient_is_exact():
    N, D = grid_points()
    base = 2.0 + 50 / N**0.2
    p = forms.make_problem(N, D, noisy(base - 0.1 + 30 / N**0.3, 2e-3, 1), base=base, sign=-1.0)
    theta = np.array([-2.0, 3.0, 5.0, 0.3, 0.3])
    f, g = fitting.objective_grad(theta, p)
    num = approx_fprime(theta, lambda t: fitting.objective_grad(t, p)[0], 1e-7)
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-9)


# ---- uni-modal law ---------------------------------------------------------------------------

def test_unimodal_recovers_known_coefficients_and_methods_agree():
    N, D = grid_points()
    L = noisy(UnimodalLaw.from_dict(TRUE).predict(N, D), 1e-4, 2)
    fast = UnimodalLaw().fit(N, D, L)
    assert_close_params(fast, TRUE, rtol=0.01)
    assert fast.warnings_ == []
    # the reference procedure (L-BFGS-B from a grid of starts) lands on the same optimum; the
    # fast method's objective is never worse
    ref = fitting.fit_reference(forms.make_problem(N, D, L), SMALL_GRID)
    assert fast.objective_ <= ref.objective * (1 + 1e-9)
    np.testing.assert_allclose(fast.theta_, ref.theta, rtol=2e-3, atol=2e-3)
    # predictions reproduce the data to the noise level
    assert np.abs(fast.predict(N, D) / L - 1).max() < 1e-3


def test_unimodal_fit_is_exact_without_noise():
    N, D = grid_points()
    L = UnimodalLaw.from_dict(TRUE).predict(N, D)
    law = UnimodalLaw().fit(N, D, L)
    assert_close_params(law, TRUE, rtol=1e-5)
    assert law.objective_ < 1e-14


def test_bootstrap_intervals_cover_truth_and_do_not_depend_on_jobs():
    N, D = grid_points()
    L = noisy(UnimodalLaw.from_dict(TRUE).predict(N, D), 2e-3, 3)
    one = UnimodalLaw(bootstrap=12, seed=5).fit(N, D, L)
    two = UnimodalLaw(bootstrap=12, seed=5, jobs=2).fit(N, D, L)
    assert set(one.ci_) == set(TRUE)
    for k in TRUE:
        lo, hi = one.ci_[k]
        assert lo < getattr(one, k + "_") < hi
        assert two.ci_[k] == pytest.approx(one.ci_[k], rel=1e-9)
    other = UnimodalLaw(bootstrap=12, seed=6).fit(N, D, L)
    assert other.ci_ != one.ci_


def test_exponent_at_bound_is_warned():
    N, D = grid_points()
    L = noisy(1.5 + 300 / N**0.3 + 0.01 * np.log(D), 1e-4, 4)  # loss rising with D: no B / D^beta term fits
    law = UnimodalLaw().fit(N, D, L)
    assert "B at its lower bound (~0)" in law.warnings_
    assert law.to_dict()["warnings"] == law.warnings_


def test_unimodal_rejects_bad_points():
    N, D = grid_points()
    L = UnimodalLaw.from_dict(TRUE).predict(N, D)
    with pytest.raises(MmlmError, match="fewer than the law's 5 parameters"):
        UnimodalLaw().fit(N[:4], D[:4], L[:4])
    bad = L.copy()
    bad[3] = np.nan
    with pytest.raises(MmlmError, match=r"loss\[3\]"):
        UnimodalLaw().fit(N, D, bad)
    with pytest.raises(MmlmError, match=r"D\[0\]"):
        UnimodalLaw().fit(N, -D, L)
    with pytest.raises(MmlmError, match="method"):
        UnimodalLaw(method="magic")
    with pytest.raises(MmlmError, match="not fitted"):
        UnimodalLaw().predict(1e9, 1e10)


# ---- bi-modal law ----------------------------------------------------------------------------

def test_bimodal_recovers_known_coefficients_and_methods_agree():
    N, D = grid_points()
    li = UnimodalLaw.from_dict(TRUE)
    lj = UnimodalLaw.from_dict({"E": 0.9, "A": 100.0, "B": 800.0, "alpha": 0.3, "beta": 0.3})
    truth = BimodalLaw.from_dict(TRUE_PAIR, li, lj)
    Di, Dj = 0.5 * D, 0.5 * D
    L = noisy(truth.predict(N, Di, Dj), 1e-4, 5)
    fast = BimodalLaw(li, lj).fit(N, Di, Dj, L)
    assert_close_params(fast, TRUE_PAIR, rtol=0.03)
    base = fast.separate(N, Di, Dj)
    ref = fitting.fit_reference(forms.make_problem(N, D, L, base=base, sign=-1.0), SMALL_GRID_BIMODAL)
    assert fast.objective_ <= ref.objective * (1 + 1e-9)
    np.testing.assert_allclose(fast.theta_, ref.theta, rtol=5e-3, atol=5e-3)
    # the law's pieces: separate models, minus synergy, plus competition
    np.testing.assert_allclose(fast.predict(N, Di, Dj), base + fast.interaction(N, D))


def test_bimodal_uneven_split_uses_both_token_counts():
    N, D = grid_points()
    li = UnimodalLaw.from_dict(TRUE)
    lj = UnimodalLaw.from_dict({"E": 0.9, "A": 100.0, "B": 800.0, "alpha": 0.3, "beta": 0.3})
    truth = BimodalLaw.from_dict(TRUE_PAIR, li, lj)
    share = np.where(np.arange(len(D)) % 2, 0.25, 0.75)
    L = truth.predict(N, share * D, (1 - share) * D)
    fit = BimodalLaw(li, lj).fit(N, share * D, (1 - share) * D, L)
    assert_close_params(fit, TRUE_PAIR, rtol=1e-3)


# ---- planning ---------------------------------------------------------------------------------

def test_optimal_closed_form_matches_numeric_search():
    law = UnimodalLaw.from_dict(TRUE)
    for C in (1e18, 1e21, 1e24):
        closed = optimal(law, C)
        numeric = optimal_numeric(law.predict, C)
        assert closed["n"] == pytest.approx(numeric["n"], rel=1e-4)
        assert closed["n"] * closed["d"] * 6 == pytest.approx(C)
        assert closed["loss"] <= numeric["loss"] + 1e-12
        # no nearby size on the same budget does better
        for f in (0.8, 1.25):
            n = closed["n"] * f
            assert law.predict(n, C / (6 * n)) > closed["loss"]
    with pytest.raises(MmlmError, match="flops"):
        optimal(law, -1)


def test_barrier_curve_balances_synergy_and_competition():
    uni, bi = synthetic.laws()
    law = bi["code|text"]
    res = barrier(law, n=1e10, d=1e12)
    assert res["n_min"] == pytest.approx((law.A_ / law.C_) ** (1 / law.alpha_))
    assert len(res["curve"]) > 3
    for row in res["curve"]:
        # on the curve the interaction term -C + A/N^a + B/D^b is zero
        assert float(law.interaction(row["n"], row["d"])) == pytest.approx(0.0, abs=1e-9)
    point = res["point"]
    assert point["margin"] == pytest.approx(-float(law.interaction(1e10, 1e12)))
    assert point["side"] == ("synergy" if point["margin"] > 0 else "competition")
    assert barrier(law, n=law.C_ * 0 + res["n_min"] / 2, d=1e15)["point"]["side"] == "competition"
    assert barrier(law, n=1e13, d=1e15)["point"]["side"] == "synergy"


def test_plan_compares_mixed_with_separate_at_equal_tokens():
    uni, bi = synthetic.laws()
    law = bi["code|text"]
    for C in (1e18, 1e26):
        res = plan(law, C)
        m, s = res["mixed"], res["separate"]
        assert m["loss"] == pytest.approx(optimal(law, C)["loss"])
        assert s["d_i"] == pytest.approx(m["d"] / 2)
        # the budget is spent exactly, and the best split is no worse than an even one
        assert 6 * (s["n_i"] * s["d_i"] + s["n_j"] * s["d_j"]) == pytest.approx(C)
        assert s["loss"] <= s["even_split_loss"] + 1e-12
        assert s["even_split_loss"] == pytest.approx(float(law.separate(m["n"], m["d_i"], m["d_j"])))
        assert res["winner_equal_tokens"] == ("mixed" if m["loss"] < s["loss"] else "separate")
        assert res["winner"] == ("mixed" if m["loss"] < res["separate_free"]["loss"] else "separate")
    # small budgets sit behind the barrier (competition wins); huge ones past it
    assert plan(law, 1e18)["winner"] == "separate"
    assert plan(law, 1e26)["winner"] == "mixed"


# ---- results tables ---------------------------------------------------------------------------

def test_sweep_table_selects_runs_per_law(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(synthetic.sweep_csv(noise=0.0))
    table = read_table(path)
    assert table.unimodal_names() == ["code", "text"]
    assert table.pairs() == [("code", "text")]
    N, D, L, lines = table.unimodal_points("text")
    assert len(L) == len(synthetic.SIZES) * len(synthetic.TOKENS)
    assert np.all(L < synthetic.OFF_DATASET_LOSS)  # rows of datasets the run did not train on are not used
    np.testing.assert_allclose(L, synthetic.laws()[0]["text"].predict(N, D), rtol=1e-7)
    N, Di, Dj, Lm, lines = table.bimodal_points("code", "text")
    np.testing.assert_allclose(Lm, synthetic.laws()[1]["code|text"].predict(N, Di, Dj), rtol=1e-6)

    fitted = fit_table(table)
    for name, truth in synthetic.UNIMODAL.items():
        assert_close_params(fitted.unimodal[name], truth, rtol=1e-3)
    assert_close_params(fitted.bimodal["code|text"], synthetic.BIMODAL["code|text"], rtol=1e-3)


def test_generic_tables_flops_dataset_and_mixture_columns(tmp_path):
    law = UnimodalLaw.from_dict(TRUE)
    N, D = grid_points()
    L = law.predict(N, D)
    p = tmp_path / "flops.csv"
    p.write_text("params,compute,loss\n" + "".join(f"{n},{6 * n * d},{loss}\n" for n, d, loss in zip(N, D, L)))
    t = read_table(p, n_col="params", flops_col="compute")
    assert t.unimodal_names() == ["default"]
    n2, d2, l2, _ = t.unimodal_points("default")
    np.testing.assert_allclose(d2, D, rtol=1e-12)

    # a mixture column: runs on 'a', on 'b' and on 'a+b' (tokens split evenly without tokens_ columns)
    rows = ["N,D,mix,eval,loss"]
    for n, d in zip(N, D):
        rows += [f"{n},{d},a,a,2.0", f"{n},{d},b,b,3.0", f"{n},{d},a+b,a,2.5", f"{n},{d},a+b,b,3.5"]
    p = tmp_path / "mix.csv"
    p.write_text("\n".join(rows) + "\n")
    t = read_table(p, mixture_col="mix", dataset_col="eval")
    assert t.unimodal_names() == ["a", "b"]
    assert t.pairs() == [("a", "b")]
    n3, di, dj, lm, _ = t.bimodal_points("a", "b")
    np.testing.assert_allclose(di, D / 2)
    np.testing.assert_allclose(lm, 3.0)


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("N,D,loss\n1e6,1e8,3\n2e6,1e8,nan\n", {}, r"line 3: loss is 'nan'"),
        ("N,D,loss\n1e6,1e8,3\n-2e6,1e8,3\n", {}, r"line 3: N is '-2e6'"),
        ("N,D,loss\n1e6,inf,3\n", {}, r"line 2: D is 'inf'"),
        ("N,D,loss\n1e6,1e8\n", {}, r"line 2: 2 fields"),
        ("N,D,loss\n1e6,1e8,3\n", {"loss_col": "val"}, r"missing column 'val' \(--loss-col\)"),
        ("size,loss\n1e6,3\n", {}, r"no N \(model size\) column"),
        ("N,D,loss\n", {}, "no data rows"),
        ("", {}, "empty file"),
        ("N,D,loss\n1e6,1e8,3\n", {"d_col": "D", "flops_col": "D"}, "not both"),
    ],
)
def test_bad_tables_name_the_problem(tmp_path, text, kwargs, message):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(MmlmError, match=message):
        read_table(p, **kwargs)


def test_too_few_points_and_pair_without_unimodal_runs(tmp_path):
    columns, rows = synthetic.sweep_rows(noise=0.0, sizes=synthetic.SIZES[:2], tokens=synthetic.TOKENS[:2])
    p = tmp_path / "few.csv"
    p.write_text(",".join(columns) + "\n" + "".join(",".join(str(r[c]) for c in columns) + "\n" for r in rows))
    with pytest.raises(MmlmError, match=r"dataset 'code': 4 points \(lines .*\), fewer than the law's 5"):
        fit_table(read_table(p))
    columns, rows = synthetic.sweep_rows(noise=0.0)
    rows = [r for r in rows if r["mixture"] != "code"]
    p = tmp_path / "nouni.csv"
    p.write_text(",".join(columns) + "\n" + "".join(",".join(str(r[c]) for c in columns) + "\n" for r in rows))
    with pytest.raises(MmlmError, match=r"pair code\|text has no runs trained on code alone"):
        fit_table(read_table(p))


def test_exclude_top_loss_and_holdout(tmp_path):
    p = tmp_path / "results.csv"
    p.write_text(synthetic.sweep_csv(noise=1e-3, seed=3))
    table = read_table(p)
    full = fit_table(table, holdout="largest")
    fewer = fit_table(table, exclude_top_loss=5)
    n = len(synthetic.SIZES) * len(synthetic.TOKENS)
    assert full.unimodal["text"].n_points_ == n
    assert fewer.unimodal["text"].n_points_ == n - 5
    assert fewer.bimodal["code|text"].n_points_ == n - 5
    err = full.unimodal["text"].holdout_error_
    assert err is not None and 0 < err < 0.01  # the law extrapolates to the largest size
    assert fewer.unimodal["text"].holdout_error_ is None
    assert math.isfinite(full.unimodal["code"].holdout_error_)
