"""The unbiased MMD² estimator (Gretton et al. 2012, "A Kernel Two-Sample Test", JMLR, Lemma 6), shared by
KID (cubic polynomial kernel) and CMMD (Gaussian kernel):

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m (m-1)) + Σ_{i≠j} k(y_i, y_j) / (n (n-1)) - 2 Σ_{i,j} k(x_i, y_j) / (m n)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

KernelSum = Callable[[Tensor, Tensor], Tensor]  # (a, b) -> Σ_{i,j} k(a_i, b_j)
SelfSum = Callable[[Tensor], Tensor]  # a -> Σ_i k(a_i, a_i), the diagonal the within-set sums drop


def unbiased_mmd2(real: Tensor, generated: Tensor, kernel_sum: KernelSum, self_sum: SelfSum) -> float:
    """MMD²_u between ``real`` (m, d) and ``generated`` (n, d), in float64; m, n >= 2."""
    x, y = real.double(), generated.double()
    m, n = len(x), len(y)
    within_x = (kernel_sum(x, x) - self_sum(x)) / (m * (m - 1))
    within_y = (kernel_sum(y, y) - self_sum(y)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kernel_sum(x, y) / (m * n))
