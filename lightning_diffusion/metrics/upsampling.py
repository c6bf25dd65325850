"""Metrics of an upsampler against the real images its low-res inputs were made from.

- PSNR = 10 log10(1 / MSE) in dB with images mapped from [-1, 1] to [0, 1], computed per image and
  averaged (torchmetrics ``PeakSignalNoiseRatio`` with per-image ``dim``; its states are gathered
  across DDP ranks). PSNR favours blurry outputs (Saharia et al. 2021, SR3), so read it together with
  the consistency error.
- Consistency: how well the output explains its input, the distance between the downsampled output
  and the low-res input (SR3 reports its MSE; here the RMSE per image in [0, 1] units, averaged),
  downsampled with the upsampler's own filter.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio

from lightning_diffusion.components.upsampler import Upsampler
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec, sample_generators
from lightning_diffusion.guidance import ClassifierFree
from lightning_diffusion.resampling import downsample_images, upsample_images
from lightning_diffusion.sampling import generate


def _unit(images: Tensor) -> Tensor:
    """[-1, 1] images mapped to [0, 1], in float32."""
    return (images.float().clamp(-1, 1) + 1) / 2


class UpsamplingMetrics(nn.Module):
    """Mean per-image PSNR (dB) and consistency error of upsampled images; DDP-reduced."""

    def __init__(self, low_res_size: int, downsample: str = "area") -> None:
        super().__init__()
        self.low_res_size, self.downsample = low_res_size, downsample
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.consistency = MeanMetric()

    def update(self, output: Tensor, target: Tensor, low_res: Tensor) -> None:
        """Add upsampled ``output`` and real ``target`` (B, C, H, W) and the clean ``low_res`` input,
        all in [-1, 1]."""
        self.psnr.update(_unit(output), _unit(target))
        shrunk = downsample_images(_unit(output), self.low_res_size, self.downsample)
        self.consistency.update((shrunk - _unit(low_res)).square().flatten(1).mean(dim=1).sqrt())

    def compute(self) -> dict[str, float]:
        """``{"psnr", "consistency"}`` over everything added (a collective under DDP)."""
        return {"psnr": float(self.psnr.compute()), "consistency": float(self.consistency.compute())}


@torch.no_grad()
def evaluate_upsampler(
    upsampler: Upsampler,
    images: Tensor,
    batch_size: int = 64,
    sampler: SamplerSpec | str = "ddim",
    seed: int = 0,
    aug_level: float = 0.0,
    labels: Tensor | None = None,
) -> dict[str, float]:
    """Downsample real ``images`` (N, C, H, W) in [-1, 1] with the upsampler's filter, upsample them
    again with the upsampler (its low-res input noised at ``aug_level``; ``labels`` for a class-
    conditional one, else ∅) and with bilinear interpolation, and score both against the originals.

    Returns ``psnr``, ``consistency``, ``bilinear_psnr`` and ``bilinear_consistency``; sample i draws
    its noise from a generator seeded by (seed, i)."""
    if tuple(images.shape[1:]) != tuple(upsampler.image_shape):
        raise ConfigError(
            f"the upsampler makes images of shape {tuple(upsampler.image_shape)} but the real images have "
            f"shape {tuple(images.shape[1:])}; evaluate it on the data it was trained on."
        )
    if labels is not None and len(labels) != len(images):
        raise ConfigError(f"got {len(labels)} labels for {len(images)} images; give one label per image.")
    device = next(upsampler.parameters()).device
    metrics = {
        name: UpsamplingMetrics(upsampler.low_res_size, upsampler.downsample).to(device)
        for name in ("upsampler", "bilinear")
    }
    guidance = ClassifierFree(1.0)
    for start in range(0, len(images), batch_size):
        target = images[start : start + batch_size].to(device)
        low_res = upsampler.low_res_of(target)
        generators = sample_generators(seed, range(start, start + len(target)), device)
        cond = upsampler.low_res_condition(low_res, aug_level, generators)
        if labels is not None:
            cond["label"] = labels[start : start + batch_size].to(device)
        output = generate(upsampler, guidance, generators, cond, sampler)
        metrics["upsampler"].update(output, target, low_res)
        metrics["bilinear"].update(upsample_images(low_res, target.shape[-2:]), target, low_res)
    values = metrics["upsampler"].compute()
    values.update({f"bilinear_{name}": value for name, value in metrics["bilinear"].compute().items()})
    return values
