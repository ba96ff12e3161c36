"""What a fitted law says about spending compute: optimal size, the competition barrier, mixed vs separate.

Compute is C = 6 N D (D = all tokens the model trains on).
"""
from __future__ import annotations

import math

import numpy as np

from mmlm.errors import MmlmError

from .bimodal import BimodalLaw
from .unimodal import UnimodalLaw


def _check_flops(flops: float) -> float:
    flops = float(flops)
    if not math.isfinite(flops) or flops <= 0:
        raise MmlmError(f"--flops must be a finite positive number, got {flops!r}")
    return flops


def _argmin(fn, lo: float, hi: float, points: int = 801) -> tuple[float, float]:
    """Minimiser and minimum of a vectorised fn on [lo, hi]: a dense grid, then golden-section search
    between the best grid point's neighbours. (Every function minimised here is convex in its
    argument, so this finds the minimum; the grid first is cheap insurance.)"""
    xs = np.linspace(lo, hi, points)
    ys = fn(xs)
    i = int(np.nanargmin(ys))
    a, b = xs[max(i - 1, 0)], xs[min(i + 1, points - 1)]
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = fn(np.array([c, d]))
    for _ in range(80):  # shrinks the bracket by 0.618^80 ~ 1e-17
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = fn(np.array([c]))[0]
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = fn(np.array([d]))[0]
    x = 0.5 * (a + b)
    fx = float(fn(np.array([x]))[0])
    return (x, fx) if fx <= ys[i] else (float(xs[i]), float(ys[i]))


def optimal(law, flops: float) -> dict:
    """Compute-optimal N, D and loss for a FLOP budget.

    Uni-modal: the closed form N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)).
    Bi-modal (a BimodalLaw): numerically, with the tokens split evenly (Di = Dj = D/2) as in the paper.
    """
    C = _check_flops(flops)
    if isinstance(law, BimodalLaw):
        return optimal_numeric(lambda n, d: law.predict(n, d / 2, d / 2), C)
    a, b = law.alpha_, law.beta_
    if a <= 0 or b <= 0:
        raise MmlmError(f"the law has alpha = {a:g}, beta = {b:g}: no finite compute-optimal size (both must be > 0)")
    G = (a * law.A_ / (b * law.B_)) ** (1 / (a + b))
    n = G * (C / 6) ** (b / (a + b))
    d = C / (6 * n)
    return {"flops": C, "n": float(n), "d": float(d), "loss": float(law.predict(n, d))}


def optimal_numeric(loss_fn, flops: float) -> dict:
    """Minimise loss_fn(N, C / 6N) over N in [1, C/6] (in log N)."""
    C = _check_flops(flops)
    hi = math.log(C / 6)
    if hi <= 0:
        raise MmlmError(f"--flops {C:g} is too small (C / 6 must exceed 1)")
    x, _ = _argmin(lambda x: loss_fn(np.exp(x), C / (6 * np.exp(x))), 0.0, hi)
    n = math.exp(x)
    d = C / (6 * n)
    return {"flops": C, "n": n, "d": d, "loss": float(loss_fn(np.array([n]), np.array([d]))[0])}


def barrier(law: BimodalLaw, n: float | None = None, d: float | None = None, points: int = 25) -> dict:
    """The competition barrier of a pair: where the synergy C equals A / N^alpha + B / D^beta (D = Di + Dj).

    Returns n_min, the smallest N at which synergy is possible at all (as D grows without end), the
    barrier curve (for each N above n_min, the D beyond which one mixed model beats two separate ones
    of the same size on the same tokens), and, given n and d, the margin there and its side.
    """
    C, A, B, al, be = law.C_, law.A_, law.B_, law.alpha_, law.beta_
    # Smallest N with A / N^alpha < C.
    if C <= 0 or (al == 0 and A >= C):
        n_min = None
    elif al == 0 or A == 0:
        n_min = 0.0
    else:
        n_min = (A / C) ** (1 / al)
    curve = []
    if n_min is not None and be > 0 and B > 0:
        start = max(n_min, 1.0) * 1.05
        for nn in np.logspace(math.log10(start), math.log10(start) + 4, points):
            gap = C - A / nn**al
            curve.append({"n": float(nn), "d": float((B / gap) ** (1 / be)) if gap > 0 else None})
    out = {
        "C": C, "A": A, "B": B, "alpha": al, "beta": be,
        "n_min": n_min,
        "curve": curve,
        "sign": "margin = C - A/N^alpha - B/D^beta = separate - mixed loss (same N, same tokens); "
                "> 0: synergy (one mixed model is better)",
    }
    if n is not None or d is not None:
        if n is None or d is None:
            raise MmlmError("give both --n and --d to place a point against the barrier")
        for name, v in (("--n", n), ("--d", d)):
            if not math.isfinite(v) or v <= 0:
                raise MmlmError(f"{name} must be a finite positive number, got {v!r}")
        competition = A / n**al + B / d**be
        margin = C - competition
        out["point"] = {
            "n": float(n), "d": float(d), "synergy": C, "competition": float(competition),
            "margin": float(margin), "side": "synergy" if margin > 0 else "competition",
        }
    return out


def _best_split(loss_i, loss_j) -> tuple[float, float]:
    """f in (0, 1) minimising [loss_i(f) + loss_j(1 - f)] / 2, and that mean loss."""
    return _argmin(lambda f: 0.5 * (loss_i(f) + loss_j(1 - f)), 1e-6, 1 - 1e-6, points=999)


def plan(law: BimodalLaw, flops: float) -> dict:
    """One mixed model or two separate ones, for a FLOP budget and the pair of `law`.

    - mixed: one model trained on both datasets, tokens split evenly (Di = Dj = D/2), N chosen
      compute-optimally by the bi-modal law;
    - separate: two models that see the same per-dataset tokens as the mixed plan (Di and Dj), the
      budget split f : 1 - f between them (sizes N_i = f C / (6 Di), N_j = (1 - f) C / (6 Dj)), f chosen
      to minimise the mean loss. At f = 1/2 both have the mixed model's size: the paper's comparison.
    - separate_free: each model compute-optimal on its share (its own tokens), with the best split:
      the best separate plan at the same total compute.
    The verdict ("winner") compares the best mixed plan with separate_free, the best *free* separate
    plan (a researcher would not hold separate models to the mixed plan's tokens); where no free plan
    exists (an exponent of 0) it falls back to the equal-tokens one. "winner_equal_tokens" is the
    paper's comparison (mixed vs separate at the same per-dataset tokens).
    """
    C = _check_flops(flops)
    li, lj = law.law_i, law.law_j
    mixed = optimal(law, C)
    di = dj = mixed["d"] / 2
    f, sep_loss = _best_split(lambda f: li.predict(f * C / (6 * di), di), lambda f: lj.predict(f * C / (6 * dj), dj))
    ni, nj = f * C / (6 * di), (1 - f) * C / (6 * dj)
    even = float(law.separate(mixed["n"], di, dj))
    try:
        ff, free_loss = _best_split(lambda f: _opt_loss(li, f * C), lambda f: _opt_loss(lj, f * C))
        free = {"split": ff, "loss": free_loss,
                "i": optimal(li, ff * C), "j": optimal(lj, (1 - ff) * C)}
    except MmlmError:
        free = None  # an exponent of 0: no compute-optimal size
    best_sep = free["loss"] if free else sep_loss
    winner = "mixed" if mixed["loss"] < best_sep else "separate"
    return {
        "flops": C,
        "mixed": {"n": mixed["n"], "d": mixed["d"], "d_i": di, "d_j": dj, "loss": mixed["loss"]},
        "separate": {
            "split": f, "n_i": float(ni), "n_j": float(nj), "d_i": di, "d_j": dj,
            "loss_i": float(li.predict(ni, di)), "loss_j": float(lj.predict(nj, dj)),
            "loss": sep_loss, "even_split_loss": even,
        },
        "separate_free": free,
        "winner": winner,
        "compared_with": "separate_free" if free else "separate",
        "advantage": abs(best_sep - mixed["loss"]),
        "winner_equal_tokens": "mixed" if mixed["loss"] < sep_loss else "separate",
        "advantage_equal_tokens": abs(sep_loss - mixed["loss"]),
    }


def _opt_loss(law: UnimodalLaw, flops) -> np.ndarray:
    """Loss at the compute-optimal point for each budget in `flops` (closed form, vectorised)."""
    a, b = law.alpha_, law.beta_
    if a <= 0 or b <= 0:
        raise MmlmError("an exponent of 0: no compute-optimal size")
    flops = np.asarray(flops, dtype=float)
    G = (a * law.A_ / (b * law.B_)) ** (1 / (a + b))
    n = G * (flops / 6) ** (b / (a + b))
    return law.predict(n, flops / (6 * n))
