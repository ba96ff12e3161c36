"""Competition over training (paper phenomenon 4's barrier, followed along a run).

For a mixed run of datasets i and j, at each of its eval steps:

    ratio = 0.5 * (L_i + L_j) / L_ij

L_ij is the mean of the mixed run's eval losses on i and j at that step. L_i is the eval loss on i of
the uni-modal run of i at the same number of i tokens (likewise L_j): the mixed run's i tokens at a
step are `tokens/<i>` where logged, else `tokens` times i's share of the mixture; the uni-modal run's
eval curve is interpolated linearly in tokens at that count (never extrapolated: steps outside the
uni-modal curve's token range, widened by TOKEN_TOLERANCE on each side, are left out; inside that
margin the curve's end value is used, since a mixture's token shares can differ from its weights
by up to one document).

Convention: ratio > 1 means the mixed model is better than the two uni-modal models it is compared
with (synergy wins); ratio < 1 means competition wins; the competition barrier is ratio = 1.

Matching: a uni-modal run of i is a run trained on i alone with the same model size (size name, else
parameter count) and an eval curve for i. Among several, the one whose curve covers the most of the
mixed run's eval steps, then the one with the mixed run's batch size, then the one whose curve
reaches the most tokens. (A sweep that evaluates only at the end, like the demo, thus pairs a mixed
run of T tokens with the uni-modal runs of T/2.)
"""
from __future__ import annotations

import numpy as np

from .runs import Metrics, Run

TOKEN_TOLERANCE = 0.02  # relative margin around a uni-modal eval curve's token range


def _tokens_at(m: Metrics, steps: np.ndarray, key: str = "tokens") -> np.ndarray | None:
    s, t = m.series(key)
    ok = np.isfinite(t)
    if not ok.any():
        return None
    return np.interp(steps, s[ok], t[ok], left=np.nan, right=np.nan)


def dataset_tokens(run: Run, dataset: str, steps: np.ndarray) -> np.ndarray | None:
    """Tokens of `dataset` the run had seen at each step (NaN where unknown)."""
    m = run.metrics
    if f"tokens/{dataset}" in m.values:
        return _tokens_at(m, steps, f"tokens/{dataset}")
    total = _tokens_at(m, steps)
    share = run.mix.get(dataset)
    if total is None or share is None:
        return None
    return total * share


def _same_size(a: Run, b: Run) -> bool:
    if a.size is not None and b.size is not None:
        return a.size == b.size
    return a.n_params is not None and a.n_params == b.n_params


def _eval_curve(run: Run, dataset: str) -> tuple[np.ndarray, np.ndarray] | None:
    steps, loss = run.metrics.series(f"eval/{dataset}")
    ok = np.isfinite(loss)
    if not ok.any():
        return None
    tokens = dataset_tokens(run, dataset, steps[ok])
    if tokens is None:
        return None
    keep = np.isfinite(tokens)
    if not keep.any():
        return None
    order = np.argsort(tokens[keep], kind="stable")
    return tokens[keep][order], loss[ok][keep][order]


def _covered(tokens: np.ndarray, curve_tokens: np.ndarray) -> np.ndarray:
    """Which token counts lie within a curve's range, widened by TOKEN_TOLERANCE."""
    return (tokens >= curve_tokens[0] * (1 - TOKEN_TOLERANCE)) & (tokens <= curve_tokens[-1] * (1 + TOKEN_TOLERANCE))


def match_unimodal(mixed: Run, dataset: str, runs: list[Run], tokens: np.ndarray | None = None) -> Run | None:
    """The uni-modal run to compare with; `tokens` are the mixed run's `dataset` tokens at its eval steps."""
    cands = [r for r in runs if r.datasets == [dataset] and _same_size(r, mixed) and _eval_curve(r, dataset)]
    if not cands:
        return None

    def rank(r: Run):
        t_u = _eval_curve(r, dataset)[0]
        covered = int(_covered(tokens, t_u).sum()) if tokens is not None else 0
        return covered, r.batch_tokens == mixed.batch_tokens, t_u[-1]
    return max(cands, key=rank)


def competition(mixed: Run, runs: list[Run]) -> tuple[dict | None, str | None]:
    """The ratio along one mixed run of two datasets: (result, None), or (None, why not)."""
    i, j = mixed.pair
    m = mixed.metrics
    if f"eval/{i}" not in m.values or f"eval/{j}" not in m.values:
        return None, f"{mixed.id}: no eval/{i} and eval/{j} in its metrics"
    rows = m.present[f"eval/{i}"] & m.present[f"eval/{j}"]
    steps = m.steps[rows]
    if steps.size == 0:
        return None, f"{mixed.id}: no step with both eval/{i} and eval/{j}"
    l_mixed = {d: m.values[f"eval/{d}"][rows] for d in (i, j)}
    uni, tokens, l_uni = {}, {}, {}
    keep = np.ones(steps.size, bool)
    for d in (i, j):
        tokens[d] = dataset_tokens(mixed, d, steps)
        if tokens[d] is None:
            return None, f"{mixed.id}: neither tokens/{d} nor tokens and a mixture to count {d} tokens"
        uni[d] = match_unimodal(mixed, d, runs, tokens[d])
        if uni[d] is None:
            return None, f"{mixed.id}: no uni-modal run of '{d}' at size {mixed.size or mixed.n_params} with eval/{d}"
        t_u, l_u = _eval_curve(uni[d], d)
        l_uni[d] = np.interp(tokens[d], t_u, l_u)  # constant beyond the ends: used only within the margin
        keep &= _covered(tokens[d], t_u) & np.isfinite(l_mixed[d])
    if not keep.any():
        return None, f"{mixed.id}: its {i}/{j} token counts lie outside the uni-modal runs' eval curves"
    l_ij = 0.5 * (l_mixed[i][keep] + l_mixed[j][keep])
    ratio = 0.5 * (l_uni[i][keep] + l_uni[j][keep]) / l_ij
    above = np.flatnonzero(ratio > 1)
    return {
        "pair": [i, j],
        "unimodal": {d: uni[d].id for d in (i, j)},
        "steps": steps[keep].tolist(),
        "tokens": {d: tokens[d][keep].tolist() for d in (i, j)},
        "loss_unimodal": {d: l_uni[d][keep].tolist() for d in (i, j)},
        "loss_mixed": {d: l_mixed[d][keep].tolist() for d in (i, j)},
        "ratio": ratio.tolist(),
        "final_ratio": float(ratio[-1]),
        "max_ratio": float(ratio.max()),
        "first_step_above_barrier": int(steps[keep][above[0]]) if above.size else None,
    }, None
