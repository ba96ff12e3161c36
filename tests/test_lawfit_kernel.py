"""The compiled law-fit kernel (kernels/_lawfit.pyx) agrees with its plain-Python twin (kernels/lawfit_ref.py)."""
import numpy as np
import pytest

from mmlm.kernels import _lawfit, lawfit_ref
from mmlm.laws import fitting, forms


def _problem(kind: str, tie: bool, sign=1.0, seed=0):
    rng = np.random.default_rng(seed)
    N = 10 ** rng.uniform(7, 10, 60)
    D = 10 ** rng.uniform(9, 12, 60)
    L = (1.7 + 400 / N**0.33 + 1500 / D**0.3) * np.exp(rng.normal(0, 0.01, 60))
    base = None if sign > 0 else L + 0.05
    p = forms.make_problem(N, D, L, base=base, sign=sign, objective=kind, tie=tie)
    return p.reweighted(rng.integers(0, 3, 60).astype(float))  # some zero weights, some doubled


@pytest.mark.parametrize("kind", ["huber-log", "lsq"])
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_kernel_matches_its_python_twin(kind, tie, sign):
    p = _problem(kind, tie, sign)
    args = (p.log_n, p.log_d, p.log_loss, p.base, p.sign, p.weights, forms.HUBER_DELTA, p.kind)
    for theta in ([0.5, 6.0, 7.0, 0.3, 0.3], [0.4, 5.5, 7.5, 0.35, 0.28], [-2.0, 3.0, 4.0, 0.1, 0.2]):
        f1, g1 = _lawfit.objective_grad(np.array(theta), *args)
        f2, g2 = lawfit_ref.objective_grad(np.array(theta), *args)
        assert f1 == pytest.approx(f2, rel=1e-12)
        np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-14)
    start = np.array([0.5, 6.0, 7.0, 0.3, 0.3 if tie else 0.25])
    pargs = (p.log_n, p.log_d, p.log_loss, p.base, p.sign, p.weights, forms.HUBER_DELTA,
             fitting._LO, fitting._HI, 300, p.kind, p.tie)
    t1, f1 = _lawfit.polish(start, *pargs)
    t2, f2 = lawfit_ref.polish(start, *pargs)
    assert f1 == pytest.approx(f2, rel=1e-9)
    np.testing.assert_allclose(t1, t2, rtol=1e-6, atol=1e-8)
    assert f1 < lawfit_ref.objective_grad(start, *args)[0]  # the polish did something
    if tie:
        assert t1[3] == t1[4]


def test_gradient_is_exact():
    """Finite differences of the compiled objective agree with its gradient (both objectives)."""
    for kind in ("huber-log", "lsq"):
        p = _problem(kind, False)
        theta = np.array([0.45, 6.1, 7.2, 0.32, 0.29])
        f, g = fitting.objective_grad(theta, p)
        for j in range(5):
            e = np.zeros(5)
            e[j] = 1e-7
            num = (fitting.objective_grad(theta + e, p)[0] - fitting.objective_grad(theta - e, p)[0]) / 2e-7
            assert num == pytest.approx(g[j], rel=1e-4, abs=1e-9)
