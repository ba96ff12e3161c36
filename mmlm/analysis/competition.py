"""Competition between two datasets in one model (paper phenomenon 4's barrier), at the end of a run.

For a finished mixed run of datasets i and j:

    ratio = 0.5 * (L_i + L_j) / L_ij

L_ij is the mean of the mixed run's final eval losses on i and j. L_i is what a uni-modal model of the
same size reaches *at the end of its own schedule* after the mixed run's i tokens (likewise L_j): the
finished uni-modal runs of i at that size give points (their final i tokens, their final eval loss on i)
across budgets, and L_i is interpolated between them, linearly in log loss against log tokens (a power
law is a straight line there). It is never read off a longer uni-modal run's mid-schedule eval: a run
part-way through its learning-rate decay is worse than a run that ends there, which biases the ratio
towards "synergy" (1.039 on an exactly neutral sweep). For the same reason the mixed run is compared
only at its end. The mixed run's i tokens are those it actually drew (summary.json's tokens_by_dataset,
else the last `tokens/<i>` in metrics.jsonl), not its mixture weight times its tokens, wherever logged.

Tokens up to TOKEN_TOLERANCE beyond the budgets' range are extrapolated along the nearest segment
(a mixture's realised shares differ from its weights by up to one row); further out there is no answer.

Convention: ratio > 1 means the mixed model is better than the two uni-modal models it is compared
with (synergy wins); ratio < 1 means competition wins; the competition barrier is ratio = 1.

Which runs count: a run is finished when its summary.json says status "done" (a run folder without a
status, e.g. written by another tool, counts as finished at its last eval). Uni-modal runs are runs of i
alone of the same model size (size name, else parameter count); those with the mixed run's batch size
are used when there are any, since the batch size changes the schedule. Several runs at the same
budget (seeds) are averaged.
"""
from __future__ import annotations

import math

import numpy as np

from .run_records import RunRecord

TOKEN_TOLERANCE = 0.02  # relative margin beyond the uni-modal budgets' range


def finished(run: RunRecord) -> bool:
    status = run.summary.get("status")
    return status == "done" if status is not None else bool(run.final_eval)


def final_tokens(run: RunRecord, dataset: str) -> float | None:
    """Tokens of `dataset` the run drew by its end: summary.json, else metrics.jsonl, else tokens x share."""
    by = run.summary.get("tokens_by_dataset")
    if isinstance(by, dict) and isinstance(by.get(dataset), (int, float)) and by[dataset] > 0:
        return float(by[dataset])
    _, t = run.metrics.series(f"tokens/{dataset}")
    t = t[np.isfinite(t)]
    if t.size:
        return float(t[-1])
    total = run.summary.get("tokens")
    if not isinstance(total, (int, float)):
        _, tt = run.metrics.series("tokens")
        tt = tt[np.isfinite(tt)]
        total = float(tt[-1]) if tt.size else None
    share = run.mix.get(dataset)
    return float(total) * share if total and share else None


def _same_size(a: RunRecord, b: RunRecord) -> bool:
    if a.size is not None and b.size is not None:
        return a.size == b.size
    return a.n_params is not None and a.n_params == b.n_params


def unimodal_points(mixed: RunRecord, dataset: str, runs: list[RunRecord]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(final tokens, final loss, run ids per budget) of the finished uni-modal runs of `dataset` at the mixed run's
    size, sorted by tokens, one point per budget (seeds averaged)."""
    cands = [r for r in runs if r.datasets == [dataset] and _same_size(r, mixed) and finished(r)
             and dataset in r.final_eval and final_tokens(r, dataset)]
    same_batch = [r for r in cands if r.batch_tokens == mixed.batch_tokens]
    cands = same_batch or cands
    by_budget: dict[float, list[tuple[float, str]]] = {}
    for r in cands:
        by_budget.setdefault(final_tokens(r, dataset), []).append((r.final_eval[dataset], r.id))
    tokens = np.array(sorted(by_budget))
    loss = np.array([np.mean([x for x, _ in by_budget[t]]) for t in tokens])
    ids = [[rid for _, rid in by_budget[t]] for t in tokens]
    return tokens, loss, ids


def _bracket(tokens: float, at: np.ndarray) -> list[int]:
    """Indices of the budgets an interpolation at `tokens` uses."""
    if at.size == 1:
        return [0]
    k = int(np.clip(np.searchsorted(at, tokens) - 1, 0, at.size - 2))
    return [k, k + 1]


def interpolate_final(tokens: float, at: np.ndarray, loss: np.ndarray) -> float | None:
    """Loss at `tokens` between finished runs' (final tokens, final loss), linear in log-log; None outside
    the range widened by TOKEN_TOLERANCE (a single budget answers only within that margin, with its loss)."""
    if at.size == 0 or not (at[0] * (1 - TOKEN_TOLERANCE) <= tokens <= at[-1] * (1 + TOKEN_TOLERANCE)):
        return None
    if at.size == 1:
        return float(loss[0])
    x, y, q = np.log(at), np.log(loss), math.log(tokens)
    k = int(np.clip(np.searchsorted(x, q) - 1, 0, x.size - 2))  # the segment holding q, or the end one
    return float(math.exp(y[k] + (y[k + 1] - y[k]) * (q - x[k]) / (x[k + 1] - x[k])))


def competition(mixed: RunRecord, runs: list[RunRecord]) -> tuple[dict | None, str | None]:
    """The ratio of one finished mixed run of two datasets: (result, None), or (None, why not)."""
    i, j = mixed.pair
    if not finished(mixed):
        return None, f"{mixed.id}: not finished (the ratio compares runs at the end of their schedules)"
    final = mixed.final_eval
    if i not in final or j not in final:
        return None, f"{mixed.id}: no final eval loss on both {i} and {j}"
    tokens, l_uni, used = {}, {}, {}
    for d in (i, j):
        tokens[d] = final_tokens(mixed, d)
        if tokens[d] is None:
            return None, f"{mixed.id}: neither tokens_by_dataset, tokens/{d} nor tokens and a mixture to count {d} tokens"
        at, loss, ids = unimodal_points(mixed, d, runs)
        if at.size == 0:
            return None, f"{mixed.id}: no finished uni-modal run of '{d}' at size {mixed.size or mixed.n_params}"
        l_uni[d] = interpolate_final(tokens[d], at, loss)
        if l_uni[d] is None:
            return None, (f"{mixed.id}: its {tokens[d]:.0f} {d} tokens lie outside the uni-modal budgets of '{d}' "
                          f"({at[0]:.0f} to {at[-1]:.0f})")
        used[d] = [rid for k in _bracket(tokens[d], at) for rid in ids[k]]  # the runs the value comes from
    l_ij = 0.5 * (final[i] + final[j])
    ratio = 0.5 * (l_uni[i] + l_uni[j]) / l_ij
    step = int(mixed.metrics.steps[-1])
    return {
        "pair": [i, j],
        "unimodal": used,
        "steps": [step],
        "tokens": {d: [tokens[d]] for d in (i, j)},
        "tokens_total": float(sum(tokens.values())),
        "loss_unimodal": {d: [l_uni[d]] for d in (i, j)},
        "loss_mixed": {d: [final[d]] for d in (i, j)},
        "ratio": [ratio],
        "final_ratio": float(ratio),
        "max_ratio": float(ratio),
        "first_step_above_barrier": step if ratio > 1 else None,
    }, None
