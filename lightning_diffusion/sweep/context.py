"""What a sweep reads and reports to besides its models and settings, bundled once so that every entry
point (``evaluate.py``, the ``GuidanceSweep`` callback, the scale search's rounds) passes one object."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_diffusion.sweep.prompts import Prompts


@dataclass(frozen=True)
class SweepContext:
    """``real_batches(n)`` yields n real images of the reference split, batch by batch; ``reference_id``
    identifies that data (its source spec) in the key of the real features cached under ``cache_dir``;
    ``prompts`` says what samples are conditioned on (None: uniform labels over the evaluator's classes);
    ``log_row(row, grid_path)`` sees each finished row (W&B); ``progress`` shows progress bars on rank 0."""

    real_batches: Callable[[int], Iterable[Tensor]]
    reference_id: Any
    cache_dir: str | Path
    prompts: Prompts | None = None
    log_row: Callable[[dict[str, Any], Path], None] | None = None
    progress: bool = True
