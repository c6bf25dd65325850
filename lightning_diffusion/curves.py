"""Diversity-quality curves of a sweep: FID vs IS and precision vs recall, points labelled by scale."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

PANELS = (
    ("inception_score", "fid", "Inception Score", "FID (lower is better)"),
    ("recall", "precision", "recall (diversity)", "precision (quality)"),
)


def plot_curves(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Two panels, one line per method, each point annotated with its guidance scale s."""
    figure = Figure(figsize=(11, 4.5))
    axes = figure.subplots(1, 2)
    methods = list(dict.fromkeys(row["method"] for row in rows))
    for axis, (x_key, y_key, x_label, y_label) in zip(axes, PANELS, strict=True):
        for method in methods:
            points = sorted((row for row in rows if row["method"] == method), key=lambda row: row["scale"])
            xs, ys = [row[x_key] for row in points], [row[y_key] for row in points]
            axis.plot(xs, ys, marker="o", label=method)
            for row, x, y in zip(points, xs, ys, strict=True):
                axis.annotate(
                    f"s={row['scale']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8
                )
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.grid(alpha=0.3)
    axes[0].legend(title="method")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
