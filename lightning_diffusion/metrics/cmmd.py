"""CMMD (Jayasumana et al. 2024, "Rethinking FID: Towards a Better Evaluation Metric for Image Generation",
Sec. 4): the squared maximum mean discrepancy between real and generated CLIP image embeddings under the
Gaussian kernel k(a, b) = exp(−‖a − b‖² / (2σ²)), σ = 10, times 1000 as the paper reports it. It is the
unbiased estimator (Gretton et al. 2012, JMLR, Lemma 6), as the paper states; the reference code
(google-research/cmmd, ``distance.mmd``) averages the whole kernel matrices, diagonals included (Gretton et
al.'s Eq. 5, biased by O(1/N)). Since k(a, a) = 1, dropping i = j subtracts m from the within-set sum:

    MMD²_u = (Σ_{i,j} k(x_i, x_j) − m) / (m (m−1)) + (Σ_{i,j} k(y_i, y_j) − n) / (n (n−1))
             − 2 Σ_{i,j} k(x_i, y_j) / (m n)

It is CMMD under ``--features clip`` (unit-norm CLIP ViT-L/14 embeddings, ``metrics.vit_features``); under
another feature space the column is the same estimator on those features. In float64, ``BLOCK_ROWS`` kernel
rows at a time, over the features gathered from every rank; resampled from the kernel matrices computed
once (``metrics.mmd.resampled_unbiased_mmd2``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_diffusion.metrics.mmd import resampled_unbiased_mmd2, unbiased_mmd2
from lightning_diffusion.metrics.registry import (
    BLOCK_ROWS,
    PAIRWISE_LIMIT,
    Column,
    Gathered,
    Resamples,
    RowMetric,
    memo,
    register_metric,
)

SIGMA = 10.0  # the kernel bandwidth of the paper
SCALE = 1000.0  # the paper reports MMD² x 1000


def gaussian_kernel_sum(a: Tensor, b: Tensor, sigma: float, block: int = BLOCK_ROWS) -> Tensor:
    """Σ_{i,j} exp(−‖a_i − b_j‖² / (2σ²)), ``block`` rows of ``a`` at a time."""
    return sum(gaussian_kernel(rows, b, sigma).sum() for rows in a.split(block))


def gaussian_kernel(a: Tensor, b: Tensor, sigma: float = SIGMA) -> Tensor:
    """The kernel matrix exp(−‖a_i − b_j‖² / (2σ²)) (len(a), len(b))."""
    return torch.cdist(a, b).square().div(-2 * sigma**2).exp()


def gaussian_mmd2(real: Tensor, generated: Tensor, sigma: float = SIGMA) -> float:
    """MMD²_u between ``real`` (m, d) and ``generated`` (n, d) under the Gaussian kernel; m, n >= 2."""
    return unbiased_mmd2(real, generated, lambda a, b: gaussian_kernel_sum(a, b, sigma), len)  # k(a, a) = 1


@register_metric
class CMMD(RowMetric):
    """CMMD (x 1000) of the gathered generated features against the real ones."""

    name = "cmmd"
    columns = (Column("cmmd", higher_is_better=False, label="CMMD x 1000 (lower is better)"),)
    consumes = ("features",)
    reduction = "cat"
    min_samples = 2  # the within-set sum needs pairs i != j

    def compute(self, gathered: Gathered) -> dict[str, float | None]:
        return {"cmmd": SCALE * gaussian_mmd2(gathered.real, gathered.generated)}

    def resampled(self, gathered: Gathered, draws: Resamples) -> dict[str, Tensor]:
        real, generated = gathered.real, gathered.generated
        if max(len(real), len(generated)) ** 2 > PAIRWISE_LIMIT:
            return {}
        x, y = real.double(), generated.double()
        within_real = memo(self, "kernel", (real,), lambda: gaussian_kernel(x, x))
        mmd2 = resampled_unbiased_mmd2(within_real, gaussian_kernel(y, y), gaussian_kernel(x, y), draws)
        return {"cmmd": SCALE * mmd2}
