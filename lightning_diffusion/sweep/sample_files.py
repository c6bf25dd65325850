"""Writing samples: guided-diffusion's npz batch format and scale tags for file names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from lightning_diffusion.atomic import atomic_write
from lightning_diffusion.sampling import to_uint8


def scale_tag(scale: float) -> str:
    """``s3``, ``s1.5``: how a guidance scale appears in file names."""
    return f"s{scale:g}"


def save_npz(path: str | Path, images: Tensor, labels: Tensor | None = None, **extra: np.ndarray) -> Path:
    """Save images in [-1, 1] as guided-diffusion's batch: ``arr_0`` uint8 (N, H, W, C), ``arr_1`` labels;
    atomically, so a killed run leaves the previous file or the new one, whole."""
    path = Path(path)
    arrays = {"arr_0": to_uint8(images).permute(0, 2, 3, 1).numpy()}
    if labels is not None:
        arrays["arr_1"] = labels.numpy()
    return atomic_write(path, lambda handle: np.savez(handle, **arrays, **extra))
