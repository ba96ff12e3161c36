"""The study's own report: did a preset sweep land in the scaling regime, and what did it find?

    summary = study_summary("runs/demo", "data/demo", preset="demo")   # also reads laws/ and samples/
    write_study_report("runs/demo", summary)                              # DIR/demo.md and DIR/demo.json

Per dataset: the unigram (0-gram) entropy of its held-out tokens, the largest run's loss and how far
below that baseline it is, the standard errors of the eval losses, the uni-modal law with its
held-out-size error (from `mmlm fit --holdout largest`). Over the sweep: the fewest optimizer steps
of any run and the largest deviation of a mixed run's drawn token shares from its weights. Then the
pair laws, the caption-conditioned digit score (`mmlm analyze digits`) and a list of checks against
the targets the preset was designed for (docs/demo.md), each true or false, never hidden.
"""
from __future__ import annotations

import math
from pathlib import Path

from .. import atomic
from ..errors import MmlmError
from ..analysis.run_records import read_json_or_empty
from .demo import PRESETS
from .run_folders import read_spec, read_summary, runs_root

TARGETS = {"min_steps": 100, "below_unigram": 0.10, "share_error": 0.02, "holdout_error": 0.03, "se_share": 0.001,
           "digits_n": 50, "digits_above_chance": 0.03}
PRESET_TARGETS = {"demo": TARGETS, "cpu-study": {**TARGETS, "holdout_error": 0.015, "digits_above_chance": 0.20}}
# `mmlm law design` for a pair law that is not identified: simulated studies per candidate (a quick answer;
# the command with more --seeds gives a sharper one)
DESIGN_SEEDS, DESIGN_RESAMPLES = 10, 100


def hypothesis(laws: dict, key: str, sizes, tokens, share: float = 0.02) -> dict:
    """A pair law to simulate from when the fitted one is at its bounds (then it is no usable truth: with
    alpha = beta = 0 no grid could identify it). Exponents: the two uni-modal laws' means; C: `share` of
    their mean loss at the grid's centre (N_c, D_c, geometric means); A / N_c^alpha = C / 2 and
    B / (2 D_c)^beta = C / 4, so synergy wins at the centre and the barrier lies below it, in reach."""
    import numpy as np

    from ..laws.fitted import unimodal_law

    li, lj = (unimodal_law(laws, name)[1] for name in key.split("|", 1))
    n_c, d_c = float(np.exp(np.mean(np.log(sizes)))), float(np.exp(np.mean(np.log(tokens))))
    loss = float(np.mean([law.predict(n_c, d_c) for law in (li, lj)]))
    alpha, beta = (li.alpha_ + lj.alpha_) / 2, (li.beta_ + lj.beta_) / 2
    C = share * loss
    return {"C": C, "A": C / 2 * n_c**alpha, "B": C / 4 * (2 * d_c) ** beta, "alpha": alpha, "beta": beta}


def design_answer(laws: dict, key: str, jobs: int = 1) -> dict:
    """What would identify a pair law (`laws`: a loaded laws.json): `mmlm law design` on the study's own grid
    at its measured noise, at a third and a tenth of that noise, and on a grid with two more budgets (x2, x4)
    and one size more (x2), at that noise, a tenth and a thirtieth.
    Simulated from the fitted pair law, or from `hypothesis` when that is at a bound. Each candidate: its
    p_identifiable and median barrier width; "enough" names the first with p >= 0.8."""
    from ..laws.bimodal import PARAMS
    from ..laws.design import design
    from ..laws.fitted import bimodal_law
    from ..laws.identify import at_bounds

    fitted = laws["bimodal"][key]
    stored = fitted.get("design") or {}
    noise = (laws.get("noise") or {}).get("sigma")
    sizes, tokens = stored.get("sizes"), stored.get("tokens_i")
    if not (noise and sizes and tokens):
        return {"error": "laws.json records no noise or design grid for this pair"}
    truth = "the fitted pair law"
    if at_bounds(bimodal_law(laws, key)[1].theta_, PARAMS):
        laws = {**laws, "bimodal": {**laws["bimodal"], key: {**fitted, **hypothesis(laws, key, sizes, tokens)}}}
        truth = ("a hypothesised pair law (the fitted one is at its bounds): exponents the uni-modal means, "
                 "C 2% of the loss, the barrier below the grid's centre")
    bigger = {"sizes": [*sizes, 2 * max(sizes)], "tokens": [*tokens, 2 * max(tokens), 4 * max(tokens)]}
    candidates = [("this grid", noise, {}), ("this grid, noise / 3", noise / 3, {}),
                  ("this grid, noise / 10", noise / 10, {}), ("one size and two budgets more", noise, bigger),
                  ("one size and two budgets more, noise / 10", noise / 10, bigger),
                  ("one size and two budgets more, noise / 30", noise / 30, bigger)]
    rows = []
    for name, sigma, grid in candidates:
        r = design(laws, key, noise=sigma, seeds=DESIGN_SEEDS, resamples=DESIGN_RESAMPLES, jobs=jobs, **grid)
        rows.append({"candidate": name, "noise": sigma, "sizes": r["sizes"], "tokens": r["tokens"],
                     "p_identifiable": r["p_identifiable"],
                     "median_barrier_decades": r["median_ci_width_barrier_decades"]})
    enough = next((r["candidate"] for r in rows if r["p_identifiable"] >= 0.8), None)
    return {"truth": truth, "law": {k: laws["bimodal"][key][k] for k in PARAMS},
            "candidates": rows, "enough": enough, "seeds": DESIGN_SEEDS}


def _runs(out: Path) -> list[tuple[str, dict, dict]]:
    """(id, spec.mix, summary) of every finished run."""
    found = []
    root = runs_root(out)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        spec, summary = read_spec(folder), read_summary(folder)
        if spec and summary and summary.get("status") == "done":
            found.append((folder.name, spec.mix, summary))
    return found


def _law_error(law: dict) -> float | None:
    h = law.get("holdout")
    if isinstance(h, dict) and h.get("mean_abs") is not None:
        return float(h["mean_abs"])
    return law.get("holdout_error")


def _identifiable(law: dict) -> bool:
    if "identifiable" in law:
        return bool(law["identifiable"])
    return not any("bound" in w for w in law.get("warnings") or [])


def study_summary(out: str | Path, data: str | Path, preset: str = "demo", design: bool = True, jobs: int = 1) -> dict:
    """The report's numbers; with `design`, `design_answer` for every pair law that is not identified."""
    from ..data import heldout_unigram_entropy
    from ..laws.fitted import load_laws

    out, study = Path(out), PRESETS[preset]
    if not runs_root(out).is_dir():
        raise MmlmError(f"{out}: not a sweep folder (no runs/ in it; made by `mmlm sweep --preset {preset}`)")
    runs = _runs(out)
    train = study.train
    laws = read_json_or_empty(out / "laws" / "laws.json")
    datasets = {}
    for d in study.unimodal:
        base = heldout_unigram_entropy(data, d, int(train["eval_tokens"]), int(train["seq_len"]))
        alone = [(s["n_params"], s["tokens"], rid, s) for rid, mix, s in runs if list(mix) == [d] and d in (s.get("eval_loss") or {})]
        row = {"unigram_entropy": base["entropy"], "heldout_tokens": base["tokens"], "runs": len(alone)}
        if alone:
            n, t, rid, s = max(alone)
            loss, se = s["eval_loss"][d], (s.get("eval_loss_se") or {}).get(d)
            row.update(largest_run=rid, largest_loss=loss, largest_se=se, below_unigram=1 - loss / base["entropy"])
            rel = [(x.get("eval_loss_se") or {}).get(d) / x["eval_loss"][d] for *_, x in alone
                   if (x.get("eval_loss_se") or {}).get(d)]
            row["max_se_share"] = max(rel) if rel else None
        law = (laws.get("unimodal") or {}).get(d)
        if law:
            row["law"] = {k: law.get(k) for k in ("E", "A", "B", "alpha", "beta")}
            row["holdout_error"] = _law_error(law)
            row["identifiable"] = _identifiable(law)
            row["warnings"] = law.get("warnings") or []
        datasets[d] = row
    share_errors = []
    for rid, mix, s in runs:
        if len(mix) > 1:
            drawn = s.get("tokens_by_dataset") or {}
            total = sum(drawn.values()) or 1
            w = sum(mix.values())
            share_errors.append(max(abs(drawn.get(k, 0) / total - v / w) for k, v in mix.items()))
    pairs, checked = {}, None  # checked: laws.json through load_laws (its format checked), read once if needed
    for key, law in (laws.get("bimodal") or {}).items():
        pairs[key] = {"params": {k: law.get(k) for k in ("C", "A", "B", "alpha", "beta")}, "ci": law.get("ci") or {},
                      "identifiable": _identifiable(law), "why": law.get("why"), "warnings": law.get("warnings") or []}
        if design and not pairs[key]["identifiable"]:
            checked = checked or load_laws(out / "laws" / "laws.json")
            pairs[key]["design"] = design_answer(checked, key, jobs=jobs)
    digits = read_json_or_empty(out / "samples" / "digits.json") or None
    summary = {
        "preset": preset, "runs": len(runs), "min_steps": min((s["steps"] for *_, s in runs), default=None),
        "max_share_error": max(share_errors, default=None), "datasets": datasets, "pairs": pairs, "digits": digits,
        "digits_grid": "samples/digits.png" if (out / "samples" / "digits.png").is_file() else None,
    }
    summary["checks"] = _checks(summary, PRESET_TARGETS.get(preset, TARGETS))
    return summary


def _checks(s: dict, t: dict) -> list[dict]:
    ds = s["datasets"].values()

    def check(name, ok, value):
        return {"check": name, "ok": bool(ok) if ok is not None else False, "value": value}

    below = [d.get("below_unigram") for d in ds]
    errs = [d.get("holdout_error") for d in ds]
    se = [d.get("max_se_share") for d in ds]
    out = [
        check(f"every run has >= {t['min_steps']} optimizer steps", s["min_steps"] is not None and s["min_steps"] >= t["min_steps"],
              s["min_steps"]),
        check(f"largest run of each dataset >= {t['below_unigram']:.0%} below its unigram entropy",
              all(b is not None and b >= t["below_unigram"] for b in below), below),
        check(f"mixture shares within {t['share_error']:.0%} in every run",
              s["max_share_error"] is None or s["max_share_error"] <= t["share_error"], s["max_share_error"]),
        check("every uni-modal law identifiable, no parameter at a bound", all(d.get("identifiable") for d in ds),
              [d.get("identifiable") for d in ds]),
        check(f"held-out-size mean |error| <= {t['holdout_error']:.1%} per dataset",
              all(e is not None and e <= t["holdout_error"] for e in errs), errs),
        check(f"eval standard error <= {t['se_share']:.1%} of the loss", all(x is not None and x <= t["se_share"] for x in se), se),
        check("at least one pair law reported", bool(s["pairs"]), list(s["pairs"])),
    ]
    g = s["digits"]
    out.append(check(f"digits: >= {t['digits_n']} scored, >= {t['digits_above_chance'] * 100:.0f} points above chance",
                     g is not None and g["n"] >= t["digits_n"] and g["accuracy"] - g["chance"] >= t["digits_above_chance"],
                     None if g is None else {k: g[k] for k in ("accuracy", "chance", "n")}))
    return out


def _f(x, spec: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def _design_lines(key: str, d: dict | None) -> list[str]:
    if not d:
        return []
    if "error" in d:
        return ["", f"  What would identify it: not simulated ({d['error']})."]
    law = ", ".join(f"{k} = {v:.3g}" for k, v in d["law"].items())
    out = ["", f"  What would identify it (`mmlm law design`, {d['seeds']} simulated studies each, from {d['truth']}: "
           f"{law}):", "",
           "  | candidate | noise | sizes | per-dataset tokens | P(identifiable) | median barrier interval (decades) |",
           "  |---|---|---|---|---|---|"]
    for r in d["candidates"]:
        out.append(f"  | {r['candidate']} | {r['noise']:.2%} | {', '.join(f'{x:.3g}' for x in r['sizes'])} | "
                   f"{', '.join(f'{x:.3g}' for x in r['tokens'])} | {r['p_identifiable']:.0%} | "
                   f"{_f(r['median_barrier_decades'], '.2f')} |")
    pair = key.replace("|", ",")
    out += ["", f"  {'First enough: ' + d['enough'] if d['enough'] else 'None of these is enough'}; "
            f"try others with `mmlm law design laws/laws.json --pair {pair} --noise ... --sizes ... --tokens ...`."]
    return out


def write_study_report(out: str | Path, summary: dict) -> Path:
    """DIR/<preset>.md (the report) and DIR/<preset>.json (the same numbers)."""
    out = Path(out)
    name = summary["preset"]
    lines = [f"# mmlm study `{name}`", "",
             f"{summary['runs']} finished runs; fewest optimizer steps in a run: {summary['min_steps']}; "
             f"largest deviation of a mixed run's drawn share from its weight: {_f(summary['max_share_error'], '.2%')}.", "",
             "## Per dataset", "",
             "| dataset | unigram entropy (nats) | largest run loss | +- SE | below unigram | max SE / loss | "
             "E | A | B | alpha | beta | held-out-size error | identifiable |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d, r in summary["datasets"].items():
        law = r.get("law") or {}
        lines.append(f"| {d} | {_f(r['unigram_entropy'])} | {_f(r.get('largest_loss'))} | {_f(r.get('largest_se'), '.4f')} | "
                     f"{_f(r.get('below_unigram'), '.1%')} | {_f(r.get('max_se_share'), '.2%')} | "
                     + " | ".join(_f(law.get(k), '.4g') for k in ("E", "A", "B", "alpha", "beta"))
                     + f" | {_f(r.get('holdout_error'), '.2%')} | {r.get('identifiable', '-')} |")
    lines += ["", "## Pair laws", ""]
    if not summary["pairs"]:
        lines.append("No pair law was fitted.")
    for key, p in summary["pairs"].items():
        params = ", ".join(f"{k} = {_f(v, '.4g')}" for k, v in p["params"].items())
        ci = "; ".join(f"{k} in [{_f(lo, '.3g')}, {_f(hi, '.3g')}]" for k, (lo, hi) in p["ci"].items())
        verdict = "identifiable" if p["identifiable"] else "**NOT identifiable** (do not read a barrier off it)"
        lines.append(f"- `{key}`: {params}; {verdict}" + (f"; 90% intervals: {ci}" if ci else "")
                     + (f"; why: {p['why']}" if p.get("why") else "")
                     + (f"; warnings: {'; '.join(p['warnings'])}" if p["warnings"] else ""))
        lines += _design_lines(key, p.get("design"))
    lines += ["", "## Caption-conditioned digits", ""]
    g = summary["digits"]
    if g:
        lines.append(f"Accuracy {g['accuracy']:.1%} on {g['n']} images drawn from captions (chance {g['chance']:.0%}), "
                     f"judged by a classifier that is {g.get('classifier_accuracy', float('nan')):.1%} accurate on real digits.")
        if summary["digits_grid"]:
            lines += ["", f"![samples, one row per digit 0-9]({summary['digits_grid']})"]
    else:
        lines.append("Not scored (run `mmlm analyze digits`).")
    lines += ["", "## Checks against the design targets", ""]
    lines += [f"- [{'x' if c['ok'] else ' '}] {c['check']}: {c['value']}" for c in summary["checks"]]
    path = out / f"{name}.md"
    atomic.write_text(path, "\n".join(lines) + "\n")
    atomic.write_json(out / f"{name}.json", summary)
    return path
