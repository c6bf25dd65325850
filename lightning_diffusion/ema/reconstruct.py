"""The average of any EMA length rebuilt after training from a run's post-hoc EMA snapshots (EDM2 appendix
C.3): the target profile ending at the last snapshot is fitted by least squares on the snapshots' profiles
(``profiles.solve_weights``), and the snapshots' averaged parameters are combined with those weights.

A rebuilt component is cached as an ordinary component checkpoint in ``<snapshots>/reconstructed/``, keyed
by σ_rel and the snapshot set's digest (``snapshots_digest``), written atomically: ``load_component``
reads it like any checkpoint, and a second sweep of the same length reads it instead of the snapshots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_diffusion.atomic import atomic_write
from lightning_diffusion.compatibility import DATA_KEY
from lightning_diffusion.config import ConfigError
from lightning_diffusion.ema.profiles import SIGMA_REL_MAX, gamma_of, solve_weights
from lightning_diffusion.ema.snapshots import (
    SNAPSHOT_KEY,
    Snapshot,
    load_snapshot,
    read_snapshots,
    snapshots_digest,
)
from lightning_diffusion.registry import CHECKPOINT_KEY, load_component

MAX_FIT_ERROR = 0.10  # relative L2 miss of the target profile beyond which a length is refused
CACHE_FOLDER = "reconstructed"
RECONSTRUCTION_KEY = "posthoc_ema_reconstruction"


@dataclass(frozen=True)
class Fit:
    """How σ_rel is rebuilt: its γ, the step it ends at, the weight of each (snapshot, profile index) and
    the relative L2 error of the fitted profile."""

    sigma_rel: float
    gamma: float
    step: int
    terms: tuple[tuple[Snapshot, int, float], ...]
    error: float


def fit(snapshots: Sequence[Snapshot], sigma_rel: float, max_error: float = MAX_FIT_ERROR) -> Fit:
    """The least-squares fit of the profile of ``sigma_rel`` at the last snapshot's step; refused when
    ``sigma_rel`` ≤ 0, wider than any profile, or fitted worse than ``max_error``, with the range the
    snapshots can express."""
    gamma = gamma_of(sigma_rel)
    columns = [(snapshot, index) for snapshot in snapshots for index in range(len(snapshot.gammas))]
    steps = [snapshot.step for snapshot, _ in columns]
    gammas = [snapshot.gammas[index] for snapshot, index in columns]
    step = snapshots[-1].step
    weights, error = solve_weights(steps, gammas, step, gamma)
    if error > max_error:
        low, high = expressible_range(snapshots, max_error)
        tracked = sorted({value for snapshot in snapshots for value in snapshot.sigma_rels})
        raise ConfigError(
            f"EMA length sigma_rel {sigma_rel:g} is beyond what the {len(snapshots)} snapshots in "
            f"{str(snapshots[0].path.parent)!r} can express: the best combination of their profiles "
            f"(sigma_rel {', '.join(f'{value:g}' for value in tracked)}, steps {snapshots[0].step}..{step}) "
            f"misses its profile by {error:.0%} (relative L2), more than the {max_error:.0%} allowed; they "
            f"express sigma_rel {low:.3f} to {high:.3f}: choose one in that range, or train with more "
            "snapshots or a tracked length nearer to it."
        )
    terms = tuple((snap, index, float(w)) for (snap, index), w in zip(columns, weights, strict=True))
    return Fit(float(sigma_rel), gamma, step, terms, error)


def expressible_range(
    snapshots: Sequence[Snapshot], max_error: float = MAX_FIT_ERROR, points: int = 200
) -> tuple[float, float]:
    """The σ_rel interval around the tracked lengths that the snapshots fit within ``max_error`` (scanned
    on a log grid from 0.001 to the widest profile)."""
    columns = [(snapshot.step, gamma) for snapshot in snapshots for gamma in snapshot.gammas]
    steps, gammas = zip(*columns, strict=True)
    grid = np.geomspace(1e-3, SIGMA_REL_MAX * 0.999, points)
    good = [solve_weights(steps, gammas, snapshots[-1].step, gamma_of(s))[1] <= max_error for s in grid]
    tracked = min(snapshots[0].sigma_rels)
    start = int(np.searchsorted(grid, tracked))
    low = high = min(start, points - 1)
    while low > 0 and good[low - 1]:
        low -= 1
    while high < points - 1 and good[high + 1]:
        high += 1
    return float(grid[low]), float(grid[high])


def averaged_state_dict(result: Fit) -> dict[str, Tensor]:
    """The component's state dict for a fit: Σ weight · averaged parameters over the snapshots (in float64,
    cast back), with the buffers of the last snapshot; snapshots are read one at a time."""
    total: dict[str, Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    buffers: dict[str, Tensor] = {}
    by_snapshot: dict[Path, list[tuple[int, float]]] = {}
    for snapshot, index, weight in result.terms:
        by_snapshot.setdefault(snapshot.path, []).append((index, weight))
    for path, terms in by_snapshot.items():
        content = load_snapshot(path)
        averages = content[SNAPSHOT_KEY]["averages"]
        for index, weight in terms:
            for name, tensor in averages[index].items():
                dtypes[name] = tensor.dtype
                term = tensor.to(torch.float64) * weight
                total[name] = total[name] + term if name in total else term
        buffers = content["buffers"]
    return {**buffers, **{name: tensor.to(dtypes[name]) for name, tensor in total.items()}}


def reconstructed_checkpoint(folder: str | Path, sigma_rel: float, max_error: float = MAX_FIT_ERROR) -> Path:
    """The checkpoint of the component averaged at ``sigma_rel`` from the snapshots in ``folder``: read from
    the cache when the same snapshot set was rebuilt at that length before, else rebuilt and cached
    (atomically) as ``<folder>/reconstructed/ema<σ_rel>-<digest>.ckpt``."""
    snapshots = read_snapshots(folder)
    result = fit(snapshots, sigma_rel, max_error)
    path = Path(folder) / CACHE_FOLDER / f"ema{sigma_rel:g}-{snapshots_digest(snapshots)}.ckpt"
    if path.is_file():
        return path
    content = {
        CHECKPOINT_KEY: dict(snapshots[-1].component),
        DATA_KEY: snapshots[-1].data,
        "state_dict": averaged_state_dict(result),
        RECONSTRUCTION_KEY: {
            "sigma_rel": result.sigma_rel,
            "gamma": result.gamma,
            "step": result.step,
            "fit_error": result.error,
            "snapshots": [str(snapshot.path.name) for snapshot in snapshots],
        },
    }
    try:
        return atomic_write(path, lambda handle: torch.save(content, handle))
    except OSError as error:
        raise ConfigError(
            f"cannot cache the EMA reconstruction in {str(path.parent)!r} ({error.strerror or error}); make "
            "the snapshot folder writable or copy it somewhere writable."
        ) from None


def reconstruct(
    folder: str | Path, sigma_rel: float, map_location: Any = "cpu", max_error: float = MAX_FIT_ERROR
) -> Any:
    """The component of the snapshots in ``folder`` with its parameters averaged at EMA length
    ``sigma_rel`` (rebuilt once, then read from the cache), in eval mode."""
    return load_component(reconstructed_checkpoint(folder, sigma_rel, max_error), map_location=map_location)


def check_lengths(folder: str | Path | None, lengths: Sequence[float], denoiser: Any = None) -> None:
    """Refuse, before a sweep samples, EMA lengths without a snapshot folder (``denoiser`` names the plain
    checkpoint given instead) or that its snapshots cannot express."""
    if folder is None:
        raise ConfigError(
            f"EMA lengths {list(lengths)} (--ema_lengths) rebuild the denoiser from post-hoc EMA snapshots, "
            f"and {denoiser or 'the denoiser'} is a plain checkpoint (no snapshots); train with "
            "callbacks.PostHocEMA (--config configs/trainer/posthoc_ema.yaml) and pass its snapshot folder "
            "(<run>/posthoc_ema) as --denoiser, or leave out --ema_lengths."
        )
    snapshots = read_snapshots(folder)
    for sigma_rel in lengths:
        fit(snapshots, sigma_rel)
