"""`mmlm analyze`: the paper's four training phenomena measured on runs, and the modality test.

    analyze_path(path, out)            plateaus, spikes, batch-size guideline, competition, trends
    modality_test(run, data, a, b)     is B a distinct modality from A under a model trained on A?

Modules: runs (reading run folders), plateaus, trends (by size, batch size), competition,
modality, plots, analyze (puts them together).
"""
from .analyze import analyze_path, spike_steps
from .competition import competition
from .modality import doc_perplexities, modality_test, modality_verdict
from .plateaus import PlateauRule, Plateaus, find_plateaus
from .run_records import Metrics, RunRecord, find_run_dirs, read_run, read_metrics

__all__ = [
    "analyze_path", "spike_steps", "competition", "doc_perplexities", "modality_test", "modality_verdict",
    "PlateauRule", "Plateaus", "find_plateaus", "Metrics", "RunRecord", "find_run_dirs", "read_run", "read_metrics",
]
