"""The pair-law estimator on planted studies: matched runs, identifiability flags, intervals, noise, design,
and the CLI's refusal to answer from an unidentified pair law."""
import json
import subprocess
import sys

import numpy as np
import pytest

from mmlm.errors import MmlmError
from mmlm.laws import identify, pair, synthetic
from mmlm.laws.design import grid_points, run_studies, summarise
from mmlm.laws.unimodal import UnimodalLaw

SIZES = np.logspace(7, 9, 5)
TOKENS = np.logspace(9, 10.5, 4)
UNI, BI = synthetic.laws()
TRUE = BI["code|text"]
TRUE_N_MIN = float(identify.barrier_n_min(TRUE.C_, TRUE.A_, TRUE.alpha_))


def study(noise, seed, sizes=SIZES, tokens=TOKENS):
    grid = grid_points(sizes, tokens)
    return pair.simulate(grid, TRUE.law_i, TRUE.law_j, TRUE, noise, noise, noise, np.random.default_rng(seed))


def fit(pts, resamples=60, seed=0):
    li, lj, _ = pair.refit(pts)
    return pair.fit_pair(pts, li, lj, resamples=resamples, seed=seed)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mmlm.cli.main", *map(str, args)], capture_output=True, text=True)


def test_matched_runs_remove_the_unimodal_laws_error():
    # noiseless runs, but uni-modal laws that are off by 0.02 nats: the laws' base is biased, the
    # measured one is not.
    pts = study(0.0, 0)
    wrong_i = UnimodalLaw.from_dict({**synthetic.UNIMODAL["code"], "E": synthetic.UNIMODAL["code"]["E"] + 0.02})
    base, matched = pair.matched_base(pts, wrong_i, TRUE.law_j)
    assert matched.all()
    assert base == pytest.approx(TRUE.separate(pts.mixed["N"], pts.mixed["Di"], pts.mixed["Dj"]), rel=1e-12)
    measured, _ = pair.fit_points(pts, wrong_i, TRUE.law_j)
    from_laws, none = pair.fit_points(pts, wrong_i, TRUE.law_j, use_matched=False)
    assert not none.any()
    assert measured.C_ == pytest.approx(TRUE.C_, rel=1e-3)
    assert abs(from_laws.C_ / TRUE.C_ - 1) > 0.05  # the 0.01-nat bias of the base lands in C


def test_nearby_tokens_are_matched_by_the_laws_slope_and_far_ones_fall_back():
    pts = study(0.0, 0)
    shifted = pair.Points({**pts.ui, "D": pts.ui["D"] * 1.1}, pts.uj, pts.mixed)
    shifted.ui["loss"] = TRUE.law_i.predict(shifted.ui["N"], shifted.ui["D"])
    base, matched = pair.matched_base(shifted, TRUE.law_i, TRUE.law_j)
    assert matched.all()
    assert base == pytest.approx(TRUE.separate(pts.mixed["N"], pts.mixed["Di"], pts.mixed["Dj"]), rel=1e-9)
    far = pair.Points({**pts.ui, "D": pts.ui["D"] * 2}, pts.uj, pts.mixed)
    assert not pair.matched_base(far, TRUE.law_i, TRUE.law_j)[1].any()


def test_identifiable_planted_study_recovers_c_and_covers_the_truth():
    law = fit(study(0.001, 3), resamples=100)
    e = law.extra_
    assert e["identifiable"], e["why"]
    assert e["n_matched"] == len(SIZES) * len(TOKENS)
    assert abs(law.C_ / TRUE.C_ - 1) < 0.35
    lo, hi = law.ci_["C"]
    assert lo < law.C_ < hi and hi - lo < law.C_
    n_lo, n_hi = e["ci_barrier"]["n_min"]
    assert n_lo < TRUE_N_MIN < n_hi


@pytest.mark.parametrize("make, reason", [
    (lambda: study(0.01, 1), "wider than its value"),  # 1% noise: C is not pinned down
    (lambda: study(0.001, 1, sizes=SIZES[:2], tokens=TOKENS), "points for 5 parameters"),  # 8 mixed runs
    (lambda: study(0.001, 1, tokens=TOKENS[:1]), "only one distinct"),  # a single budget: beta unidentified
])
def test_degenerate_planted_studies_are_flagged(make, reason):
    law = fit(make())
    assert law.extra_["identifiable"] is False
    assert any(reason in w for w in law.extra_["why"]), law.extra_["why"]


def test_c_and_b_cancelling_is_flagged_as_a_trade_off():
    # beta ~ 0: B / D^beta is a constant that cancels C, whatever C is.
    pts = study(0.001, 2)
    p = pair.fit_points(pts, TRUE.law_i, TRUE.law_j)[0].problem_
    theta = np.array([np.log(200.0), np.log(40.0), np.log(200.0), 0.3, 1e-5])
    ok, why = identify.check(theta, p, pair.PARAMS, "bimodal", 0.001)
    assert not ok
    assert any("beta at its bound 0" in w for w in why)
    assert any("trade off" in w or "near-singular" in w for w in why), why


def test_interval_coverage_is_sane_on_planted_studies():
    # 8 studies at 0.1% noise: a 90% interval should cover the truth in most (>= 6 of 8 is ~96% likely)
    studies = run_studies(TRUE, grid_points(SIZES, TOKENS), 0.001, seeds=8, resamples=40)
    s = summarise(studies, TRUE, float(SIZES.max()))
    assert s["coverage_C"] >= 0.75 and s["coverage_barrier"] >= 0.75
    assert s["p_identifiable"] >= 0.5
    assert s["median_rel_error_C"] < 0.35


def test_noise_estimate_from_repeats_and_from_residuals():
    rng = np.random.default_rng(0)
    N, D = (a.ravel() for a in np.meshgrid(SIZES, TOKENS))
    N2, D2 = np.repeat(N, 3), np.repeat(D, 3)
    L = TRUE.law_i.predict(N2, D2) * np.exp(rng.normal(0, 0.004, len(N2)))
    law = UnimodalLaw().fit(N2, D2, L)
    pts = {"code": {"N": N2, "D": D2, "loss": L}}
    rep = identify.noise_estimate(pts, {"code": law})
    assert rep["method"] == "repeats" and rep["dof"] == 2 * len(N)
    assert rep["sigma"] == pytest.approx(0.004, rel=0.25)
    one = {"code": {"N": N2[::3], "D": D2[::3], "loss": L[::3]}}
    res = identify.noise_estimate(one, {"code": UnimodalLaw().fit(N2[::3], D2[::3], L[::3])})
    assert res["method"] == "residuals" and res["sigma"] == pytest.approx(0.004, rel=0.5)


# ---- the CLI ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """`mmlm fit` of a paired study at 0.1% noise (identifiable) and at 1% (not)."""
    tmp = tmp_path_factory.mktemp("pairfit")
    out = {}
    for name, noise in (("good", 0.001), ("bad", 0.01)):
        csv_path = tmp / f"{name}.csv"
        csv_path.write_text(synthetic.sweep_csv(noise=noise, seed=4, paired=True, sizes=SIZES, tokens=TOKENS))
        r = run_cli("fit", csv_path, "--out", tmp / name, "--no-plots", "--jobs", 1, "--bootstrap", 40)
        assert r.returncode == 0, r.stderr
        out[name] = (tmp / name, r.stdout)
    return out


def test_fit_reports_identifiability_noise_and_matching(fits):
    good, good_out = fits["good"]
    bad, bad_out = fits["bad"]
    g = json.loads((good / "laws.json").read_text())
    b = json.loads((bad / "laws.json").read_text())
    d = g["bimodal"]["code|text"]
    assert d["identifiable"] is True and d["why"] == [] and d["n_matched"] == 20 and all(d["matched"])
    assert set(d["ci"]) == set(pair.PARAMS) and d["ci_level"] == 0.9
    assert d["ci_barrier"]["n_min"][0] < d["ci_barrier"]["n_min"][1]
    assert g["noise"]["method"] == "residuals" and 0.0005 < g["noise"]["sigma"] < 0.002
    assert "loss noise:" in good_out and "NOT IDENTIFIABLE" not in good_out
    assert b["bimodal"]["code|text"]["identifiable"] is False
    assert "pair law code|text is NOT IDENTIFIABLE" in " ".join(bad_out.split())
    assert "NOT IDENTIFIABLE" in (bad / "report.md").read_text()


def test_barrier_and_plan_refuse_an_unidentified_pair_unless_forced(fits):
    bad = fits["bad"][0] / "laws.json"
    for args in (("barrier", bad, "--pair", "code,text"), ("plan", bad, "--flops", 1e22, "--datasets", "code,text")):
        r = run_cli("law", *args)
        assert r.returncode != 0
        assert len(r.stderr.strip().splitlines()) == 1 and "not identifiable" in r.stderr
        forced = run_cli("law", *args, "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        assert "FORCED (--force)" in json.loads(forced.stdout)["forced"]
    assert "FORCED" in run_cli("law", "barrier", bad, "--pair", "code,text", "--force").stdout


def test_plan_verdict_is_against_the_best_free_separate_plan():
    from mmlm.laws.planning import plan

    for C in (1e18, 1e21, 1e24, 1e27):
        res = plan(TRUE, C)
        free = res["separate_free"]["loss"]
        assert free <= res["separate"]["loss"] + 1e-9  # free tokens can only help
        assert res["winner"] == ("mixed" if res["mixed"]["loss"] < free else "separate")
        assert res["advantage"] == pytest.approx(abs(free - res["mixed"]["loss"]))
    # at 1e23 FLOPs the mixed model beats separate ones held to its tokens, but not the best free plan
    res = plan(TRUE, 1e23)
    assert (res["winner_equal_tokens"], res["winner"], res["compared_with"]) == ("mixed", "separate", "separate_free")


def test_design_command(fits):
    good = fits["good"][0] / "laws.json"
    r = run_cli("law", "design", good, "--pair", "code,text", "--noise", 0.001, "--seeds", 2, "--resamples", 10,
                "--jobs", 1, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["studies"] == 2 and d["sizes"] == pytest.approx(list(SIZES)) and d["noise"] == 0.001
    assert 0 <= d["p_identifiable"] <= 1 and d["median_ci_width_C"] > 0
    # a grid too small for the law, and bad options, are one-line errors
    for args, message in ((("--sizes", "1e7,1e8", "--tokens", "1e9,1e10"), "fewer than the pair law's 5"),
                          (("--sizes", "1e7,abc"), "comma-separated numbers")):
        r = run_cli("law", "design", good, "--pair", "code,text", "--seeds", 2, *args)
        assert r.returncode != 0 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_dof_errors_and_warnings(tmp_path):
    few = synthetic.sweep_rows(noise=1e-3, paired=True, sizes=SIZES[:2], tokens=TOKENS[:2])  # 4 runs per law
    cols, rows = few
    path = tmp_path / "few.csv"
    path.write_text(",".join(cols) + "\n" + "".join(",".join(str(r[c]) for c in cols) + "\n" for r in rows))
    r = run_cli("fit", path, "--out", tmp_path / "o", "--no-plots")
    assert r.returncode != 0 and "fewer than the law's 5 parameters" in r.stderr
    assert not (tmp_path / "o").exists()
    cols, rows = synthetic.sweep_rows(noise=1e-3, paired=True, sizes=SIZES[:2], tokens=TOKENS)  # 8 runs per law
    path.write_text(",".join(cols) + "\n" + "".join(",".join(str(r[c]) for c in cols) + "\n" for r in rows))
    r = run_cli("fit", path, "--out", tmp_path / "o", "--no-plots", "--json")
    assert r.returncode == 0, r.stderr
    laws = json.loads(r.stdout)
    for d in (*laws["unimodal"].values(), *laws["bimodal"].values()):
        assert d["identifiable"] is False
        assert any("fewer than twice" in w for w in d["warnings"])


def test_design_rejects_laws_without_noise_or_grid():
    laws = {"unimodal": synthetic.UNIMODAL, "bimodal": synthetic.BIMODAL, "_path": "hand.json"}
    from mmlm.laws.design import design

    with pytest.raises(MmlmError, match="no loss noise"):
        design(laws, "code,text", sizes=[1e7], tokens=[1e9])
    with pytest.raises(MmlmError, match="no design grid"):
        design(laws, "code,text", noise=0.003)
    with pytest.raises(MmlmError, match="--noise must be"):
        design(laws, "code,text", noise=-1.0, sizes=[1e7], tokens=[1e9])
