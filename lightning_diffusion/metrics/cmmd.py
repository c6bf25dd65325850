"""CMMD (Jayasumana et al. 2024, "Rethinking FID: Towards a Better Evaluation Metric for Image Generation",
Sec. 4): the squared maximum mean discrepancy between real and generated CLIP image embeddings under the
Gaussian kernel k(a, b) = exp(−‖a − b‖² / (2σ²)), σ = 10, times 1000 as the paper reports it. It is the
unbiased estimator (Gretton et al. 2012, JMLR, Lemma 6), as the paper states; the reference code
(google-research/cmmd, ``distance.mmd``) averages the whole kernel matrices, diagonals included (Gretton et
al.'s Eq. 5, biased by O(1/N)). Since k(a, a) = 1, dropping i = j subtracts m from the within-set sum:

    MMD²_u = (Σ_{i,j} k(x_i, x_j) − m) / (m (m−1)) + (Σ_{i,j} k(y_i, y_j) − n) / (n (n−1))
             − 2 Σ_{i,j} k(x_i, y_j) / (m n)

It is CMMD under ``--features clip`` (unit-norm CLIP ViT-L/14 embeddings, ``metrics.vit_features``); under
another feature space the column is the same estimator on those features (``metrics.mmd``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_diffusion.metrics.mmd import KernelMMD, unbiased_mmd2
from lightning_diffusion.metrics.registry import BLOCK_ROWS, Column, register_metric

SIGMA = 10.0  # the kernel bandwidth of the paper
SCALE = 1000.0  # the paper reports MMD² x 1000


def gaussian_kernel(a: Tensor, b: Tensor, sigma: float = SIGMA) -> Tensor:
    """The kernel matrix exp(−‖a_i − b_j‖² / (2σ²)) (len(a), len(b))."""
    return torch.cdist(a, b).square().div(-2 * sigma**2).exp()


def unit_diagonal(a: Tensor) -> Tensor:
    """k(a_i, a_i) = 1 for each row of ``a``."""
    return torch.ones(len(a), dtype=a.dtype, device=a.device)


def gaussian_mmd2(real: Tensor, generated: Tensor, sigma: float = SIGMA, block: int = BLOCK_ROWS) -> float:
    """MMD²_u between ``real`` (m, d) and ``generated`` (n, d) under the Gaussian kernel; m, n >= 2."""
    return unbiased_mmd2(real, generated, lambda a, b: gaussian_kernel(a, b, sigma), unit_diagonal, block)


@register_metric
class CMMD(KernelMMD):
    """CMMD (x 1000) of the gathered generated features against the real ones."""

    name = "cmmd"
    columns = (Column("cmmd", higher_is_better=False, label="CMMD x 1000 (lower is better)"),)
    scale = SCALE
    kernel = staticmethod(gaussian_kernel)
    diagonal = staticmethod(unit_diagonal)
