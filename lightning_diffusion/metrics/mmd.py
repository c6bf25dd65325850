"""The unbiased MMD² estimator (Gretton et al. 2012, "A Kernel Two-Sample Test", JMLR, Lemma 6), shared by
KID (cubic polynomial kernel) and CMMD (Gaussian kernel):

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m (m-1)) + Σ_{i≠j} k(y_i, y_j) / (n (n-1)) - 2 Σ_{i,j} k(x_i, y_j) / (m n)

On a bootstrap resample that draws x_i c_i times and y_j d_j times, the sums over pairs of distinct draws
are cᵀ K_xx c - Σ c_i k(x_i, x_i), dᵀ K_yy d - Σ d_j k(y_j, y_j) and cᵀ K_xy d, from the kernel matrices
computed once (``resampled_unbiased_mmd2``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from lightning_diffusion.metrics.registry import Resamples

KernelSum = Callable[[Tensor, Tensor], Tensor]  # (a, b) -> Σ_{i,j} k(a_i, b_j)
SelfSum = Callable[[Tensor], Tensor]  # a -> Σ_i k(a_i, a_i), the diagonal the within-set sums drop


def unbiased_mmd2(real: Tensor, generated: Tensor, kernel_sum: KernelSum, self_sum: SelfSum) -> float:
    """MMD²_u between ``real`` (m, d) and ``generated`` (n, d), in float64; m, n >= 2."""
    x, y = real.double(), generated.double()
    m, n = len(x), len(y)
    within_x = (kernel_sum(x, x) - self_sum(x)) / (m * (m - 1))
    within_y = (kernel_sum(y, y) - self_sum(y)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kernel_sum(x, y) / (m * n))


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
