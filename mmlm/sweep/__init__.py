"""`mmlm sweep`: grids of sizes x budgets x mixtures, launched locally or through submitit, resumable.

    grid = load_grid("grid.toml")                # checked in full: GridError lists every problem
    report = run_sweep(grid, "runs/study", jobs=2, launcher="local")
    columns, rows = collect_results("runs/study")  # what DIR/results.csv holds
"""
from .demo import demo_grid, ensure_demo_data
from .grid import Grid, GridError, RunSpec, grid_from_dict, load_grid, parse_grid, run_id
from .launch import LAUNCHERS, plan_sweep, run_sweep
from .results_csv import collect_results, write_results

__all__ = [
    "LAUNCHERS", "Grid", "GridError", "RunSpec", "collect_results", "demo_grid", "ensure_demo_data",
    "grid_from_dict", "load_grid", "parse_grid", "plan_sweep", "run_id", "run_sweep", "write_results",
]
