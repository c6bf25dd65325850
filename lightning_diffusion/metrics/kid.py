"""KID, the Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs"): the squared
maximum mean discrepancy between real and generated features under the cubic polynomial kernel
k(a, b) = (aᵀb / d + 1)³ (torchmetrics' ``poly_kernel``), estimated without bias (``metrics.mmd``), where
FID is biased upwards at small N. torchmetrics and torch-fidelity average the estimator over random
equal-size subsets; here it is taken once over all the gathered features (no subset randomness).
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics.image.kid import poly_kernel

from lightning_diffusion.metrics.mmd import KernelMMD, unbiased_mmd2
from lightning_diffusion.metrics.registry import BLOCK_ROWS, Column, register_metric


def cubic_diagonal(a: Tensor) -> Tensor:
    """k(a_i, a_i) = (‖a_i‖² / d + 1)³ for each row of ``a`` (m, d)."""
    return ((a * a).sum(dim=1) / a.shape[1] + 1).pow(3)


def kernel_inception_distance(real: Tensor, generated: Tensor, block: int = BLOCK_ROWS) -> float:
    """MMD²_u between ``real`` (m, d) and ``generated`` (n, d) under k(a, b) = (aᵀb / d + 1)³; m, n >= 2."""
    return unbiased_mmd2(real, generated, poly_kernel, cubic_diagonal, block)


@register_metric
class KID(KernelMMD):
    """KID of the gathered generated features against the real ones."""

    name = "kid"
    columns = (Column("kid", higher_is_better=False, label="KID (lower is better)"),)
    kernel = staticmethod(poly_kernel)
    diagonal = staticmethod(cubic_diagonal)
