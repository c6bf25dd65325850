"""KID, the Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs"): the squared
maximum mean discrepancy between real features x_1..x_m and generated features y_1..y_n under the cubic
polynomial kernel k(a, b) = (aᵀb / d + 1)³, estimated without bias (Gretton et al. 2012, "A Kernel
Two-Sample Test", JMLR, Lemma 6):

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m (m-1)) + Σ_{i≠j} k(y_i, y_j) / (n (n-1)) - 2 Σ_{i,j} k(x_i, y_j) / (m n)

Its expectation is the population MMD² at any sample size (0 when the two distributions are equal), where
FID is biased upwards at small N. torchmetrics and torch-fidelity average this estimator over random
equal-size subsets; here it is taken once over all the features gathered from every rank (no subset
randomness), with torchmetrics' ``poly_kernel``, in float64, ``BLOCK_ROWS`` kernel rows at a time.
Resampled from the kernel matrices computed once (``metrics.mmd.resampled_unbiased_mmd2``).
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics.image.kid import poly_kernel

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


def kernel_sum(a: Tensor, b: Tensor, block: int) -> Tensor:
    """Σ_{i,j} k(a_i, b_j), ``block`` rows of ``a`` at a time."""
    return sum(poly_kernel(rows, b).sum() for rows in a.split(block))


def kernel_inception_distance(real: Tensor, generated: Tensor, block: int = BLOCK_ROWS) -> float:
    """MMD²_u between ``real`` (m, d) and ``generated`` (n, d) under k(a, b) = (aᵀb / d + 1)³; m, n >= 2."""
    return unbiased_mmd2(
        real,
        generated,
        lambda a, b: kernel_sum(a, b, block),
        lambda a: ((a * a).sum(dim=1) / a.shape[1] + 1).pow(3).sum(),  # k(a_i, a_i)
    )


@register_metric
class KID(RowMetric):
    """KID of the gathered generated features against the real ones."""

    name = "kid"
    columns = (Column("kid", higher_is_better=False, label="KID (lower is better)"),)
    consumes = ("features",)
    reduction = "cat"
    min_samples = 2  # the within-set sum needs pairs i != j

    def compute(self, gathered: Gathered) -> dict[str, float | None]:
        return {"kid": kernel_inception_distance(gathered.real, gathered.generated)}

    def resampled(self, gathered: Gathered, draws: Resamples) -> dict[str, Tensor]:
        real, generated = gathered.real, gathered.generated
        m, n = len(real), len(generated)
        if max(m, n) ** 2 > PAIRWISE_LIMIT:
            return {}
        x, y = real.double(), generated.double()
        within_real = memo(self, "kernel", (real,), lambda: poly_kernel(x, x))
        return {"kid": resampled_unbiased_mmd2(within_real, poly_kernel(y, y), poly_kernel(x, y), draws)}
