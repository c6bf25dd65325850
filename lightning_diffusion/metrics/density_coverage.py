"""Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative
Models", Sec. 3): the fidelity and diversity of generated features Y_1..Y_M judged by balls around the
real features X_1..X_N, each ball B(X_i, NND_k(X_i)) reaching to the k-th nearest other real feature.

    density  = 1 / (k M) * sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]
    coverage = 1 / N     * sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))]

Density counts how many real balls hold each sample (about 1 when samples look like real data, more where
samples crowd dense regions); coverage is the fraction of real balls that hold at least one sample, so it
cannot exceed 1 by piling samples onto a few modes. Balls are closed (distance <= radius), as in
torch-fidelity's precision/recall. Distances are taken ``block`` real rows at a time, so memory stays at
block x M distances. In a sweep the real balls' radii are computed once per reference set (kept across
rows), so a row costs one N x M x D distance pass over the gathered features. Resampled (bootstrap) values
keep the real balls' radii and redraw which balls and which samples take part (density counts a ball as
often as its real feature is drawn).
"""

from __future__ import annotations

import torch
from torch import Tensor

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

DENSITY_NEIGHBOURHOOD = 5  # k of the paper's experiments


def real_ball_radii(real: Tensor, neighbourhood: int, block: int) -> Tensor:
    """NND_k(X_i) for every real feature: its distance to the k-th nearest other real feature (the
    (k+1)-th smallest distance in its row, the smallest being the distance to itself); needs more than
    k real features."""
    return torch.cat(
        [torch.cdist(rows, real).kthvalue(neighbourhood + 1, dim=1).values for rows in real.split(block)]
    )


def density_and_coverage(
    real: Tensor, generated: Tensor, radii: Tensor, neighbourhood: int, block: int
) -> tuple[float, float]:
    """Density and coverage of ``generated`` (M, D) against ``real`` (N, D) whose ball radii are ``radii``
    (from ``real_ball_radii`` with the same ``neighbourhood`` and ``block``)."""
    inside_count = torch.zeros((), dtype=torch.int64, device=real.device)
    covered = []
    for rows, row_radii in zip(real.split(block), radii.split(block), strict=True):
        inside = torch.cdist(rows, generated) <= row_radii[:, None]  # (block, M): Y_j in B(X_i, NND_k(X_i))
        inside_count += inside.sum()
        covered.append(inside.any(dim=1))
    density = inside_count.item() / (neighbourhood * len(generated))
    coverage = torch.cat(covered).float().mean().item()
    return density, coverage


@register_metric
class DensityCoverage(RowMetric):
    """Density and coverage of the gathered generated features; None with no more real features than k."""

    name = "density_coverage"
    columns = (
        Column("density", higher_is_better=True, label="density"),
        Column("coverage", higher_is_better=True, label="coverage"),
    )
    consumes = ("features",)
    reduction = "cat"

    def __init__(self, feature_dim: int) -> None:
        super().__init__(feature_dim)
        self.real_radii: Tensor | None  # NND_k of the real features, computed at the first row
        self.register_buffer("real_radii", None, persistent=False)  # a buffer: moves with .to(device)

    def update_real(self, features: Tensor) -> None:
        self.real_radii = None

    def compute(self, gathered: Gathered) -> dict[str, float | None]:
        if len(gathered.real) <= DENSITY_NEIGHBOURHOOD:  # a smoke test's handful of real images
            return {"density": None, "coverage": None}
        if self.real_radii is None:
            self.real_radii = real_ball_radii(gathered.real, DENSITY_NEIGHBOURHOOD, BLOCK_ROWS)
        density, coverage = density_and_coverage(
            gathered.real, gathered.generated, self.real_radii, DENSITY_NEIGHBOURHOOD, BLOCK_ROWS
        )
        return {"density": density, "coverage": coverage}

    def resampled(self, gathered: Gathered, draws: Resamples) -> dict[str, Tensor]:
        real, generated = gathered.real, gathered.generated
        if len(real) <= DENSITY_NEIGHBOURHOOD or len(real) * len(generated) > PAIRWISE_LIMIT:
            return {}
        radii = memo(self, "radii", (real,), lambda: real_ball_radii(real, DENSITY_NEIGHBOURHOOD, BLOCK_ROWS))
        inside = torch.cat(
            [
                (torch.cdist(rows, generated) <= row_radii[:, None]).float()
                for rows, row_radii in zip(real.split(BLOCK_ROWS), radii.split(BLOCK_ROWS), strict=True)
            ]
        )  # (N, M): generated j inside real i's ball
        generated_counts, real_counts = draws.generated_counts(), draws.real_counts()
        balls = (real_counts.float() @ inside).double()  # (B, M): drawn balls holding each generated sample
        covered = (generated_counts.float() @ inside.T) > 0  # (B, N): real balls holding a drawn sample
        return {
            "density": (balls * generated_counts).sum(dim=1) / (DENSITY_NEIGHBOURHOOD * len(generated)),
            "coverage": (real_counts * covered).sum(dim=1) / len(real),
        }
