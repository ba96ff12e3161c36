"""The law families and holdout rules of `mmlm fit`, on planted data where the truth is known."""
import json
import subprocess
import sys

import numpy as np
import pytest

from mmlm.errors import MmlmError
from mmlm.laws import UnimodalLaw, fitting, forms
from mmlm.laws import holdout as H
from mmlm.laws.datacon import DataConstrainedLaw
from mmlm.laws.isoflop import analyse

TRUTH = dict(E=1.8, A=480.0, B=2100.0, alpha=0.34, beta=0.37)


def chinchilla_law(N, D, E=1.8, A=480.0, B=2100.0, alpha=0.34, beta=0.37):
    return E + A / N**alpha + B / D**beta


def grid(noise=0.0, seed=0, tie=False):
    rng = np.random.default_rng(seed)
    N, D = (a.ravel() for a in np.meshgrid(np.logspace(7, 9.5, 6), np.logspace(9, 11.5, 6)))
    t = dict(TRUTH, beta=TRUTH["alpha"]) if tie else TRUTH
    return N, D, chinchilla_law(N, D, **t) * np.exp(rng.normal(0, noise, len(N))), t


# ---- --tie-exponents and --objective lsq ------------------------------------------------------

def test_tied_exponents_recover_a_tied_law():
    N, D, L, t = grid(noise=0.002, tie=True)
    law = UnimodalLaw(tie_exponents=True).fit(N, D, L)
    assert law.alpha_ == law.beta_
    assert law.alpha_ == pytest.approx(t["alpha"], abs=0.02)
    assert law.E_ == pytest.approx(t["E"], rel=0.02)
    # the tied fit can be no better than the free one on the same points, and not much worse here
    free = UnimodalLaw().fit(N, D, L)
    assert free.objective_ <= law.objective_ * (1 + 1e-9)
    assert law.to_dict()["tie_exponents"] is True


def test_tied_fast_fit_reaches_the_reference_minimum():
    N, D, L, _ = grid(noise=0.003, seed=1)
    for objective in ("huber-log", "lsq"):
        p = forms.make_problem(N, D, L, objective=objective, tie=True)
        fast = fitting.fit_fast(p)
        ref = fitting.fit_reference(p, ((0.0, 0.5), (0.0, 5.0, 10.0), (0.0, 5.0, 10.0), (0.2, 0.5), (0.2, 0.5)))
        assert fast.theta[3] == fast.theta[4] and ref.theta[3] == pytest.approx(ref.theta[4])
        assert fast.objective <= ref.objective * (1 + 1e-9)


def test_lsq_is_least_squares_on_the_loss():
    """With additive (not multiplicative) noise, lsq minimises the sum of squared loss residuals: no
    other fit (here the Huber one) has a lower one, and the reference method agrees."""
    rng = np.random.default_rng(3)
    N, D, L0, _ = grid()
    L = L0 + rng.normal(0, 0.01, len(L0))
    lsq = UnimodalLaw(objective="lsq").fit(N, D, L)
    hub = UnimodalLaw().fit(N, D, L)
    rss = lambda law: float(((law.predict(N, D) - L) ** 2).sum())  # noqa: E731
    assert lsq.objective_ == pytest.approx(rss(lsq), rel=1e-9)
    assert rss(lsq) <= rss(hub)
    assert lsq.alpha_ == pytest.approx(TRUTH["alpha"], abs=0.05)
    assert lsq.to_dict()["fit_objective"] == "lsq"
    with pytest.raises(MmlmError, match="unknown objective"):
        UnimodalLaw(objective="l1")


# ---- holdout rules ------------------------------------------------------------------------------

def test_holdout_rules_parse_and_select():
    N = np.array([1e7, 1e8, 1e8 * 1.005, 1e9, 1e10])
    D = np.array([1e9, 1e10, 1e11, 1e12, 4e11])
    assert H.parse("largest").mask(N, D).tolist() == [False, False, False, False, True]
    assert H.parse("sizes:2").mask(N, D).tolist() == [False, False, False, True, True]
    assert H.parse("sizes:3").mask(N, D).tolist() == [False, True, True, True, True]  # 1e8 and 1.005e8: one size
    assert H.parse("N>=1e9").mask(N, D).tolist() == [False, False, False, True, True]
    assert H.parse("D>3e11").mask(N, D).tolist() == [False, False, False, True, True]
    assert H.parse("D < 1e10").mask(N, D).tolist() == [True, False, False, False, False]
    assert not H.parse("none").active
    for bad in ("smallest", "sizes:0", "sizes:x", "N>=-1", "X>3", "N=>1e9"):
        with pytest.raises(MmlmError, match="--holdout"):
            H.parse(bad)


def test_holdout_errors_are_signed():
    """Held-out points planted 2% above the law: the refitted law under-predicts them by ~2%."""
    N, D, L, _ = grid()
    rule = H.parse("N>=3e9")
    held = rule.mask(N, D)
    L = np.where(held, L * 1.02, L)
    law = UnimodalLaw().fit(N, D, L)
    h, warning = H.evaluate(rule, N, D, L, lambda keep: (lambda m, sub=law.refit(N[keep], D[keep], L[keep]): sub.predict(N[m], D[m])))
    assert warning is None
    assert h["points"] == held.sum()
    assert h["mean_signed"] == pytest.approx(-0.02 / 1.02, abs=0.002)
    assert h["mean_abs"] == pytest.approx(abs(h["mean_signed"]), rel=0.1)
    assert h["max_abs"] >= h["mean_abs"]
    assert "under-predicts" in H.describe(h)


def test_holdout_that_leaves_too_little_is_a_warning():
    N, D, L, _ = grid()
    law = UnimodalLaw().fit(N, D, L)
    h, warning = H.evaluate(H.parse("N>=1e7"), N, D, L, lambda keep: None)
    assert h is None and "left to fit" in warning
    h, warning = H.evaluate(H.parse("N>1e12"), N, D, L, lambda keep: None)
    assert h is None and "no point" in warning
    assert law.n_params == 5


# ---- IsoFLOP analysis -------------------------------------------------------------------------

def isoflop_points(noise=0.0, seed=0, alpha=0.34, beta=0.28):
    """IsoFLOP curves of a known law: 9 sizes around the optimum of each of 6 budgets."""
    rng = np.random.default_rng(seed)
    G = (alpha * TRUTH["A"] / (beta * TRUTH["B"])) ** (1 / (alpha + beta))
    N, D, C = [], [], []
    for c in np.logspace(18, 21, 6):
        n_opt = G * (c / 6) ** (beta / (alpha + beta))
        for n in n_opt * np.logspace(-0.8, 0.8, 9):
            N.append(n), D.append(c / (6 * n)), C.append(c)
    N, D = np.array(N), np.array(D)
    L = chinchilla_law(N, D, alpha=alpha, beta=beta) * np.exp(rng.normal(0, noise, len(N)))
    return N, D, L, beta / (alpha + beta)


@pytest.mark.parametrize("curve", ["parabola", "akima"])
def test_isoflop_recovers_the_compute_optimal_exponent(curve):
    N, D, L, a = isoflop_points()
    out = analyse(N, D, L, curve=curve)
    assert len(out["optima"]) == 6 and not out["skipped"]
    assert out["a"] == pytest.approx(a, abs=0.01)
    assert out["a"] + out["b"] == pytest.approx(1.0, abs=1e-9)  # C = 6 N* D*
    ll = out["loss_law"]
    assert ll["E"] == pytest.approx(TRUTH["E"], rel=0.05)  # L*(C) tends to E


def test_isoflop_bootstrap_interval_covers_the_truth():
    N, D, L, a = isoflop_points(noise=0.003, seed=4)
    out = analyse(N, D, L, bootstrap=60, seed=1)
    lo, hi = out["ci"]["a"]
    assert lo < a < hi and lo < out["a"] < hi
    assert hi - lo < 0.2


def test_isoflop_skips_budgets_without_a_bracketed_minimum():
    N, D, L, _ = isoflop_points()
    keep = N < np.sort(N)[len(N) // 2]  # drop the upper half of the sizes: the big budgets lose their minimum
    out = analyse(N[keep], D[keep], L[keep])
    assert out["skipped"] and all("bracketed" in s["why"] or "sizes" in s["why"] for s in out["skipped"])
    assert len(out["optima"]) + len(out["skipped"]) == 6


# ---- the data-constrained law -----------------------------------------------------------------

def test_data_constrained_law_recovers_planted_repetition_values():
    rng = np.random.default_rng(0)
    truth = (1.9, 500.0, 1500.0, 0.35, 0.35, 12.0, 4.0)
    from mmlm.laws.datacon import predict_params

    N, D, U = [], [], []
    for n in np.logspace(7.5, 9.5, 5):
        for u in np.logspace(8.5, 10.5, 4):
            for epochs in (1, 2, 4, 10, 30, 100):
                N.append(n), D.append(u * epochs), U.append(u)
    N, D, U = map(np.array, (N, D, U))
    L = predict_params(truth, N, D, U) * np.exp(rng.normal(0, 0.002, len(N)))
    law = DataConstrainedLaw(tie_exponents=True).fit(N, D, U, L)
    assert law.R_D_ == pytest.approx(truth[5], rel=0.25)
    assert law.alpha_ == pytest.approx(truth[3], abs=0.02)
    # a repeated token is worth less than a fresh one
    assert law.predict(1e9, 1e11, 1e10) > law.predict(1e9, 1e11, 1e11)
    d = law.to_dict()
    assert {"R_D", "R_N", "E", "A", "B", "alpha", "beta"} <= set(d) and d["law"] == "data-constrained"


# ---- the CLI ----------------------------------------------------------------------------------

def _csv(tmp_path, N, D, L, U=None):
    path = tmp_path / "runs.csv"
    with open(path, "w") as f:
        f.write("N,D,loss" + (",U" if U is not None else "") + "\n")
        for i in range(len(N)):
            f.write(f"{N[i]!r},{D[i]!r},{L[i]!r}" + (f",{U[i]!r}" if U is not None else "") + "\n")
    return path


def _mmlm(*args):
    return subprocess.run([sys.executable, "-m", "mmlm.cli.main", *map(str, args)], capture_output=True, text=True)


def test_cli_holdout_rule_tie_and_isoflop(tmp_path):
    N, D, L, a = isoflop_points(noise=0.001)
    path = _csv(tmp_path, N.tolist(), D.tolist(), L.tolist())
    r = _mmlm("fit", path, "-o", tmp_path / "out", "--no-plots", "--holdout", "sizes:2", "--tie-exponents",
              "--objective", "lsq", "--isoflop")
    assert r.returncode == 0, r.stderr
    laws = json.loads((tmp_path / "out" / "laws.json").read_text())
    d = laws["unimodal"]["default"]
    assert d["alpha"] == d["beta"] and d["fit_objective"] == "lsq" and d["tie_exponents"] is True
    assert set(d["holdout"]) == {"points", "mean_abs", "max_abs", "mean_signed"}
    assert d["holdout"]["points"] == 2  # every size is distinct here: the two largest runs
    iso = laws["isoflop"]["default"]
    assert iso["a"] == pytest.approx(a, abs=0.02) and len(iso["optima"]) == 6
    report = (tmp_path / "out" / "report.md").read_text()
    assert "predicts the loss" in report and "IsoFLOP" in report


@pytest.mark.parametrize("args, message", [
    (("--holdout", "N>>3"), "--holdout 'N>>3' is not a rule"),
    (("--law", "data-constrained"), "--law data-constrained needs --unique-col"),
    (("--law", "kaplan"), "--law must be one of"),
    (("--objective", "mse"), "--objective must be one of"),
    (("--isoflop-curve", "spline"), "--isoflop-curve must be one of"),
    (("--group-col", "x"), "--group-col only splits the --isoflop analysis"),
    (("--law", "data-constrained", "--unique-col", "nope"), "missing column(s) 'nope'"),
])
def test_cli_bad_options_are_one_line_errors(tmp_path, args, message):
    N, D, L, _ = grid()
    path = _csv(tmp_path, N.tolist(), D.tolist(), L.tolist())
    r = _mmlm("fit", path, "-o", tmp_path / "out", "--no-plots", *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_unique_tokens_above_tokens_is_an_error(tmp_path):
    N, D, L, _ = grid()
    U = D.copy()
    U[3] = D[3] * 2
    path = _csv(tmp_path, N.tolist(), D.tolist(), L.tolist(), U.tolist())
    r = _mmlm("fit", path, "-o", tmp_path / "out", "--law", "data-constrained", "--unique-col", "U")
    assert r.returncode != 0 and "line 5: U is" in r.stderr and "more than the" in r.stderr


def test_holdout_rule_applies_to_pair_laws_too(tmp_path):
    """A sweep drawn from known laws (no noise): every law, uni-modal and pair, gets its holdout, and
    a law that is exactly right predicts the held-out runs to ~0."""
    from mmlm.laws import synthetic
    from mmlm.laws.fitted import fit_table
    from mmlm.laws.table import read_table

    path = tmp_path / "results.csv"
    path.write_text(synthetic.sweep_csv(noise=0.0))
    fitted = fit_table(read_table(path), holdout="sizes:2")
    laws = fitted.laws()
    for kind in ("unimodal", "bimodal"):
        for name, d in laws[kind].items():
            h = d["holdout"]
            assert h is not None, (kind, name, d["warnings"])
            assert h["points"] == 2 * len(synthetic.TOKENS)  # the two largest of the 6 sizes, every budget
            assert h["mean_abs"] < 1e-3, (kind, name, h)
    assert fitted.settings["holdout"] == "sizes:2"
