"""Sweep results in Weights & Biases: per-row metrics and grids, then a table, line plots, the frontier
table, each method's Pareto fronts and the curves; the columns and plots follow the metric registry, and
the table holds the seed-set statistics and bootstrap intervals where the rows have them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning_diffusion.metrics import METRIC_KEYS
from lightning_diffusion.sweep.frontier import (
    FRONTS,
    frontier_keys,
    frontier_rows,
    fronts_by_method,
    read_frontier,
)
from lightning_diffusion.sweep.outputs import row_columns

PLOTTED = METRIC_KEYS  # one line plot against the scale per registered column (and non_finite)


def wandb_row_logger(run: Any, prefix: str = "sweep") -> Callable[[dict[str, Any], Path], None]:
    """A ``log_row`` callback for ``run_sweep`` that logs a row's metrics and its sample grid."""
    import wandb

    def log_row(row: dict[str, Any], grid_path: Path) -> None:
        metrics = {
            f"{prefix}/{row['method']}/{key}": row[key]
            for key in row_columns([row])[2:]
            if isinstance(row.get(key), (int, float))
        }
        image = wandb.Image(str(grid_path), caption=f"{row['method']} s={row['scale']:g}")
        run.log(
            {
                **metrics,
                f"{prefix}/{row['method']}/scale": row["scale"],
                f"{prefix}/grid/{row['method']}": image,
            }
        )

    return log_row


def log_sweep_summary(run: Any, rows: Sequence[dict[str, Any]], out: Path, prefix: str = "sweep") -> None:
    """The whole table, one line plot per metric against the scale, the frontier table (``frontier.py``: the
    sweep's ``frontier.csv`` with its held-out columns, intervals and ties where it wrote one), one plot per
    Pareto front in ``FRONTS`` (a line per method) and ``curves.png``."""
    import wandb

    keys = row_columns(list(rows))
    table = wandb.Table(columns=list(keys), data=[[row.get(key) for key in keys] for row in rows])
    plots = {
        f"{prefix}/plot/{key}": wandb.plot.line(
            table, "scale", key, stroke="method", title=f"{key} vs guidance scale"
        )
        for key in PLOTTED
        if any(row.get(key) is not None for row in rows)
    }
    written = Path(out) / "frontier.csv"
    frontier = read_frontier(written) if written.is_file() else frontier_rows(rows)
    frontier_columns = frontier_keys(frontier)
    frontier_data = [[entry.get(key) for key in frontier_columns] for entry in frontier]
    frontier_table = wandb.Table(columns=list(frontier_columns), data=frontier_data)
    run.log(
        {
            f"{prefix}/table": table,
            **plots,
            f"{prefix}/frontier": frontier_table,
            **front_plots(rows, prefix),
            f"{prefix}/curves": wandb.Image(str(out / "curves.png")),
        }
    )


def front_plots(rows: Sequence[dict[str, Any]], prefix: str = "sweep") -> dict[str, Any]:
    """Per entry of ``FRONTS`` with any point, a W&B line plot of each method's Pareto front."""
    import wandb

    plots = {}
    for name, (x, y) in FRONTS.items():
        points = [
            [method, row["scale"], x.value(row), y.value(row)]
            for method, front in fronts_by_method(rows, x, y).items()
            for row in front
        ]
        if points:
            table = wandb.Table(columns=["method", "scale", x.name, y.name], data=points)
            title = f"{y.name} vs {x.name}: Pareto front per method"
            plots[f"{prefix}/front/{name}"] = wandb.plot.line(
                table, x.name, y.name, stroke="method", title=title
            )
    return plots
