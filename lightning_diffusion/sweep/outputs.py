"""A sweep's table on disk: ``sweep.json`` and ``sweep.csv``, written atomically as each row finishes."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import METRIC_KEYS

ROW_KEYS = ("method", "scale", *METRIC_KEYS, "nfe", "seconds")


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file, flushed to disk, then renamed over
    ``path``: a run killed at any moment leaves the previous file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, mode, newline="" if "b" not in mode else None) as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_rows(out: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``sweep.json`` and ``sweep.csv`` atomically (a killed run leaves the last complete table)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "sweep.json", lambda f: json.dump(rows, f, indent=2))

    def write_csv(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=ROW_KEYS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(out / "sweep.csv", write_csv)


def read_rows(out: Path) -> list[dict[str, Any]]:
    """Rows a previous run already wrote to ``out/sweep.json`` (none if it does not exist)."""
    path = out / "sweep.json"
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{path} is not valid JSON ({error}); move it away to start the sweep afresh."
        ) from None
