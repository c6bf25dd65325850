"""CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models",
Sec. 3, CFG++ with DDIM): guide the clean estimate, renoise with the unconditional noise.

  D_lambda = D_u + lambda (D_c - D_u),   lambda in [0, 1]
  z_s = alpha_s D_lambda + sigma_s eps(D_u),   eps(D) = (z - alpha_t D) / sigma_t
where CFG would put back eps(D_lambda). Against DDIM-CFG at weight w, whose step adds
w (alpha_s - sigma_s alpha_t / sigma_t) (D_c - D_u) to the unconditional step, CFG++ adds
lambda alpha_s (D_c - D_u): it is CFG with the time-varying w = lambda / (1 - l_s / l_t), l = sigma / alpha,
so its scale lives in [0, 1] instead.

Scale convention: the sweep's ``scale`` is lambda. lambda = 0 is the unconditional model; lambda = 1 is
CFG++'s full guidance (D = D_c renoised with eps(D_u)), not plain conditional sampling, which CFG++ has
no setting for. The method returns the renoise estimate with D (``Guided.renoise``), so it needs a sampler
that can renoise (ddim); the others refuse it.
"""

from __future__ import annotations

from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance.base import Condition, DiffusionModel, Guidance, Guided
from lightning_diffusion.guidance.classifier_free import conditional_and_unconditional, unconditional_estimate
from lightning_diffusion.guidance.registry import GuidanceMethod, register_method


class CFGPlusPlus(Guidance):
    """CFG++ at scale lambda in [0, 1]: lambda = 0 (unconditional) costs one pass, any other two."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    @property
    def scale(self) -> float:
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ConfigError(
                f"CFG++'s scale lambda must lie in [0, 1] (0: unconditional, 1: CFG++'s full guidance), got "
                f"{value}; its lambda replaces CFG's larger scales."
            )
        self._scale = float(value)

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        if self.scale == 0.0:
            unconditional = unconditional_estimate(model, z, t, cond)
            return Guided(unconditional, None, unconditional)
        conditional, unconditional = conditional_and_unconditional(model, z, t, cond)
        return Guided(unconditional.lerp(conditional, self.scale), conditional, unconditional)


register_method(GuidanceMethod("cfgpp", build=lambda inputs: CFGPlusPlus(inputs.scale), renoises=True))
