"""PNG plots of an analysis (matplotlib figures on the Agg canvas), each written atomically."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .. import atomic
from .plateaus import Plateaus
from .run_records import Metrics


def _subplots(*args, **kwargs):
    """(figure, axes) of a figure that belongs to no pyplot window or backend (so no `matplotlib.use`
    here): saved by its own Agg canvas, freed when dropped."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(*args, **kwargs)


def safe_name(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", run_id)


def _save(fig, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_run(path: Path, run_id: str, metrics: Metrics, plateaus: Plateaus | None, spike_steps: list[int]) -> None:
    """Top: per-dataset training loss (raw faint, smoothed solid) with plateaus shaded.
    Bottom: gradient norm with spikes marked."""
    import matplotlib

    fig, (ax1, ax2) = _subplots(2, 1, figsize=(9, 6.5), sharex=True)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, d in enumerate(metrics.datasets):
        c = colors[k % len(colors)]
        s, v = metrics.series(f"loss/{d}")
        ax1.plot(s, v, color=c, alpha=0.25, lw=0.8)
        if plateaus is not None:
            ax1.plot(plateaus.steps, plateaus.smoothed[d], color=c, lw=1.6, label=d)
            for a, b in plateaus.intervals[d]:
                ax1.axvspan(a, b, color=c, alpha=0.15)
        else:
            ax1.plot([], [], color=c, label=d)
    if plateaus is not None:
        avg = np.mean(np.stack(list(plateaus.smoothed.values())), axis=0)
        ax1.plot(plateaus.steps, avg, color="k", ls="--", lw=1, label="average (smoothed)")
        ax1.set_title(f"{run_id}: training loss per dataset; shaded = plateaus (window {plateaus.window} steps)")
    else:
        ax1.set_title(f"{run_id}: training loss per dataset")
    ax1.set_ylabel("loss")
    ax1.legend(fontsize=8)
    s, g = metrics.series("grad_norm")
    if s.size:
        ax2.plot(s, g, lw=0.8, color="tab:gray")
        if spike_steps:
            idx = np.searchsorted(s, spike_steps)
            ax2.plot(s[idx], np.where(np.isfinite(g[idx]), g[idx], np.nanmax(g)), "rv", ms=6,
                     label=f"{len(spike_steps)} spikes")
            ax2.legend(fontsize=8)
        if np.all(g[np.isfinite(g)] > 0):
            ax2.set_yscale("log")
    ax2.set_ylabel("gradient norm")
    ax2.set_xlabel("step")
    _save(fig, path)


def plot_by_size(path: Path, by_size: dict) -> None:
    """Plateau share against N (per pair), against alpha_ij, and spikes against log(N) / alpha_ij."""
    rows = [r for r in by_size["runs"] if r["n_params"]]
    with_alpha = [r for r in by_size["runs"] if r["log_n_over_alpha"] is not None]
    n_panels = 3 if with_alpha else 2
    fig, axes = _subplots(1, n_panels, figsize=(4.5 * n_panels, 4))
    pairs = sorted({r["pair"] or "-" for r in rows})
    for p in pairs:
        pr = sorted((r for r in rows if (r["pair"] or "-") == p), key=lambda r: r["n_params"])
        axes[0].plot([r["n_params"] for r in pr], [r["plateau_fraction"] for r in pr], "o-", label=p)
        axes[1].plot([r["n_params"] for r in pr], [r["spikes"] for r in pr], "o-", label=p)
    for ax, what in zip(axes[:2], ("plateau fraction", "gradient-norm spikes")):
        ax.set_xscale("log")
        ax.set_xlabel("parameters N")
        ax.set_ylabel(what)
        if pairs:
            ax.legend(fontsize=8)
    axes[0].set_title("plateau share vs model size")
    axes[1].set_title("spikes vs model size")
    if with_alpha:
        ax = axes[2]
        ax.plot([r["log_n_over_alpha"] for r in with_alpha], [r["spikes"] for r in with_alpha], "o")
        for r in with_alpha:
            ax.annotate(r["pair"], (r["log_n_over_alpha"], r["spikes"]), fontsize=6)
        ax.set_xlabel("log(N) / alpha_ij")
        ax.set_ylabel("gradient-norm spikes")
        ax.set_title("spikes vs log(N) / alpha_ij")
    _save(fig, path)


def plot_plateau_vs_alpha(path: Path, by_size: dict) -> None:
    rows = [r for r in by_size["runs"] if r["alpha_ij"] is not None]
    fig, ax = _subplots(figsize=(5, 4))
    ax.scatter([r["alpha_ij"] for r in rows], [r["plateau_fraction"] for r in rows],
               c=[np.log10(r["n_params"]) if r["n_params"] else 0 for r in rows], cmap="viridis")
    ax.set_xlabel("alpha_ij (bi-modal law)")
    ax.set_ylabel("plateau fraction")
    ax.set_title("plateau share vs alpha_ij (colour: log10 N)")
    _save(fig, path)


def plot_batch_size(path: Path, batch: dict) -> None:
    """Final eval loss against batch size for each (pair, size); the best batch circled."""
    fig, ax = _subplots(figsize=(6.5, 4.5))
    for g in batch["groups"]:
        b = [r["batch_tokens"] for r in g["runs"]]
        line, = ax.plot(b, [r["eval_loss"] for r in g["runs"]], "o-", label=f"{g['pair']} {g['size'] or g['n_params']}")
        best = next(r for r in g["runs"] if r["batch_tokens"] == g["best_batch_tokens"])
        ax.plot([best["batch_tokens"]], [best["eval_loss"]], "o", ms=12, mfc="none", color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (tokens)")
    ax.set_ylabel("final eval loss (mean over the pair)")
    ax.set_title("batch-size guideline: best batch circled")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_competition(path: Path, comp: dict) -> None:
    """0.5 (L_i + L_j) / L_ij at the end of each mixed run against its tokens, the barrier at 1."""
    fig, ax = _subplots(figsize=(7.5, 4.5))
    for run_id, c in comp.items():
        x = [c.get("tokens_total", s) for s in c["steps"]] if "tokens_total" in c else c["steps"]
        ax.plot(x, c["ratio"], "o", ms=5, label=f"{run_id} ({'|'.join(c['pair'])})")
    ax.set_xscale("log")
    ratios = [x for c in comp.values() for x in c["ratio"]] + [1.0]
    lo, hi = min(ratios), max(ratios)
    pad = max(0.1 * (hi - lo), 0.02)
    ax.set_ylim(lo - pad, hi + pad)
    ax.axhline(1.0, color="k", ls="--", lw=1.2, label="competition barrier (ratio 1)")
    ax.annotate("synergy: mixed model better", (0.01, 1.0), xycoords=("axes fraction", "data"),
                xytext=(0, 4), textcoords="offset points", va="bottom", fontsize=8)
    ax.annotate("competition: two uni-modal models better", (0.01, 1.0), xycoords=("axes fraction", "data"),
                xytext=(0, -4), textcoords="offset points", va="top", fontsize=8)
    ax.set_xlabel("training tokens of the mixed run")
    ax.set_ylabel("0.5 (L_i + L_j) / L_ij")
    ax.set_title("competition at the end of each run")
    ax.legend(fontsize=7)
    _save(fig, path)
