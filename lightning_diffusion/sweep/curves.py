"""Quality-diversity curves of a sweep: FID vs IS, precision vs recall and FID vs class accuracy, one line
per method through its scales (points labelled by scale), each method's Pareto front shaded on the
precision-recall and FID-accuracy panels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lightning_diffusion.sweep.frontier import FRONTS, methods_of, pareto_front


class Panel(NamedTuple):
    """One plot: its axes' row metrics and labels, and the ``FRONTS`` entry it shades (None: no front)."""

    x_key: str
    y_key: str
    x_label: str
    y_label: str
    front: str | None = None


PANELS = (
    Panel("inception_score", "fid", "Inception Score", "FID (lower is better)"),
    Panel("recall", "precision", "recall (diversity)", "precision (quality)", "precision_recall"),
    Panel("class_accuracy", "fid", "class accuracy", "FID (lower is better)", "fid_accuracy"),
)
MARKERS = "osD^vP*X"


def curves_figure(rows: Sequence[dict[str, Any]]) -> Figure:
    """The panels of ``PANELS`` side by side, a method keeping its colour and marker in every panel (ten
    colours, then the next marker: no two of up to 60 methods look alike); rows missing a panel's metrics
    (e.g. class accuracy of text rows) are left out of that panel."""
    figure = Figure(figsize=(16, 4.5))
    axes = figure.subplots(1, len(PANELS))
    styles = {
        method: (f"C{index % 10}", MARKERS[index // 10 % len(MARKERS)])
        for index, method in enumerate(methods_of(rows))
    }
    for axis, panel in zip(axes, PANELS, strict=True):
        for method, (colour, marker) in styles.items():
            rows_of_method = [row for row in rows if row["method"] == method]
            draw_method(axis, rows_of_method, panel, method, colour, marker)
        if not axis.has_data():
            axis.text(0.5, 0.5, f"no rows with {panel.x_key} and {panel.y_key}", ha="center",
                      transform=axis.transAxes)  # fmt: skip
        if panel.front is not None:
            axis.set_title("shaded: each method's Pareto front", fontsize=9)
        axis.set_xlabel(panel.x_label)
        axis.set_ylabel(panel.y_label)
        axis.grid(alpha=0.3)
    axes[0].legend(title="method")
    figure.tight_layout()
    return figure


def draw_method(
    axis: Axes, rows: Sequence[dict[str, Any]], panel: Panel, method: str, colour: str, marker: str = "o"
) -> None:
    """One method's rows on one panel: a line through its scales, each point annotated with its scale s,
    and its Pareto front as a wide translucent band under it."""
    points = sorted(
        (row for row in rows if row.get(panel.x_key) is not None and row.get(panel.y_key) is not None),
        key=lambda row: row["scale"],
    )
    if not points:
        return
    xs, ys = [row[panel.x_key] for row in points], [row[panel.y_key] for row in points]
    axis.plot(xs, ys, marker=marker, color=colour, label=method)
    for row, x, y in zip(points, xs, ys, strict=True):
        axis.annotate(f"s={row['scale']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if panel.front is not None:
        front = pareto_front(points, *FRONTS[panel.front])
        axis.plot([row[panel.x_key] for row in front], [row[panel.y_key] for row in front], color=colour,
                  linewidth=8, alpha=0.25, marker="o", markersize=12, solid_capstyle="round")  # fmt: skip


def plot_curves(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Save ``curves_figure(rows)`` as a PNG at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    curves_figure(rows).savefig(path, dpi=120)
    return path
