"""Per-sample random streams: sample i of seed set k draws everything from a generator seeded by
(seed, i, k).

This is what makes samples independent of batch size and of the number of processes (as EDM2's
per-seed generators do): the same (seed, i, k) gives the same noise wherever sample i is computed.
Seed set 0 is the stream of (seed, i) alone, so a sweep with one seed set draws exactly the noise it drew
before seed sets existed; sets k >= 1 are other, disjoint streams (EDM and EDM2 report FID over three
such sets).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError


def _whole(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{what} must be a whole number, 0 or more, got {value!r}.")


def sample_seed(seed: int, index: int, seed_set: int = 0) -> int:
    """A well-mixed 63-bit seed for sample ``index`` of run ``seed`` in seed set ``seed_set`` (all whole
    numbers, 0 or more); set 0 hashes (seed, index) alone, set k >= 1 hashes (seed, index, k)."""
    _whole(seed, "a seed")
    _whole(seed_set, "a seed set")
    entropy = [seed, index] if seed_set == 0 else [seed, index, int(seed_set)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_generators(
    seed: int, indices: Sequence[int], device: torch.device | str = "cpu", seed_set: int = 0
) -> list[torch.Generator]:
    """One generator per sample index, seeded by ``sample_seed(seed, index, seed_set)``."""
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, int(i), seed_set)) for i in indices]


def randn(
    generators: Sequence[torch.Generator], shape: Sequence[int], dtype: torch.dtype = torch.float32
) -> Tensor:
    """Standard normal noise of shape (len(generators), *shape), row i drawn from generator i."""
    return torch.stack(
        [torch.randn(tuple(shape), generator=g, device=g.device, dtype=dtype) for g in generators]
    )
