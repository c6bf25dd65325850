"""FID (Heusel et al. 2017, Sec. 4): the Fréchet distance between Gaussians fitted to real and generated
features, ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)). torchmetrics' float64 sum states (sums
of features and of their outer products, summed over ranks), fed precomputed features; the real states are
kept across rows.

Resampled (bootstrap) values come from the gathered features of both sets. With fewer generated samples M
than real ones and than dimensions (a sweep's usual small-N case) the eigenvalues of S_r S_g are those of
the M x M matrix Y_c S_r Y_cᵀ / (M - 1), Y_c the resample's centred generated features, and with P = X Yᵀ
computed once that matrix is Qᵀ diag(c) Q - (Qᵀc)(Qᵀc)ᵀ / N over (N - 1)(M - 1), Q = P[:, draws] minus its
draw mean and c the real draw counts: one M x M eigenvalue problem per resample instead of a d x d square
root and an SVD (four times faster at M = 200, N = 1000, d = 256). Otherwise the same distance is batched
over resamples (``metrics.frechet``)."""

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
        if len(generated) < min(len(real), real.shape[1]):
            return {"fid": resampled_frechet_gram(real, generated, draws)}
        per_resample = (len(real) + len(generated)) * real.shape[1]
        values = [
            sample_frechet_distance(real[part.real], generated[part.generated])
            for part in draws.chunks(per_resample)
        ]
        return {"fid": torch.cat(values)}


def resampled_frechet_gram(real: Tensor, generated: Tensor, draws: Resamples) -> Tensor:
    """The Fréchet distance of each resample through the M x M matrix of the module docstring, float64."""
    x, y = real.double(), generated.double()
    n, m = len(x), len(y)
    products = x @ y.T  # (N, M): every real feature against every generated one
    square_x, square_y = (x * x).sum(dim=1), (y * y).sum(dim=1)
    values = []
    for part in draws.chunks(n * m):
        c, d = part.real_counts(), part.generated_counts()  # (b, N), (b, M)
        mean_x, mean_y = c @ x / n, d @ y / m
        trace_x = (c @ square_x - n * mean_x.square().sum(dim=1)) / (n - 1)
        trace_y = (d @ square_y - m * mean_y.square().sum(dim=1)) / (m - 1)
        q = products.T[part.generated].mT - (d @ products.T / m)[:, :, None]  # (b, N, M): X Y_cᵀ
        counted = q * c[:, :, None]
        drawn = counted.sum(dim=1)  # (b, M): Y_c Xᵀ c, N times Y_c mu_r
        weighted = q.mT @ counted - drawn[:, :, None] * drawn[:, None, :] / n  # (N - 1) Y_c S_r Y_cᵀ
        cross = torch.linalg.eigvalsh(weighted / ((n - 1) * (m - 1))).clamp(min=0).sqrt().sum(dim=1)
        values.append((mean_x - mean_y).square().sum(dim=1) + trace_x + trace_y - 2 * cross)
    return torch.cat(values)
