"""Print a sweep folder's rows and its frontier at one class-accuracy level as Markdown tables, each number
with its spread: "mean ± sd over the seed sets [95 % bootstrap interval]" where the sweep has them.

    .venv/bin/python scripts/sweep_report.py runs/lab/fashion_mnist/lab --columns fid class_accuracy recall
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any


def cell(row: dict[str, Any], name: str) -> str:
    """``row``'s value of ``name`` with its sd over seed sets and its bootstrap interval, where present."""
    value = row.get(name)
    if value is None:
        return ""
    text = f"{value:.3f}"
    if row.get(f"{name}_sd") is not None:
        text += f" ± {row[f'{name}_sd']:.3f}"
    if row.get(f"{name}_lo") is not None and row.get(f"{name}_hi") is not None:
        text += f" [{row[f'{name}_lo']:.3f}, {row[f'{name}_hi']:.3f}]"
    return text


def label(row: dict[str, Any]) -> str:
    ema = row.get("ema")
    return row["method"] if ema in (None, "") else f"{row['method']} (σ_rel {float(ema):g})"


def rows_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| row | s | " + " | ".join(columns) + " | nfe |", "|---|---:|" + "---:|" * (len(columns) + 1)]
    for row in rows:
        cells = " | ".join(cell(row, name) for name in columns)
        lines.append(f"| {label(row)} | {row['scale']:g} | {cells} | {row.get('nfe') or 0:g} |")
    return "\n".join(lines)


FRONTIER_KEYS = ("fid", "fid_lo", "fid_hi", "fid_same_set", "set_effect", "selection_bias", "tie")
TEXT_KEYS = ("method", "scale", "ema", "tie")


def frontier_table(folder: Path, level: float) -> str:
    with (folder / "frontier.csv").open() as handle:
        entries = [e for e in csv.DictReader(handle) if float(e["min_class_accuracy"]) == level]
    head = [
        "method",
        "scale",
        "ema",
        "class_accuracy",
        "recall",
        *(k for k in FRONTIER_KEYS if k in entries[0]),
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for entry in sorted(entries, key=lambda e: float(e["fid"]) if e["fid"] else float("inf")):
        values = [
            entry[key] if key in TEXT_KEYS or not entry[key] else f"{float(entry[key]):.3f}" for key in head
        ]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a sweep's output folder (sweep.json, frontier.csv)")
    parser.add_argument("--columns", nargs="+", default=["fid", "class_accuracy", "recall"])
    parser.add_argument("--level", type=float, default=0.95, help="the frontier's class-accuracy level")
    args = parser.parse_args()
    rows = json.loads((args.folder / "sweep.json").read_text())
    print(rows_table(rows, args.columns))
    print(f"\nfrontier.csv at class accuracy >= {args.level:g}:\n")
    print(frontier_table(args.folder, args.level))


if __name__ == "__main__":
    main()
