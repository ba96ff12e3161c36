"""The files `mmlm fit` writes: laws.json, PNG plots (matplotlib figures on the Agg canvas) and report.md
(`fit_file.fit_results` reads a results CSV, fits it (fitted.py) and writes them with `write_outputs`).

Everything is rendered in memory first and then written file by file atomically, so a failure
while plotting leaves no half-written output.
"""
from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np

from mmlm import atomic
from mmlm.errors import MmlmError

from . import planning
from .fitted import SAME_SIZE, Fitted


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "law"


def _size_groups(N: np.ndarray, most: int = 8) -> list[float]:
    """Representative model sizes: distinct sizes (within SAME_SIZE), at most `most`, spread in log N."""
    sizes: list[float] = []
    for n in np.sort(N):
        if not sizes or n > sizes[-1] * SAME_SIZE:
            sizes.append(float(n))
    if len(sizes) > most:
        idx = np.unique(np.round(np.linspace(0, len(sizes) - 1, most)).astype(int))
        sizes = [sizes[i] for i in idx]
    return sizes


def _figure():
    """A figure that belongs to no pyplot window or backend (so no `matplotlib.use` here): saved to
    PNG by its own Agg canvas, freed when dropped."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.8), layout="constrained")
    return fig, fig.subplots()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def plot_loss_vs_d(name: str, law, pts: dict) -> bytes:
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    N, D, L = pts["N"], pts["D"], pts["loss"]
    fig, ax = _figure()
    norm = LogNorm(N.min(), max(N.max(), N.min() * 1.0001))
    cmap = colormaps["viridis"]
    sc = ax.scatter(D, L, c=N, cmap=cmap, norm=norm, s=14, edgecolors="none", zorder=3)
    d = np.logspace(np.log10(D.min() / 1.5), np.log10(D.max() * 1.5), 200)
    for n in _size_groups(N):
        ax.plot(d, law.predict(n, d), color=cmap(norm(n)), lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("D (tokens)")
    ax.set_ylabel("loss")
    ax.set_title(f"{name}: L = {law.E_:.3g} + {law.A_:.3g}/N^{law.alpha_:.3f} + {law.B_:.3g}/D^{law.beta_:.3f}",
                 fontsize=9)
    fig.colorbar(sc, ax=ax, label="N (parameters)")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_isoflop(name: str, law, pts: dict) -> bytes:
    """Loss along N at fixed compute C = 6ND for a few budgets, and the compute-optimal frontier."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    N, D, L = pts["N"], pts["D"], pts["loss"]
    C = 6 * N * D
    fig, ax = _figure()
    cmin, cmax = C.min(), max(C.max(), C.min() * 10)
    norm = LogNorm(cmin, cmax)
    cmap = colormaps["plasma"]
    ax.scatter(N, L, c=C, cmap=cmap, norm=norm, s=12, edgecolors="none", alpha=0.7, zorder=3)
    n = np.logspace(np.log10(N.min() / 3), np.log10(N.max() * 3), 300)
    for c in np.logspace(np.log10(cmin), np.log10(cmax), 6):
        ax.plot(n, law.predict(n, c / (6 * n)), color=cmap(norm(c)), lw=1.2, label=f"C = {c:.2g}")
    if law.alpha_ > 0 and law.beta_ > 0:
        budgets = np.logspace(np.log10(cmin), np.log10(cmax), 60)
        opt = [planning.optimal(law, c) for c in budgets]
        ax.plot([o["n"] for o in opt], [o["loss"] for o in opt], "k--", lw=1.5, label="compute-optimal")
    ax.set_xscale("log")
    lo, hi = L.min(), L.max()
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.3 * (hi - lo + 1e-9))
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("loss")
    ax.set_title(f"{name}: IsoFLOP curves (C = 6ND) and the compute-optimal frontier", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_pair(key: str, law, pts: dict) -> bytes:
    """Predicted mixed loss over (N, D = Di + Dj) with the competition barrier."""
    N, D = pts["N"], pts["Di"] + pts["Dj"]
    share = float(np.median(pts["Di"] / D))  # draw the surface at the runs' typical split
    n_hi, d_hi = N.max() * 30, D.max() * 30
    C, A, B, al, be = law.C_, law.A_, law.B_, law.alpha_, law.beta_
    if C > 0 and min(A, B, al, be) > 0:
        # Show the barrier where it is not too far beyond the runs: up to 10x its asymptote in D,
        # (B / C)^(1/beta), and 3x the N at which it comes within 2x of that asymptote.
        with np.errstate(over="ignore"):  # tiny exponents: far beyond the runs is inf, clipped below
            d_inf = np.float64(B / C) ** (1 / be)
            n_near = np.float64(A / (C * (1 - 2.0**-be))) ** (1 / al)
        n_hi = min(max(n_hi, 3 * n_near), N.max() * 1e4)
        d_hi = min(max(d_hi, 10 * d_inf), D.max() * 1e4)
    n = np.logspace(np.log10(N.min() / 3), np.log10(n_hi), 120)
    d = np.logspace(np.log10(D.min() / 3), np.log10(d_hi), 120)
    nn, dd = np.meshgrid(n, d)
    surface = law.predict(nn, share * dd, (1 - share) * dd)
    fig, ax = _figure()
    cs = ax.contourf(nn, dd, surface, levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax, label=f"predicted mean loss ({key})")
    margin = -law.interaction(nn, dd)  # separate - mixed at the same N and tokens
    if np.nanmin(margin) < 0 < np.nanmax(margin):
        ax.contour(nn, dd, margin, levels=[0.0], colors="red", linewidths=2)
    ax.plot([], [], color="red", lw=2, label="competition barrier (synergy = competition)")
    ax.scatter(N, D, c="white", edgecolors="black", s=18, zorder=3, label="runs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("D = Di + Dj (tokens)")
    ax.set_title(f"{key}: C = {law.C_:.3g}, A = {law.A_:.3g}, alpha = {law.alpha_:.3f}, "
                 f"B = {law.B_:.3g}, beta = {law.beta_:.3f}; synergy above/right of the barrier", fontsize=8)
    ax.legend(fontsize=7, loc="lower left")
    return _png(fig)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and (not math.isfinite(x)):
        return str(x)
    return f"{x:.4g}"


def _with_ci(d: dict, k: str) -> str:
    ci = d.get("ci") or {}
    if k in ci:
        lo, hi = ci[k]
        return f"{_fmt(d[k])} [{_fmt(lo)}, {_fmt(hi)}]"
    return _fmt(d[k])


def _md(name: str) -> str:
    return name.replace("|", "\\|")  # a pair "a|b" inside a table cell


def identifiability_lines(laws: dict) -> list[str]:
    """The loss noise, and a warning no reader can miss for every law its data do not identify."""
    out = []
    noise = laws.get("noise") or {}
    if noise.get("sigma") is not None:
        out += [f"Loss noise: {100 * noise['sigma']:.3g}% (standard deviation of log loss, from "
                + ("repeated runs" if noise["method"] == "repeats" else "the uni-modal laws' residuals, an upper estimate")
                + ").", ""]
    for kind, what in (("unimodal", "uni-modal law"), ("bimodal", "pair law")):
        for name, d in laws[kind].items():
            if d.get("identifiable") is False:
                out += [f"> **WARNING: the {what} `{name}` is NOT IDENTIFIABLE from these runs.** Its parameters "
                        "(and any barrier or plan read from it) are not determined by the data; do not plan from it. "
                        "Why: " + "; ".join(d.get("why") or []) + ".", ""]
            elif d.get("identifiable") is True and kind == "bimodal":
                out += [f"The pair law `{name}` is identifiable: {d.get('n_matched', 0)} of {d['n_points']} mixed runs "
                        "matched by uni-modal runs of the same size and per-dataset tokens.", ""]
            n_min = (d.get("ci_barrier") or {}).get("n_min")
            if n_min:
                out += [f"Barrier of `{name}` (smallest N at which synergy is possible): "
                        f"{100 * d.get('ci_level', 0.9):g}% interval [{_fmt(n_min[0])}, "
                        + ("no finite bound" if n_min[1] is None else _fmt(n_min[1])) + "].", ""]
    return out


def report_markdown(fitted: Fitted, images: dict[str, str]) -> str:
    laws = fitted.laws()
    s = fitted.settings
    lines = [
        "# Scaling-law fit",
        "",
        f"Source: `{fitted.source}`. Method: {s['method']}; bootstrap resamples: {s['bootstrap']}"
        + (f" (central {100 * s.get('ci_level', 0.9):g}% intervals)" if s["bootstrap"] else "")
        + "; pair laws: whole-pipeline parametric bootstrap (docs/laws.md)"
        + f"; highest-loss points excluded per law: {s['exclude_top_loss']}; holdout: {s['holdout']}"
        + f"; law: {s.get('law', 'chinchilla')}; objective: {s.get('objective', 'huber-log')}"
        + ("; exponents tied (alpha = beta)" if s.get("tie_exponents") else "") + ".",
        "",
        "Objective: sum of Huber(delta = 1e-3) of log-loss residuals. Coefficients are the unrounded fitted values "
        "(laws.json has full precision).",
        "",
    ] + identifiability_lines(laws)
    lines += _law_table("Uni-modal laws: L(N, D) = E + A / N^alpha + B / D^beta", "dataset", laws["unimodal"],
                        ("E", "A", "B", "alpha", "beta"), holdout=True)
    if laws["bimodal"]:
        lines += [""] + _law_table(
            "Bi-modal laws: L(N, Di, Dj) = [Li(N, Di) + Lj(N, Dj)] / 2 - C + A / N^alpha + B / (Di + Dj)^beta",
            "pair", laws["bimodal"], ("C", "A", "B", "alpha", "beta"), holdout=False)
    lines += _holdout_section(laws) + _datacon_section(laws) + _isoflop_section(laws)
    if images:
        lines += ["", "## Plots", ""]
        for title, fname in images.items():
            lines += [f"### {title}", "", f"![{title}]({fname})", ""]
    return "\n".join(lines).rstrip() + "\n"


def render(fitted: Fitted, plots: bool = True) -> dict[str, bytes]:
    """File name -> contents of every file of the output folder."""
    files: dict[str, bytes] = {}
    images: dict[str, str] = {}
    if plots:
        for name, law in fitted.unimodal.items():
            pts = fitted.points[name]
            for kind, fn, title in (("loss_vs_d", plot_loss_vs_d, "loss against D per N"),
                                    ("isoflop", plot_isoflop, "IsoFLOP curves and the compute-optimal frontier")):
                fname = f"{kind}_{_slug(name)}.png"
                files[fname] = fn(name, law, pts)
                images[f"{name}: {title}"] = fname
        for key, law in fitted.bimodal.items():
            fname = f"pair_{_slug(key)}.png"
            files[fname] = plot_pair(key, law, fitted.points[key])
            images[f"{key}: loss surface and competition barrier"] = fname
    files["report.md"] = report_markdown(fitted, images).encode("utf-8")
    files["laws.json"] = (json.dumps(fitted.laws(), indent=2) + "\n").encode("utf-8")
    return files


def write_outputs(fitted: Fitted, out: str | Path, plots: bool = True) -> list[Path]:
    files = render(fitted, plots)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MmlmError(f"--out {out}: exists and is not a folder")
    written = []
    for fname, data in files.items():  # laws.json last: once it is there, everything is
        atomic.write_bytes(out / fname, data)
        written.append(out / fname)
    return written


def _law_table(title: str, first: str, laws_of_kind: dict, params: tuple, holdout: bool) -> list[str]:
    """A section: one row per law, its coefficients (with intervals), objective, points, (holdout error,) warnings."""
    cols = [first, *params, "objective", "points", *(["holdout error"] if holdout else []), "warnings"]
    lines = [f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, d in laws_of_kind.items():
        lines.append(
            f"| {_md(name)} | " + " | ".join(_with_ci(d, k) for k in params)
            + f" | {_fmt(d['objective'])} | {d['n_points']} | "
            + (f"{_fmt(d['holdout_error'])} | " if holdout else "") + ("; ".join(d["warnings"]) or "-") + " |"
        )
    return lines


def _holdout_section(laws: dict) -> list[str]:
    """Each law's holdout errors, in words: whether it under- or over-predicts the held-out runs."""
    from .holdout import describe

    rows = [(name, d["holdout"]) for kind in ("unimodal", "bimodal") for name, d in laws[kind].items()
            if d.get("holdout")]
    if not rows:
        return []
    out = ["", "## Holdout: predicting the held-out runs", "",
           "Each law refitted without the held-out runs, then asked for their loss. Relative errors "
           "(predicted - measured) / measured: a law that under-predicts is optimistic about scale.", ""]
    return out + [f"- **{_md(name)}**: {describe(h)}" for name, h in rows]


def _datacon_section(laws: dict) -> list[str]:
    rows = [(name, d) for name, d in laws["unimodal"].items() if d.get("law") == "data-constrained"]
    if not rows:
        return []
    out = ["", "## Data-constrained law (Muennighoff et al.): repeated data and excess parameters", "",
           "L = E + A / N'^alpha + B / D'^beta with D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)) and N' likewise "
           "(R_N*). The plots draw it for fresh data (U_D = D).", "",
           "| dataset | R_D* | R_N* |", "|---|---|---|"]
    return out + [f"| {_md(name)} | {_with_ci(d, 'R_D')} | {_with_ci(d, 'R_N')} |" for name, d in rows]


def _isoflop_section(laws: dict) -> list[str]:
    iso = laws.get("isoflop") or {}
    if not iso:
        return []
    out = ["", "## IsoFLOP analysis (Chinchilla Approach 2)", "",
           "Per compute budget, the minimum of the loss over log N (curve: "
           + ", ".join(sorted({g.get("curve", "parabola") for g in iso.values()}))
           + "); then N* ~ C^a and D* ~ C^b over the budgets, and L*(C) = E + A C^-alpha.", "",
           "| group | budgets with an optimum | a | b | L*: E | A | alpha |", "|---|---|---|---|---|---|---|"]
    for key, g in iso.items():
        ll = g.get("loss_law") or {}
        out.append(f"| {_md(key)} | {len(g['optima'])} of {len(g['optima']) + len(g['skipped'])} | "
                   f"{_with_ci(g, 'a') if g['a'] is not None else '-'} | {_with_ci(g, 'b') if g['b'] is not None else '-'} | "
                   f"{_fmt(ll.get('E'))} | {_fmt(ll.get('A'))} | {_fmt(ll.get('alpha'))} |")
    return out
