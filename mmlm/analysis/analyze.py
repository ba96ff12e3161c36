"""`analyze_path`: the four training phenomena of one run or a whole sweep, as one dict
(and, given an output folder, analysis.json plus PNG plots)."""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import MmlmError
from ..progress import Progress
from ..stability import SpikeRule, find_spikes
from . import plots
from .competition import competition
from .plateaus import PlateauRule, find_plateaus
from .run_records import RunRecord, find_run_dirs, read_run
from .trends import batch_size, by_size, read_laws


def spike_steps(run: RunRecord, rule: SpikeRule) -> list[int]:
    """Steps whose logged gradient norm is a spike under the training counter's rule."""
    steps, g = run.metrics.series("grad_norm")
    return [int(steps[i]) for i in find_spikes(g, rule)]


def _jsonable(x):
    """Plain JSON: numpy scalars to Python, non-finite floats to null."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def analyze_path(
    path: str | Path,
    out: str | Path | None = None,
    plateau_rule: PlateauRule | None = None,
    spike_rule: SpikeRule | None = None,
    laws: str | Path | None = None,
    make_plots: bool = True,
    on_progress: Progress | None = None,
) -> dict:
    """Analyse a run folder or a sweep folder (see `run_records.find_run_dirs`).

    Plateaus are measured on mixed runs (two or more datasets); uni-modal runs of a sweep still
    count spikes and serve as the reference of the competition ratio. With `out`, writes
    out/analysis.json (last, atomically) and the plots. `on_progress(stage, done, total)` follows
    the slow parts (stages "reading runs", "plotting").
    """
    plateau_rule, spike_rule = _check_rules(plateau_rule, spike_rule)
    law_table = read_laws(laws) if laws else None
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise MmlmError(f"--out {out}: exists and is not a folder")
    single, runs, mixed, notes = _read_runs(path, on_progress)
    result, found_plateaus = _per_run(path, runs, mixed, plateau_rule, spike_rule)
    share = {rid: p.any_fraction for rid, p in found_plateaus.items()}
    result["by_size"] = by_size(mixed, share, result["spikes"], law_table)
    result["batch_size"] = batch_size(mixed, law_table)
    result["competition"] = _competition(mixed, runs, single, notes)
    if single:
        notes.append("competition and batch size need a sweep (uni-modal runs, several batch sizes)")
    result["settings"] = {
        "plateau": asdict(plateau_rule),
        "plateau_resolved": {rid: {"window": p.window, "min_len": p.min_len} for rid, p in found_plateaus.items()},
        "spike": asdict(spike_rule),
        "laws": str(laws) if laws else None,
    }
    result["notes"] = notes
    result["plots"] = []
    if out is not None and make_plots:
        result["plots"] = _write_plots(Path(out), runs, found_plateaus, result, on_progress)
    result = _jsonable(result)
    if out is not None:
        atomic.write_json(Path(out) / "analysis.json", result)
    return result


def _check_rules(plateau_rule: PlateauRule | None, spike_rule: SpikeRule | None) -> tuple[PlateauRule, SpikeRule]:
    plateau_rule = plateau_rule or PlateauRule()
    plateau_rule.check()
    spike_rule = spike_rule or SpikeRule()
    if spike_rule.k <= 0 or spike_rule.window < 1 or spike_rule.min_history < 1:
        raise MmlmError(f"spike rule: k must be > 0 and window, min-history at least 1 (got {asdict(spike_rule)})")
    return plateau_rule, spike_rule


def _read_runs(path: str | Path, on_progress) -> tuple[bool, list[RunRecord], list[RunRecord], list[str]]:
    """(one run folder?, the runs with two or more logged steps, the mixed ones among them, notes);
    a one-line error when nothing mixed is left to analyse."""
    dirs = find_run_dirs(path)
    single = len(dirs) == 1 and dirs[0] == Path(path)
    runs: list[RunRecord] = []
    notes: list[str] = []
    for k, d in enumerate(dirs):
        run = read_run(d, d.resolve().name)
        if run.metrics.steps.size < 2:
            notes.append(f"{run.id}: fewer than two logged steps, left out")
        else:
            runs.append(run)
        if on_progress:
            on_progress("reading runs", k + 1, len(dirs))
    mixed = [r for r in runs if len(r.metrics.datasets) >= 2]
    need = "the training phenomena need a mixed run (two or more `loss/<dataset>` keys)"
    if single and not runs:
        raise MmlmError(f"{dirs[0] / 'metrics.jsonl'}: fewer than two logged steps, nothing to analyse")
    if single and not mixed:
        found = ", ".join(runs[0].metrics.datasets) or "no `loss/<dataset>` keys"
        raise MmlmError(f"{dirs[0] / 'metrics.jsonl'}: one dataset only ({found}); {need}")
    if not mixed:
        raise MmlmError(f"{path}: none of its {len(dirs)} runs is mixed; {need}")
    return single, runs, mixed, notes


def _per_run(path, runs: list[RunRecord], mixed: list[RunRecord], plateau_rule: PlateauRule, spike_rule: SpikeRule):
    """The result's per-run parts (run facts and spikes for every run, plateaus for the mixed ones),
    and the plateaus found, by run id."""
    result: dict = {"path": str(path), "runs": {}, "plateaus": {}, "plateau_fraction": {}, "spikes": {},
                    "spike_steps": {}}
    found_plateaus = {}
    for r in runs:
        result["runs"][r.id] = {"datasets": r.datasets, "size": r.size, "n_params": r.n_params,
                                "batch_tokens": r.batch_tokens, "mix": r.mix, "last_step": int(r.metrics.steps[-1])}
        result["spike_steps"][r.id] = spike_steps(r, spike_rule)
        result["spikes"][r.id] = len(result["spike_steps"][r.id])
    for r in mixed:
        p = find_plateaus(r.metrics, plateau_rule)
        found_plateaus[r.id] = p
        result["plateaus"][r.id] = p.intervals
        result["plateau_fraction"][r.id] = p.fraction
    return result, found_plateaus


def _competition(mixed: list[RunRecord], runs: list[RunRecord], single: bool, notes: list[str]) -> dict:
    """The competition ratio of each mixed pair run against its uni-modal references; why not, in `notes`."""
    out = {}
    for r in mixed:
        if r.pair is None:
            notes.append(f"competition: {r.id} has {len(r.datasets)} datasets; the ratio is defined for a pair")
            continue
        c, why = competition(r, runs)
        if c:
            out[r.id] = c
        elif not single:
            notes.append(f"competition: {why}")
    return out


def _write_plots(out: Path, runs: list[RunRecord], found: dict, result: dict, on_progress=None) -> list[str]:
    names = []
    for k, r in enumerate(runs):
        if on_progress:
            on_progress("plotting", k, len(runs))
        name = f"run_{plots.safe_name(r.id)}.png"
        plots.plot_run(out / name, r.id, r.metrics, found.get(r.id), result["spike_steps"][r.id])
        names.append(name)
    if len(runs) > 1 and result["by_size"]["runs"]:
        plots.plot_by_size(out / "by_size.png", result["by_size"])
        names.append("by_size.png")
        if any(r["alpha_ij"] is not None for r in result["by_size"]["runs"]):
            plots.plot_plateau_vs_alpha(out / "plateau_vs_alpha.png", result["by_size"])
            names.append("plateau_vs_alpha.png")
    if result["batch_size"]["groups"]:
        plots.plot_batch_size(out / "batch_size.png", result["batch_size"])
        names.append("batch_size.png")
    if result["competition"]:
        plots.plot_competition(out / "competition.png", result["competition"])
        names.append("competition.png")
    return names
