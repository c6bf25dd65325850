"""A sweep's table on disk: ``sweep.json`` and ``sweep.csv``, written atomically as each row finishes.

Each write re-reads the rows on disk and merges by (method, scale), so a row another run wrote into the
same folder is kept rather than overwritten (the run lock, ``run_lock``, makes the runs take turns).
``sweep.csv`` has the ``ROW_KEYS`` columns, then every other plain value some row holds (seed-set
statistics ``fid_mean``, ``fid_sd``, ``fid_min``; bootstrap intervals ``fid_lo``, ``fid_hi``); nested
values (each seed set's own, ``seed_sets``) are in ``sweep.json`` only.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from lightning_diffusion.atomic import atomic_write
from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import METRIC_KEYS

ROW_KEYS = ("method", "scale", *METRIC_KEYS, "nfe", "seconds", "ema")


def row_columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The columns of a table of ``rows``: ``ROW_KEYS``, then the other keys with plain values (numbers,
    text, None) in the order the rows first hold them."""
    extra = {
        key: None
        for row in rows
        for key, value in row.items()
        if key not in ROW_KEYS and (value is None or isinstance(value, (int, float, str, bool)))
    }
    return (*ROW_KEYS, *extra)


def row_key(row: dict[str, Any]) -> tuple[str, float | None, float]:
    """What identifies a row in a sweep's table: its method (row label), EMA length (None: the checkpoint's
    own weights) and guidance scale."""
    return row["method"], row.get("ema"), float(row["scale"])


def merge_rows(on_disk: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows on disk that ``rows`` does not replace (same method, EMA length and scale), then ``rows``."""
    replaced = {row_key(row) for row in rows}
    return [row for row in on_disk if row_key(row) not in replaced] + rows


def write_rows(out: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge ``rows`` into ``sweep.json`` and ``sweep.csv`` (read again just before), written atomically
    (a killed run leaves the last complete table); return the merged rows."""
    merged = merge_rows(read_rows(out), rows)
    atomic_write(out / "sweep.json", lambda f: json.dump(merged, f, indent=2), mode="w")

    def write_csv(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=row_columns(merged), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(merged)

    atomic_write(out / "sweep.csv", write_csv, mode="w")
    return merged


def read_rows(out: Path) -> list[dict[str, Any]]:
    """Rows a previous run already wrote to ``out/sweep.json`` (none if it does not exist)."""
    path = out / "sweep.json"
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{path} is not valid JSON ({error}); move it away to start the sweep afresh."
        ) from None
