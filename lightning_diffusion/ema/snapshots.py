"""Post-hoc EMA snapshots on disk: one file per snapshot step holding every tracked profile's averaged
parameters, written atomically, read weights-only, self-describing.

A snapshot ``snapshot-<step>.pt`` holds the component record ``registry.py`` writes (kind and spec), the
data record of the run (as a checkpoint's), the module's buffers, and a ``posthoc_ema`` record: the step,
the profiles (σ_rel, γ) and one dict of averaged parameters per profile. A folder of them is a run's
snapshots; thinning keeps fewer of them, spread over the run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_diffusion.atomic import atomic_write
from lightning_diffusion.compatibility import DATA_KEY
from lightning_diffusion.config import ConfigError
from lightning_diffusion.registry import CHECKPOINT_KEY, checkpoint_kind, unreadable_checkpoint

SNAPSHOT_KEY = "posthoc_ema"
FORMAT = 1
PATTERN = re.compile(r"snapshot-(\d+)\.pt")


def snapshot_path(folder: str | Path, step: int) -> Path:
    """Where the snapshot of ``step`` lives in ``folder`` (names sort by step)."""
    return Path(folder) / f"snapshot-{step:09d}.pt"


def write_snapshot(
    folder: str | Path,
    step: int,
    component: Mapping[str, Any],
    data: Mapping[str, Any] | None,
    ema: Mapping[str, Any],
    buffers: Mapping[str, torch.Tensor],
) -> Path:
    """Write the snapshot of ``step`` atomically: ``component`` is the {kind, spec} record, ``data`` the
    run's data record, ``ema`` a tracker's ``state_dict`` (step, profiles, averages), ``buffers`` the
    module's buffers by name."""
    content = {
        CHECKPOINT_KEY: dict(component),
        DATA_KEY: None if data is None else dict(data),
        "buffers": {name: tensor.detach().cpu() for name, tensor in buffers.items()},
        SNAPSHOT_KEY: {"format": FORMAT, **ema},
    }
    return atomic_write(snapshot_path(folder, step), lambda handle: torch.save(content, handle))


@dataclass(frozen=True)
class Snapshot:
    """One snapshot file's header: its path, step, tracked σ_rel and γ, component and data records."""

    path: Path
    step: int
    sigma_rels: tuple[float, ...]
    gammas: tuple[float, ...]
    component: Mapping[str, Any]
    data: Mapping[str, Any] | None


def load_snapshot(path: Path, mmap: bool = False) -> dict[str, Any]:
    """The content of a snapshot file, weights only (``mmap``: tensors read lazily, for headers)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises many kinds for a corrupt or foreign file
        raise unreadable_checkpoint(path, error) from None


def is_snapshot_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding post-hoc EMA snapshot files."""
    path = Path(path)
    return path.is_dir() and any(PATTERN.fullmatch(child.name) for child in path.iterdir())


def read_snapshots(folder: str | Path) -> list[Snapshot]:
    """The headers of the snapshots in ``folder`` by step; a folder without snapshots, a file that is no
    snapshot, or snapshots of different models (kind, spec or data) are refused with the fix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(
            f"{str(folder)!r} is not a folder of post-hoc EMA snapshots; pass the snapshot folder a run with "
            "callbacks.PostHocEMA wrote (e.g. runs/fashion_mnist/denoiser/posthoc_ema)."
        )
    paths = sorted(child for child in folder.iterdir() if PATTERN.fullmatch(child.name))
    if not paths:
        raise ConfigError(
            f"{str(folder)!r} holds no post-hoc EMA snapshots (snapshot-<step>.pt); train with the "
            "callbacks.PostHocEMA callback (--config configs/trainer/posthoc_ema.yaml) and pass its folder."
        )
    snapshots = [_header(path) for path in paths]
    first = snapshots[0]
    for other in snapshots[1:]:
        ours = {"model": first.component, "data": first.data}
        theirs = {"model": other.component, "data": other.data}
        if ours != theirs:
            raise ConfigError(
                f"snapshot folder {str(folder)!r} mixes snapshots of different runs: {other.path.name} "
                f"differs from {first.path.name} in {_difference(theirs, ours)}; keep one run's snapshots "
                "per folder."
            )
    return snapshots


def _header(path: Path) -> Snapshot:
    content = load_snapshot(path, mmap=True)
    record = content.get(SNAPSHOT_KEY)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ConfigError(
            f"{str(path)!r} is not a post-hoc EMA snapshot of this version (format {FORMAT}); pass a folder "
            "written by callbacks.PostHocEMA."
        )
    profiles = record["profiles"]
    return Snapshot(
        path=path,
        step=int(record["step"]),
        sigma_rels=tuple(float(profile["sigma_rel"]) for profile in profiles),
        gammas=tuple(float(profile["gamma"]) for profile in profiles),
        component=checkpoint_kind(content, path),
        data=content.get(DATA_KEY),
    )


def _difference(first: Any, second: Any, where: str = "") -> str:
    """Where two records first differ, as ``model.spec.init_args.net: A vs B``."""
    if isinstance(first, Mapping) and isinstance(second, Mapping):
        for key in sorted(set(first) | set(second), key=str):
            if first.get(key) != second.get(key):
                return _difference(first.get(key), second.get(key), f"{where}.{key}" if where else str(key))
    return f"{where} ({first!r} vs {second!r})"


def snapshots_digest(snapshots: list[Snapshot]) -> str:
    """A short key of a set of snapshots: names, sizes and modification times (a thinned, extended or
    rewritten set gets another key, so a cached reconstruction of the old set is not reused)."""
    digest = hashlib.sha256()
    for snapshot in snapshots:
        stat = snapshot.path.stat()
        digest.update(f"{snapshot.path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def thin_snapshots(folder: str | Path, keep: int) -> list[Path]:
    """Keep ``keep`` of the folder's snapshots spread evenly over the steps (the first and the last kept),
    delete the others; return the deleted paths."""
    if keep < 2:
        raise ConfigError(
            f"--keep must be at least 2 (reconstruction needs snapshots over time), got {keep}."
        )
    snapshots = read_snapshots(folder)
    if len(snapshots) <= keep:
        return []
    kept = set(np.unique(np.round(np.linspace(0, len(snapshots) - 1, keep)).astype(int)).tolist())
    removed = [snapshot.path for index, snapshot in enumerate(snapshots) if index not in kept]
    for path in removed:
        path.unlink()
    return removed
