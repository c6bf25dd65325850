"""Sweep results in Weights & Biases: per-row metrics and grids, then a table, line plots and curves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning_diffusion.metrics import METRIC_KEYS
from lightning_diffusion.sweep import ROW_KEYS

PLOTTED = METRIC_KEYS


def wandb_row_logger(run: Any, prefix: str = "sweep") -> Callable[[dict[str, Any], Path], None]:
    """A ``log_row`` callback for ``run_sweep`` that logs a row's metrics and its sample grid."""
    import wandb

    def log_row(row: dict[str, Any], grid_path: Path) -> None:
        metrics = {
            f"{prefix}/{row['method']}/{key}": row[key] for key in ROW_KEYS[2:] if row.get(key) is not None
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
    """The whole table, one line plot per metric against the scale, and ``curves.png``."""
    import wandb

    table = wandb.Table(columns=list(ROW_KEYS), data=[[row.get(key) for key in ROW_KEYS] for row in rows])
    plots = {
        f"{prefix}/plot/{key}": wandb.plot.line(
            table, "scale", key, stroke="method", title=f"{key} vs guidance scale"
        )
        for key in PLOTTED
        if any(row.get(key) is not None for row in rows)
    }
    run.log({f"{prefix}/table": table, **plots, f"{prefix}/curves": wandb.Image(str(out / "curves.png"))})
