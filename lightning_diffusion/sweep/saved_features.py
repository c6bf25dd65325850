"""The per-sample data a sweep saves for intervals and paired comparisons (with ``bootstrap``).

For each row, scale and seed set, ``features_<row>_s<scale>_set<k>.pt`` holds the finite samples' sample
indices and inputs (features, logits, outcomes) in sample-index order, with what decides whether two rows
share their noise: the seed, N, the seed set and the reference (data, split, feature network and real
count: ``reference.reference_key``). The real features the rows were measured against are written once, as
``reference_<key>.pt``. Files are written atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.atomic import atomic_write
from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics.registry import Gathered
from lightning_diffusion.sweep.sample_files import scale_tag

FORMAT = 1


def row_tag(label: str, scale: float, ema: float | None = None) -> str:
    """How a row appears in file names: ``cfg_s2``, ``cfg_ema0.1_s2`` (a row of EMA length 0.1)."""
    return f"{label}{'' if ema is None else f'_ema{ema:g}'}_{scale_tag(scale)}"


def features_path(folder: Path, label: str, scale: float, seed_set: int, ema: float | None = None) -> Path:
    return Path(folder) / f"features_{row_tag(label, scale, ema)}_set{seed_set}.pt"


def reference_path(folder: Path, key: str) -> Path:
    return Path(folder) / f"reference_{key}.pt"


@dataclass(frozen=True)
class SweepRecord:
    """What every saved row of a sweep shares: its seed, samples per set, reference key and extractor."""

    seed: int
    num_samples: int
    reference: str
    extractor: str


def save_set(
    folder: Path,
    label: str,
    scale: float,
    seed_set: int,
    gathered: Gathered,
    record: SweepRecord,
    ema: float | None = None,
) -> Path:
    """Write one (row, scale, set)'s gathered samples (their indices and inputs, on the CPU)."""
    indices = gathered.indices if gathered.indices is not None else torch.arange(len(gathered.generated))
    payload = {
        "format": FORMAT,
        "label": label,
        "scale": float(scale),
        "ema": ema,
        "seed_set": int(seed_set),
        "seed": record.seed,
        "num_samples": record.num_samples,
        "reference": record.reference,
        "extractor": record.extractor,
        "indices": indices.long().cpu(),
        "inputs": {name: value.float().cpu() for name, value in gathered.inputs.items()},
    }
    path = features_path(folder, label, scale, seed_set, ema)
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def save_reference(folder: Path, key: str, real: Tensor) -> Path:
    """Write the real features of reference ``key`` once (kept when the file is already there)."""
    path = reference_path(folder, key)
    if not path.is_file():
        payload = {"format": FORMAT, "reference": key, "features": real.float().cpu().contiguous()}
        atomic_write(path, lambda handle: torch.save(payload, handle))
    return path


@dataclass
class SavedSet:
    """One seed set of a saved row: sample indices (M,) ascending and inputs by name (M, ...)."""

    seed_set: int
    indices: Tensor
    inputs: dict[str, Tensor]


@dataclass
class SavedRow:
    """A row's saved samples, every seed set found, and the record of the sweep it came from."""

    folder: Path
    label: str
    scale: float
    ema: float | None
    record: SweepRecord
    sets: dict[int, SavedSet]

    @property
    def name(self) -> str:
        return f"{self.label}@{self.scale:g}" + ("" if self.ema is None else f"@{self.ema:g}")

    def gathered(self, seed_set: int, real: Tensor, positions: Tensor | None = None) -> Gathered:
        """The set's samples as ``Gathered`` against ``real``, restricted to ``positions`` if given."""
        saved = self.sets[seed_set]
        inputs = saved.inputs if positions is None else {n: v[positions] for n, v in saved.inputs.items()}
        indices = saved.indices if positions is None else saved.indices[positions]
        return Gathered(real=real, generated=inputs["features"], inputs=inputs, indices=indices)


def _read(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # a truncated or foreign file raises one of many kinds
        raise ConfigError(f"{path} is not a sweep's saved features ({error}); re-run its row.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a sweep's saved features (format {FORMAT}); re-run its row.")
    return payload


def load_row(folder: str | Path, label: str, scale: float, ema: float | None = None) -> SavedRow:
    """Every saved seed set of row ``label`` at ``scale`` (and EMA length ``ema``) in ``folder``."""
    folder = Path(folder)
    prefix = f"features_{row_tag(label, scale, ema)}_set"
    paths = sorted(p for p in folder.glob(f"{prefix}*.pt") if p.name[len(prefix) : -3].isdigit())
    if not paths:
        name = f"{label}@{scale:g}" + ("" if ema is None else f"@{ema:g}")
        raise ConfigError(
            f"{folder} has no saved features of row {name}; the sweep saves them with --bootstrap B (e.g. "
            "1000): run it so, or check the row's label and scale (and EMA length) in its sweep.json."
        )
    records, sets = set(), {}
    for path in paths:
        payload = _read(path)
        records.add(
            SweepRecord(
                int(payload["seed"]), int(payload["num_samples"]), payload["reference"], payload["extractor"]
            )
        )
        sets[int(payload["seed_set"])] = SavedSet(
            int(payload["seed_set"]), payload["indices"], dict(payload["inputs"])
        )
    if len(records) > 1:
        raise ConfigError(
            f"{folder} holds features of row {label}@{scale:g} from runs with different settings "
            f"({sorted(records, key=str)}); re-run the row in a fresh folder."
        )
    return SavedRow(folder, label, float(scale), ema, records.pop(), dict(sorted(sets.items())))


def load_reference(folder: str | Path, key: str) -> Tensor:
    """The real features of reference ``key`` saved in ``folder``."""
    path = reference_path(Path(folder), key)
    if not path.is_file():
        raise ConfigError(
            f"{folder} has no {path.name}, the real features its rows were measured against; re-run the "
            "sweep with --bootstrap to write it."
        )
    payload = _read(path)
    return payload["features"]
