"""Print the interval of the best row of an interval-selection sweep (highest attribute accuracy, then
CLIP score) as evaluate.py's --interval takes it:  python scripts/best_interval.py SWEEP.json"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

LABEL = re.compile(r"_(?P<low>[0-9.]+)-(?P<high>[0-9.]+)$")  # a row label ending in _SIGMAMIN-SIGMAMAX


def best_interval(rows: list[dict]) -> list[float]:
    """The (sigma_min, sigma_max] that the best row's label names, e.g. "clip_interval_0.05-10"."""
    ranked = [row for row in rows if LABEL.search(row["method"])]
    if not ranked:
        sys.exit("error: no row label names an interval like 'clip_interval_0.05-10'.")
    best = max(ranked, key=lambda row: (row.get("attribute_accuracy") or 0.0, row.get("clip_score") or 0.0))
    match = LABEL.search(best["method"])
    return [float(match["low"]), float(match["high"])]


if __name__ == "__main__":
    print(json.dumps(best_interval(json.loads(Path(sys.argv[1]).read_text()))))
