"""curves.png: the three panels, Pareto fronts per method, and rows that lack metrics."""

from __future__ import annotations

from lightning_diffusion.sweep.curves import PANELS, curves_figure, plot_curves


def row(method: str, scale: float, **metrics: float | None) -> dict:
    return {"method": method, "scale": scale, "fid": 10 - scale, "inception_score": 1 + scale,
            "precision": 0.5, "recall": 0.5, "class_accuracy": 0.8, **metrics}  # fmt: skip


def test_each_method_gets_a_line_and_its_shaded_front_on_the_front_panels():
    rows = [
        row("cfg", 0.0, precision=0.5, recall=0.9),
        row("cfg", 1.0, precision=0.6, recall=0.8),
        row("cfg", 2.0, precision=0.55, recall=0.7),  # dominated by s = 1
        row("apg", 1.0),
    ]
    axes = curves_figure(rows).axes
    assert [len(axis.lines) for axis in axes] == [2, 4, 4]  # per method: the scale line (+ the front)
    front = axes[1].lines[1]
    assert list(front.get_xdata()) == [0.8, 0.9] and list(front.get_ydata()) == [0.6, 0.5]
    assert axes[1].lines[1].get_color() == axes[1].lines[0].get_color() == axes[0].lines[0].get_color()


def test_rows_without_class_accuracy_or_new_metrics_and_single_row_methods_still_plot(tmp_path):
    """Text rows (class accuracy None), a method with one row, and an old row missing metrics."""
    rows = [
        row("clip", 0.0, class_accuracy=None),
        row("clip", 2.0, class_accuracy=None),
        row("cfg", 1.0),
        {"method": "old", "scale": 1.0, "fid": 3.0, "inception_score": 2.0},
    ]
    path = plot_curves(rows, tmp_path / "plots" / "curves.png")
    assert path.stat().st_size > 0
    accuracy_panel = curves_figure(rows).axes[[panel.front for panel in PANELS].index("fid_accuracy")]
    assert [line.get_label() for line in accuracy_panel.lines[::2]] == ["cfg"]


def test_a_panel_no_row_can_fill_says_so_instead_of_failing(tmp_path):
    rows = [row("clip", 1.0, class_accuracy=None)]
    accuracy_panel = curves_figure(rows).axes[2]
    assert not accuracy_panel.lines and "no rows with class_accuracy" in accuracy_panel.texts[0].get_text()
    assert plot_curves(rows, tmp_path / "curves.png").stat().st_size > 0


def test_more_methods_than_colours_still_look_apart():
    rows = [row(f"method{index}", 1.0) for index in range(13)]
    lines = curves_figure(rows).axes[0].lines
    styles = [(line.get_color(), line.get_marker()) for line in lines]
    assert len(set(styles)) == 13 and styles[0][0] == styles[10][0]  # colour 0 again, another marker
