"""Adaptive projected guidance (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High Guidance
Scales in Diffusion Models", Sec. 3, Algorithm 1), on the denoised estimate D as the paper applies it.

CFG written as an update of the conditional estimate, D~ = D_c + (s - 1) dD with dD = D_c - D_u, becomes:
  reverse momentum:  dD <- dD + beta dD_prev            (dD_prev: this run's previous momentum-averaged
                                                         update; beta < 0 pushes away from it)
  rescaling:         dD <- dD min(1, r / ||dD||)        (per sample, the norm over all pixels)
  projection:        dD_par = (<dD, D_c> / <D_c, D_c>) D_c,   dD_orth = dD - dD_par   (per sample)
  D~ = D_c + (s - 1) (dD_orth + eta dD_par).
The parallel part mostly oversaturates and the orthogonal part sharpens, so eta < 1 keeps the quality gain
at high scales. eta = 1, r = inf, beta = 0 is exactly CFG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion.parameterization import broadcast_to
from lightning_diffusion.guidance.base import Condition, DiffusionModel, Guidance, Guided, per_sample_dot
from lightning_diffusion.guidance.classifier_free import conditional_and_unconditional
from lightning_diffusion.guidance.registry import GuidanceMethod, register_method, with_options


@dataclass(frozen=True)
class APGOptions:
    """APG's settings: ``eta`` weighs the parallel part (the paper recommends 0), ``norm_threshold`` is r
    (inf: no rescaling; the paper tunes it per model, as it grows with the image's dimension) and
    ``momentum`` is beta (the paper's reverse momentum is negative; 0: none)."""

    eta: float = 0.0
    norm_threshold: float = math.inf
    momentum: float = -0.5

    def __post_init__(self) -> None:
        if not math.isfinite(self.eta):
            raise ConfigError(f"APG's eta must be finite (0 drops the parallel part), got {self.eta}.")
        if not self.norm_threshold > 0:
            raise ConfigError(
                f"APG's norm_threshold r must be positive (inf: no rescaling), got {self.norm_threshold}."
            )
        if not -1.0 < self.momentum < 1.0:
            raise ConfigError(
                f"APG's momentum beta must lie in (-1, 1) (0: none; the paper's reverse momentum is "
                f"negative), got {self.momentum}."
            )


def project(update: Tensor, direction: Tensor) -> tuple[Tensor, Tensor]:
    """(parallel, orthogonal) parts of ``update`` with respect to ``direction``, per sample over all pixels;
    a zero direction has no parallel part."""
    coefficient = per_sample_dot(update, direction) / per_sample_dot(direction, direction).clamp_min(1e-30)
    parallel = broadcast_to(coefficient.to(update.dtype), update) * direction
    return parallel, update - parallel


class AdaptiveProjectedGuidance(Guidance):
    """APG at scale s: s = 1 is the conditional model (one pass); s > 1 guides with the projected,
    rescaled and momentum-averaged CFG update. s = 0 is the unconditional model only where APG is CFG
    (eta = 1, r = inf, beta = 0). The momentum state belongs to one sampling run (``reset``)."""

    def __init__(
        self,
        scale: float,
        *,
        eta: float = APGOptions.eta,
        norm_threshold: float = APGOptions.norm_threshold,
        momentum: float = APGOptions.momentum,
    ) -> None:
        self.scale = float(scale)
        self.options = APGOptions(float(eta), float(norm_threshold), float(momentum))
        self._average: Tensor | None = None

    def reset(self) -> None:
        self._average = None

    def _momentum(self, update: Tensor) -> Tensor:
        """dD + beta dD_prev, remembered for the next step."""
        if self._average is not None and self.options.momentum != 0.0:
            if self._average.shape != update.shape:
                raise ConfigError(
                    f"APG's momentum keeps one update per sample, so every step of a run must guide the "
                    f"same batch: got {tuple(update.shape)} after {tuple(self._average.shape)}."
                )
            update = update + self.options.momentum * self._average
        self._average = update
        return update

    def _rescale(self, update: Tensor) -> Tensor:
        """dD min(1, r / ||dD||) per sample."""
        if math.isinf(self.options.norm_threshold):
            return update
        norm = per_sample_dot(update, update).sqrt()
        factor = (self.options.norm_threshold / norm.clamp_min(1e-30)).clamp_max(1.0)
        return update * broadcast_to(factor.to(update.dtype), update)

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        if self.scale == 1.0:
            conditional = model.denoise(z, t, cond)
            return Guided(conditional, conditional)
        conditional, unconditional = conditional_and_unconditional(model, z, t, cond)
        update = self._rescale(self._momentum(conditional - unconditional))
        parallel, orthogonal = project(update, conditional)
        guided = conditional + (self.scale - 1.0) * (orthogonal + self.options.eta * parallel)
        return Guided(guided, conditional)


register_method(GuidanceMethod("apg", build=with_options(AdaptiveProjectedGuidance), options=APGOptions))
