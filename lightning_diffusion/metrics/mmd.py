"""The unbiased MMD² estimator (Gretton et al. 2012, "A Kernel Two-Sample Test", JMLR, Lemma 6) and the row
metric built on it, shared by KID (cubic polynomial kernel) and CMMD (Gaussian kernel):

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m (m-1)) + Σ_{i≠j} k(y_i, y_j) / (n (n-1)) - 2 Σ_{i,j} k(x_i, y_j) / (m n)

Its expectation is the population MMD² at any sample size. It is taken once over all the features gathered
from every rank, in float64, ``BLOCK_ROWS`` kernel rows at a time. On a bootstrap resample that draws x_i
c_i times and y_j d_j times, the sums over pairs of distinct draws are cᵀ K_xx c - Σ c_i k(x_i, x_i),
dᵀ K_yy d - Σ d_j k(y_j, y_j) and cᵀ K_xy d, from the kernel matrices computed once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from torch import Tensor

from lightning_diffusion.metrics.registry import (
    BLOCK_ROWS,
    PAIRWISE_LIMIT,
    Gathered,
    Resamples,
    RowMetric,
    memo,
)

Kernel = Callable[[Tensor, Tensor], Tensor]  # (a (m, d), b (n, d)) -> the (m, n) matrix k(a_i, b_j)
Diagonal = Callable[[Tensor], Tensor]  # a (m, d) -> (m,) k(a_i, a_i), the pairs the within-set sums drop


def kernel_sum(kernel: Kernel, a: Tensor, b: Tensor, block: int = BLOCK_ROWS) -> Tensor:
    """Σ_{i,j} k(a_i, b_j), ``block`` rows of ``a`` at a time."""
    return sum(kernel(rows, b).sum() for rows in a.split(block))


def unbiased_mmd2(
    real: Tensor, generated: Tensor, kernel: Kernel, diagonal: Diagonal, block: int = BLOCK_ROWS
) -> float:
    """MMD²_u between ``real`` (m, d) and ``generated`` (n, d), in float64; m, n >= 2."""
    x, y = real.double(), generated.double()
    m, n = len(x), len(y)
    within_x = (kernel_sum(kernel, x, x, block) - diagonal(x).sum()) / (m * (m - 1))
    within_y = (kernel_sum(kernel, y, y, block) - diagonal(y).sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * kernel_sum(kernel, x, y, block) / (m * n))


def resampled_unbiased_mmd2(
    within_real: Tensor, within_generated: Tensor, across: Tensor, draws: Resamples
) -> Tensor:
    """MMD²_u of each resample in ``draws`` (B,), float64, from the kernel matrices K_xx (m, m), K_yy (n, n)
    and K_xy (m, n) of the whole sets: a sample drawn twice pairs with its copy, not with itself."""
    m, n = len(within_real), len(within_generated)
    c, d = draws.real_counts(), draws.generated_counts()
    pairs_x = ((c @ within_real) * c).sum(dim=1) - c @ within_real.diagonal()
    pairs_y = ((d @ within_generated) * d).sum(dim=1) - d @ within_generated.diagonal()
    pairs_xy = ((c @ across) * d).sum(dim=1)
    return pairs_x / (m * (m - 1)) + pairs_y / (n * (n - 1)) - 2 * pairs_xy / (m * n)


class KernelMMD(RowMetric):
    """A row metric that is ``scale`` x MMD²_u of the gathered generated features against the real ones
    under ``kernel``; a subclass sets ``name``, its one column, ``kernel``, ``diagonal`` and ``scale``."""

    consumes = ("features",)
    reduction = "cat"
    min_samples = 2  # the within-set sum needs pairs i != j
    scale: ClassVar[float] = 1.0
    kernel: ClassVar[Kernel]
    diagonal: ClassVar[Diagonal]

    def compute(self, gathered: Gathered) -> dict[str, float | None]:
        value = unbiased_mmd2(gathered.real, gathered.generated, self.kernel, self.diagonal)
        return {self.columns[0].name: self.scale * value}

    def resampled(self, gathered: Gathered, draws: Resamples) -> dict[str, Tensor]:
        real, generated = gathered.real, gathered.generated
        if max(len(real), len(generated)) ** 2 > PAIRWISE_LIMIT:
            return {}
        x, y = real.double(), generated.double()
        within_real = memo(self, "kernel", (real,), lambda: self.kernel(x, x))
        mmd2 = resampled_unbiased_mmd2(within_real, self.kernel(y, y), self.kernel(x, y), draws)
        return {self.columns[0].name: self.scale * mmd2}
