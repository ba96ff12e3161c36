"""Results tables drawn from known laws plus noise: for tests, benchmarks and trying `mmlm fit` out.

`sweep_rows` writes what `mmlm sweep` would: one row per (run, eval dataset), with tokens_<dataset>
columns; every run is also evaluated on the datasets it did not train on (those rows must be ignored).
"""
from __future__ import annotations

import csv
import io

import numpy as np

from .bimodal import BimodalLaw
from .unimodal import UnimodalLaw

UNIMODAL = {
    "text": {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.34, "beta": 0.37},
    "code": {"E": 0.9, "A": 160.0, "B": 700.0, "alpha": 0.37, "beta": 0.32},
}
BIMODAL = {"code|text": {"C": 0.12, "A": 40.0, "B": 300.0, "alpha": 0.3, "beta": 0.3}}
SIZES = np.logspace(6.5, 9, 6)
TOKENS = np.logspace(8, 10.5, 6)
OFF_DATASET_LOSS = 99.0  # the loss written for datasets a run did not train on


class CoupledLaw:
    """A uni-modal truth that is *not* of the Chinchilla form: E + [(A/N^alpha)^(1/q) + (B/D^beta)^(1/q)]^q
    (q = 1 is Chinchilla's), for testing estimators against a law they cannot fit exactly."""

    def __init__(self, law: UnimodalLaw, q: float):
        self.law, self.q = law, q

    def predict(self, N, D) -> np.ndarray:
        N, D = np.broadcast_arrays(np.asarray(N, dtype=float), np.asarray(D, dtype=float))
        lw = self.law
        a, b = lw.A_ / N**lw.alpha_, lw.B_ / D**lw.beta_
        return lw.E_ + (a ** (1 / self.q) + b ** (1 / self.q)) ** self.q


def laws(unimodal=None, bimodal=None):
    """UnimodalLaw / BimodalLaw objects with the given (default: the module's) coefficients."""
    uni = {k: UnimodalLaw.from_dict(v) for k, v in (unimodal or UNIMODAL).items()}
    bi = {}
    for key, v in (bimodal or BIMODAL).items():
        i, j = key.split("|")
        bi[key] = BimodalLaw.from_dict(v, uni[i], uni[j])
    return uni, bi


def sweep_rows(noise: float = 1e-3, seed: int = 0, sizes=SIZES, tokens=TOKENS, unimodal=None, bimodal=None,
               paired: bool = False, repeats: int = 1):
    """(columns, rows) of a sweep-style results table; losses times exp(N(0, noise)).

    paired: mixed runs train on d tokens of each dataset (2d in all), matching the uni-modal runs at d
    (default: d in all, d/2 each). repeats: runs of every configuration (seeds)."""
    rng = np.random.default_rng(seed)
    uni, bi = laws(unimodal, bimodal)
    names = sorted(uni)
    columns = ["run_id", "size", "n_params", "n_params_nonembed", "mixture", "tokens", "flops", "eval_dataset",
               "loss"] + [f"tokens_{d}" for d in names]
    rows = []

    def add(run_id, n, mix: dict[str, float], losses: dict[str, float]):
        total = sum(mix.values())
        base = {"run_id": run_id, "size": f"s{n:.3g}", "n_params": int(n), "n_params_nonembed": int(n * 0.8),
                "mixture": "+".join(sorted(mix)), "tokens": int(total), "flops": 6 * int(n) * int(total)}
        base.update({f"tokens_{d}": int(mix.get(d, 0)) for d in names})
        for ds in names:
            rows.append({**base, "eval_dataset": ds, "loss": round(float(losses[ds]), 8)})

    def noisy(x):
        return float(x) * float(np.exp(rng.normal(0.0, noise)))

    for n, d, rep in ((n, d, rep) for n in sizes for d in tokens for rep in range(repeats)):
        tag = f"-r{rep}" if repeats > 1 else ""
        for name in names:
            # off-dataset losses are made up (and must not be used by any fit)
            losses = {ds: noisy(uni[name].predict(n, d)) if ds == name else OFF_DATASET_LOSS for ds in names}
            add(f"{name}-{n:.3g}-{d:.3g}{tag}", n, {name: d}, losses)
        for key, law in bi.items():
            i, j = key.split("|")
            each = d if paired else d / 2
            mean = noisy(law.predict(n, each, each))
            # the per-dataset losses differ; their mean is what the law describes
            gap = 0.5 * float(uni[i].predict(n, each) - uni[j].predict(n, each))
            add(f"{i}+{j}-{n:.3g}-{d:.3g}{tag}", n, {i: each, j: each}, {i: mean + gap, j: mean - gap})
    return columns, rows


def sweep_csv(**kwargs) -> str:
    columns, rows = sweep_rows(**kwargs)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
