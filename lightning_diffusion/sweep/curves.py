"""Quality-diversity curves of a sweep: one panel per registered trade-off (FID vs IS, precision vs recall,
FID vs class accuracy), one line per method through its scales (points labelled by scale), each method's
Pareto front shaded on the panels that name one, error bars where the rows have them (the 95 % bootstrap
interval ``<column>_lo``/``_hi``, else plus or minus the standard deviation over seed sets ``<column>_sd``).
Panels, axis labels and fronts come from the metric registry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lightning_diffusion.metrics import TradeOff, column, trade_offs
from lightning_diffusion.sweep.frontier import FRONTS, pareto_front

PANELS = trade_offs()  # (x, y, front) of each panel, in the order the metrics registered them
MARKERS = "osD^vP*X"


def curves_figure(rows: Sequence[dict[str, Any]]) -> Figure:
    """The panels of ``PANELS`` side by side, a method keeping its colour and marker in every panel (ten
    colours, then the next marker: no two of up to 60 methods look alike); rows missing a panel's metrics
    (e.g. class accuracy of text rows) are left out of that panel."""
    figure = Figure(figsize=(16, 4.5))
    axes = figure.subplots(1, len(PANELS))
    styles = {
        method: (f"C{index % 10}", MARKERS[index // 10 % len(MARKERS)])
        for index, method in enumerate(dict.fromkeys(map(curve_of, rows)))
    }
    for axis, panel in zip(axes, PANELS, strict=True):
        for method, (colour, marker) in styles.items():
            rows_of_method = [row for row in rows if curve_of(row) == method]
            draw_method(axis, rows_of_method, panel, method, colour, marker)
        if not axis.has_data():
            axis.text(0.5, 0.5, f"no rows with {panel.x} and {panel.y}", ha="center",
                      transform=axis.transAxes)  # fmt: skip
        if panel.front is not None:
            axis.set_title("shaded: each method's Pareto front", fontsize=9)
        axis.set_xlabel(column(panel.x).label)
        axis.set_ylabel(column(panel.y).label)
        axis.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:  # rows with null metrics (all samples non-finite) draw none
        axes[0].legend(title="method")
    figure.tight_layout()
    return figure


def curve_of(row: dict[str, Any]) -> str:
    """The curve a row is drawn on: its method, one curve per EMA length where rows have one."""
    return row["method"] if row.get("ema") is None else f"{row['method']} σ_rel={row['ema']:g}"


def draw_method(
    axis: Axes, rows: Sequence[dict[str, Any]], panel: TradeOff, method: str, colour: str, marker: str = "o"
) -> None:
    """One method's rows on one panel: a line through its scales, each point annotated with its scale s,
    and its Pareto front as a wide translucent band under it."""
    points = sorted(
        (row for row in rows if row.get(panel.x) is not None and row.get(panel.y) is not None),
        key=lambda row: row["scale"],
    )
    if not points:
        return
    xs, ys = [row[panel.x] for row in points], [row[panel.y] for row in points]
    axis.plot(xs, ys, marker=marker, color=colour, label=method)
    xerr, yerr = error_bars(points, panel.x), error_bars(points, panel.y)
    if xerr is not None or yerr is not None:
        axis.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor=colour, alpha=0.5, capsize=2)
    for row, x, y in zip(points, xs, ys, strict=True):
        axis.annotate(f"s={row['scale']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if panel.front is not None:
        front = pareto_front(points, *FRONTS[panel.front])
        axis.plot([row[panel.x] for row in front], [row[panel.y] for row in front], color=colour,
                  linewidth=8, alpha=0.25, marker="o", markersize=12, solid_capstyle="round")  # fmt: skip


def error_bars(rows: Sequence[dict[str, Any]], name: str) -> list[list[float]] | None:
    """Matplotlib's (2, n) lower and upper error-bar lengths of column ``name``: to the ends of each row's
    bootstrap interval, else one standard deviation over its seed sets, else none (0); None when no row
    has either. An interval that does not hold the value (rare: a skewed metric) is cut at the value."""
    lower, upper, found = [], [], False
    for row in rows:
        value = row[name]
        low, high, sd = row.get(f"{name}_lo"), row.get(f"{name}_hi"), row.get(f"{name}_sd")
        if low is not None and high is not None:
            lower.append(max(0.0, value - low))
            upper.append(max(0.0, high - value))
            found = True
        elif sd is not None:
            lower.append(sd)
            upper.append(sd)
            found = True
        else:
            lower.append(0.0)
            upper.append(0.0)
    return [lower, upper] if found else None


def plot_curves(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Save ``curves_figure(rows)`` as a PNG at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    curves_figure(rows).savefig(path, dpi=120)
    return path
