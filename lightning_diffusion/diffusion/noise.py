"""Per-sample random streams: sample i draws everything from a generator seeded by (seed, i).

This is what makes samples independent of batch size and of the number of processes (as EDM2's
per-seed generators do): the same (seed, i) gives the same noise wherever sample i is computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError


def sample_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for sample ``index`` of run ``seed`` (both whole numbers, 0 or more)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"a seed must be a whole number, 0 or more, got {seed!r}.")
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_generators(
    seed: int, indices: Sequence[int], device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One generator per sample index, seeded by ``sample_seed(seed, index)``."""
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, int(i))) for i in indices]


def randn(
    generators: Sequence[torch.Generator], shape: Sequence[int], dtype: torch.dtype = torch.float32
) -> Tensor:
    """Standard normal noise of shape (len(generators), *shape), row i drawn from generator i."""
    return torch.stack(
        [torch.randn(tuple(shape), generator=g, device=g.device, dtype=dtype) for g in generators]
    )
