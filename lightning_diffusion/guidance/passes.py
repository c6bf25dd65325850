"""Denoised estimates under several conditions in one batched forward pass, combined linearly.

Methods that mix k estimates (multi-condition CFG, composed captions, PAG with CFG) write D~ as
sum_j a_j D(z | c_j) and evaluate only the terms whose coefficient is not zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import torch
from torch import Tensor

from lightning_diffusion.guidance.base import Condition, DiffusionModel, concat_conditions


def denoise_each(model: DiffusionModel, z: Tensor, t: Tensor, conds: Sequence[Condition]) -> list[Tensor]:
    """D(z, t, c) for every condition in ``conds`` (same keys), from one forward over the stacked batch."""
    if len(conds) == 1:
        return [model.denoise(z, t, conds[0])]
    count = len(conds)
    stacked = reduce(concat_conditions, conds)
    return list(model.denoise(torch.cat([z] * count), torch.cat([t] * count), stacked).chunk(count))


def weighted_sum(estimates: Sequence[Tensor], coefficients: Sequence[float | Tensor]) -> Tensor:
    """sum_j a_j D_j; a coefficient is a number or a per-sample (B,) tensor broadcast over the image. A
    single estimate with coefficient 1 is returned as is (so a reference can be recognised as the result)."""
    if len(estimates) == 1 and isinstance(coefficients[0], float) and coefficients[0] == 1.0:
        return estimates[0]
    total = None
    for estimate, coefficient in zip(estimates, coefficients, strict=True):
        if isinstance(coefficient, Tensor):
            coefficient = coefficient.to(estimate).reshape(-1, *[1] * (estimate.ndim - 1))
        term = coefficient * estimate
        total = term if total is None else total + term
    return total
