"""Metrics of an upsampler against the real images its low-res inputs were made from.

- PSNR = 10 log10(1 / MSE) in dB with images mapped from [-1, 1] to [0, 1], computed per image and
  averaged (torchmetrics ``PeakSignalNoiseRatio`` with per-image ``dim``; its states are gathered
  across DDP ranks). PSNR favours blurry outputs (Saharia et al. 2021, SR3), so read it together with
  the consistency error.
- Consistency: how well the output explains its input, the distance between the downsampled output
  and the low-res input (SR3 reports its MSE; here the RMSE per image in [0, 1] units, averaged),
  downsampled with the upsampler's own filter.

Tensors in; ``pipeline.upsampling`` samples the upsampler and feeds them.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio

from lightning_diffusion.resampling import downsample_images


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
