"""Sample grids: rows are classes, columns are guidance scales, every column with the same noise."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid, save_image

from lightning_diffusion.components.denoiser import Denoiser
from lightning_diffusion.diffusion import SamplerSpec
from lightning_diffusion.sampling import sample

MIN_CELL_PIXELS = 32


def class_scale_samples(
    model: Denoiser,
    classes: Sequence[int],
    scales: Sequence[float],
    per_class: int = 1,
    sampler: SamplerSpec | str = "ddim",
    seed: int = 0,
    progress: bool = False,
) -> dict[float, Tensor]:
    """For each scale, ``per_class`` samples of every class (class-major), sharing noise across scales,
    drawn with ``sampler`` (a spec or a solver name)."""
    labels = torch.as_tensor(classes, dtype=torch.long).repeat_interleave(per_class)
    return {
        float(scale): sample(
            model, labels, guidance_scale=scale, sampler=sampler, seed=seed, progress=progress
        )
        for scale in scales
    }


def _grid(cells: Tensor, columns: int) -> Tensor:
    """Images (N, C, H, W) in [-1, 1] laid out ``columns`` per row, small ones enlarged (nearest) to at
    least ``MIN_CELL_PIXELS``, as one (C, H, W) image in [0, 1]."""
    factor = max(1, -(-MIN_CELL_PIXELS // cells.shape[-1]))
    cells = F.interpolate(cells, scale_factor=factor, mode="nearest")
    return make_grid((cells + 1) / 2, nrow=columns, padding=2, pad_value=1.0)


def row_grid(cells: Tensor) -> Tensor:
    """A (C, H, W) image in [0, 1] of images (rows, columns, C, H, W) in [-1, 1], row by row."""
    return _grid(cells.flatten(0, 1), cells.shape[1])


def grid_image(samples_by_scale: dict[float, Tensor], per_class: int = 1) -> Tensor:
    """A (C, H, W) image in [0, 1]: one row per class (its first sample), one column per scale."""
    return row_grid(torch.stack([images[::per_class] for images in samples_by_scale.values()], dim=1))


def save_grid(image: Tensor, path: str | Path) -> Path:
    """Write a grid image as PNG, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(image, path)
    return path


def sorted_grid(images: Tensor, labels: Tensor | None, columns: int = 8) -> Tensor:
    """A (C, H, W) image in [0, 1] of samples ordered by label (same-class samples side by side), or in
    their own order without labels."""
    return _grid(images if labels is None else images[labels.argsort(stable=True)], columns)
