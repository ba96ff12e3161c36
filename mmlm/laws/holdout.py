"""Holdout rules: which points a law is refitted without, and how well it then predicts them.

A rule is text, as `mmlm fit --holdout` takes it:

    none          no holdout
    largest       the runs of the largest model size (the same as sizes:1)
    sizes:K       the runs of the K largest model sizes
    N>=1e10       a comparison on N (model size) or D (tokens, as the table maps them; for a pair
    D>3e11        law D = Di + Dj); operators >=, >, <=, <

The law is refitted on the other points and asked to predict the held-out ones; the errors are
relative, (predicted - measured) / measured, so a positive signed error means the law over-predicts
the loss there (it is too pessimistic) and a negative one that it under-predicts it (too optimistic).
This module holds no law: `evaluate` takes a refit callable, so the uni-modal and the pair laws
(and any other estimator) share it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from mmlm.errors import MmlmError

# Model sizes within this factor of each other count as one size (as results.SAME_SIZE).
SAME_SIZE = 1.01
_CMP = re.compile(r"^\s*([ND])\s*(>=|<=|>|<)\s*([0-9.eE+-]+)\s*$")
RULE_HELP = "none, largest, sizes:K (the K largest sizes), or a comparison like 'N>=1e10' or 'D>3e11'"


@dataclass(frozen=True)
class Rule:
    kind: str  # "none" | "sizes" | "cmp"
    text: str
    k: int = 0  # sizes: how many of the largest sizes
    var: str = ""  # cmp: "N" or "D"
    op: str = ""
    value: float = 0.0

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def mask(self, N, D) -> np.ndarray:
        """True for the points this rule holds out."""
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        if self.kind == "none":
            return np.zeros(len(N), dtype=bool)
        if self.kind == "sizes":
            sizes = distinct_sizes(N)
            if len(sizes) <= self.k:
                return np.ones(len(N), dtype=bool)
            return N >= sizes[-self.k] / SAME_SIZE
        x = N if self.var == "N" else D
        return {">=": x >= self.value, ">": x > self.value, "<=": x <= self.value, "<": x < self.value}[self.op]


def parse(text: str | None) -> Rule:
    """The rule of a --holdout text; one clear MmlmError line when it is not a rule."""
    t = (text or "none").strip()
    if t in ("", "none"):
        return Rule("none", "none")
    if t == "largest":
        return Rule("sizes", t, k=1)
    if t.startswith("sizes:"):
        try:
            k = int(t[len("sizes:"):])
        except ValueError:
            k = 0
        if k < 1:
            raise MmlmError(f"--holdout {text!r}: sizes:K needs a whole number K >= 1")
        return Rule("sizes", t, k=k)
    m = _CMP.match(t)
    if m:
        try:
            v = float(m.group(3))
        except ValueError:
            v = float("nan")
        if not np.isfinite(v) or v <= 0:
            raise MmlmError(f"--holdout {text!r}: the threshold must be a finite positive number")
        return Rule("cmp", t, var=m.group(1), op=m.group(2), value=v)
    raise MmlmError(f"--holdout {text!r} is not a rule; use {RULE_HELP}")


def distinct_sizes(N) -> list[float]:
    sizes: list[float] = []
    for n in np.sort(np.asarray(N, dtype=float)):
        if not sizes or n > sizes[-1] * SAME_SIZE:
            sizes.append(float(n))
    return sizes


def errors(predicted, measured) -> dict:
    """{"points", "mean_abs", "max_abs", "mean_signed"} of the relative errors (pred - meas) / meas."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    rel = (p - m) / m
    return {"points": int(len(rel)), "mean_abs": float(np.abs(rel).mean()), "max_abs": float(np.abs(rel).max()),
            "mean_signed": float(rel.mean())}


def evaluate(rule: Rule, N, D, loss, refit, min_points: int = 5) -> tuple[dict | None, str | None]:
    """Hold out the points of `rule`, refit on the rest, and score the prediction of the held-out ones.

    refit(keep: bool mask) -> predict(held: bool mask) -> predicted losses of the held-out points.
    Returns (errors dict, None), or (None, a warning) when the rule leaves too little to fit or to test.
    """
    held = rule.mask(N, D)
    keep = ~held
    if not held.any():
        return None, f"holdout {rule.text}: no point matches the rule; not reported"
    if keep.sum() < min_points:
        return None, (f"holdout {rule.text}: {int(keep.sum())} points left to fit, fewer than the law's "
                      f"{min_points} parameters; not reported")
    if len(distinct_sizes(np.asarray(N)[keep])) < 2:
        return None, f"holdout {rule.text}: fewer than 2 model sizes left to fit; not reported"
    predict = refit(keep)
    return errors(predict(held), np.asarray(loss, dtype=float)[held]), None


def describe(h: dict | None) -> str:
    """One phrase for the report: the errors and whether the law under- or over-predicts."""
    if not h:
        return "-"
    s = h["mean_signed"]
    way = "over-predicts the loss (pessimistic)" if s > 0 else "under-predicts the loss (optimistic)"
    return (f"{h['points']} points: mean |err| {100 * h['mean_abs']:.2f}%, max {100 * h['max_abs']:.2f}%, "
            f"signed {100 * s:+.2f}% ({way})")


def apply_pair(law, rule: Rule, pts: dict) -> None:
    """The holdout of a pair law: refit it (same uni-modal laws and settings) without the rule's
    points, with D = Di + Dj; sets law.holdout_ and adds a warning when it cannot be scored."""
    N, Di, Dj, L = pts["N"], pts["Di"], pts["Dj"], pts["loss"]

    def refit(keep):
        sub = type(law)(law.law_i, law.law_j, law.method).fit(N[keep], Di[keep], Dj[keep], L[keep])
        return lambda held: sub.predict(N[held], Di[held], Dj[held])

    h, warning = evaluate(rule, N, Di + Dj, L, refit)
    if warning:
        law.warnings_.append(warning)
    law.holdout_ = h
