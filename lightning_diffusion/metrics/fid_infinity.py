"""FID∞ (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and where to find them",
Sec. 3): FID computed from N samples is biased upwards, and to first order the bias is linear in 1/N,
E[FID_N] = FID∞ + k / N. Their estimate computes FID_N at ``POINTS`` subset sizes N_i evenly spaced up to
the whole set (their code: 15 sizes from 5,000 to 50,000), fits a least-squares line in 1/N_i and reports
its intercept at 1/N = 0.

The line holds where the subsets are large against the feature dimension d (the paper's smallest, 5,000,
exceeds Inception's 2,048); much smaller subsets bend it upwards. Measured on Gaussians at N = 200
(tests/test_fid_infinity.py's setting), subsets from a tenth of the set left 14 % of plain FID's bias at
d = 32 and 53 % at d = 64, from ``MIN_FRACTION`` = 0.3 under 1 % and 1 %: the sizes span 0.3 N to N.

The paper keeps the real statistics fixed (50,000 images, whose own bias is negligible); a sweep's real set
is often as small as its generated one (``num_real`` defaults to ``num_samples``), so here both sets are
subsampled by the same fraction f. Each set's bias is proportional to one over its size, so the sum is
linear in 1/f and the intercept removes both. The subsets come from a fixed seed over the samples in a
canonical order (sorted along a fixed direction), so a row's value does not depend on how many processes
gathered its features or in which order; each size averages ``DRAWS`` random subsets to lower the variance
of the extrapolation. The distances are batched (``metrics.frechet``), as many subsets at a time as
``BLOCK_ELEMENTS`` feature values allow.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_diffusion.metrics.frechet import sample_frechet_distance
from lightning_diffusion.metrics.registry import Column, Gathered, RowMetric, register_metric

POINTS = 15  # subset sizes on the line (Chong & Forsyth's default)
MIN_FRACTION = 0.3  # the smallest subset, as a fraction of the set (see above)
DRAWS = 4  # random subsets averaged at each size
SEED = 0  # the subsets' generator seed: a row's value is reproducible
BLOCK_ELEMENTS = 1 << 24  # feature values of the subsets held at once (128 MiB in float64)


def canonical_order(features: Tensor) -> Tensor:
    """The rows of ``features`` sorted by their projection on a fixed direction: the same set in any order
    (as gathered from any number of ranks) comes out the same."""
    direction = torch.linspace(1, 2, features.shape[1], dtype=torch.float64, device=features.device)
    return features[torch.argsort(features.double() @ direction, stable=True)]


def subset_indices(count: int, size: int, draws: int, generator: torch.Generator) -> Tensor:
    """``draws`` random subsets of ``size`` of ``count`` indices (without replacement): (draws, size)."""
    return torch.rand(draws, count, generator=generator).argsort(dim=1)[:, :size]


def mean_subset_fid(real: Tensor, generated: Tensor, real_rows: Tensor, generated_rows: Tensor) -> Tensor:
    """The mean FID over the subsets whose indices are the rows of ``real_rows`` and ``generated_rows``,
    batched a block at a time."""
    per_block = max(1, BLOCK_ELEMENTS // ((real_rows.shape[1] + generated_rows.shape[1]) * real.shape[1]))
    total = torch.zeros((), dtype=torch.float64, device=real.device)
    for first in range(0, len(real_rows), per_block):
        block = slice(first, first + per_block)
        pairs = real[real_rows[block].to(real.device)], generated[generated_rows[block].to(real.device)]
        total += sample_frechet_distance(*pairs).sum()
    return total / len(real_rows)


def fid_at_fractions(real: Tensor, generated: Tensor, fractions: Tensor, draws: int) -> tuple[Tensor, Tensor]:
    """(1 / N_i, the mean FID of ``draws`` subsets) at each fraction f_i of both sets, where N_i is the
    generated subset's size."""
    generator = torch.Generator().manual_seed(SEED)
    real, generated = canonical_order(real), canonical_order(generated)
    sizes, values = [], []
    for fraction in fractions.tolist():
        n_real, n_generated = max(2, round(fraction * len(real))), max(2, round(fraction * len(generated)))
        real_indices = subset_indices(len(real), n_real, draws, generator)
        generated_indices = subset_indices(len(generated), n_generated, draws, generator)
        values.append(mean_subset_fid(real, generated, real_indices, generated_indices))
        sizes.append(n_generated)
    return 1 / torch.tensor(sizes, dtype=torch.float64), torch.stack(values).cpu()


def fid_infinity(
    real: Tensor, generated: Tensor, points: int = POINTS, fraction: float = MIN_FRACTION, draws: int = DRAWS
) -> float:
    """The intercept at 1/N = 0 of the least-squares line through FID_N at ``points`` subset sizes from
    ``fraction`` of the sets to all of them."""
    inverse_sizes, fids = fid_at_fractions(real, generated, torch.linspace(fraction, 1, points), draws)
    design = torch.stack([torch.ones_like(inverse_sizes), inverse_sizes], dim=1)
    intercept, _ = torch.linalg.lstsq(design, fids.unsqueeze(1)).solution.squeeze(1)
    return float(intercept)


@register_metric
class FIDInfinity(RowMetric):
    """FID∞ of the gathered generated features against the real ones."""

    name = "fid_inf"
    columns = (Column("fid_inf", higher_is_better=False, label="FID∞ (lower is better)"),)
    consumes = ("features",)
    reduction = "cat"
    min_samples = 7  # the smallest subset (0.3 N) needs two samples for a covariance

    def compute(self, gathered: Gathered) -> dict[str, float | None]:
        if len(gathered.real) < self.min_samples:
            return {"fid_inf": None}  # the smallest real subset would hold fewer than two samples
        return {"fid_inf": fid_infinity(gathered.real, gathered.generated)}
