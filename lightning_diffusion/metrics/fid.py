"""FID (Heusel et al. 2017, Sec. 4): the Fréchet distance between Gaussians fitted to real and generated
features, ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)). torchmetrics' float64 sum states (sums
of features and of their outer products, summed over ranks), fed precomputed features; the real states are
kept across rows. Resampled (bootstrap) values come from the gathered features of both sets, the same
distance batched over resamples (``metrics.frechet``)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance

from lightning_diffusion.metrics.features import identity_features
from lightning_diffusion.metrics.frechet import sample_frechet_distance
from lightning_diffusion.metrics.registry import Column, Gathered, Resamples, RowMetric, register_metric


@register_metric
class FID(RowMetric):
    """FID of the generated features against the real ones."""

    name = "fid"
    columns = (Column("fid", higher_is_better=False, label="FID (lower is better)"),)
    consumes = ("features",)
    reduction = "sum"
    min_samples = 2  # a covariance needs two samples

    def __init__(self, feature_dim: int) -> None:
        super().__init__(feature_dim)
        self.fid = FrechetInceptionDistance(feature=identity_features(feature_dim), reset_real_features=False)

    def update_real(self, features: Tensor) -> None:
        self.fid.update(features, real=True)

    def update(self, inputs: dict[str, Tensor]) -> None:
        self.fid.update(inputs["features"], real=False)

    def compute(self, gathered: Gathered) -> dict[str, float | None]:
        return {"fid": float(self.fid.compute())}

    def resampled(self, gathered: Gathered, draws: Resamples) -> dict[str, Tensor]:
        real, generated = gathered.real, gathered.generated
        per_resample = (len(real) + len(generated)) * real.shape[1]
        values = [
            sample_frechet_distance(real[part.real], generated[part.generated])
            for part in draws.chunks(per_resample)
        ]
        return {"fid": torch.cat(values)}
