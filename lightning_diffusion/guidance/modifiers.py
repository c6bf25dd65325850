"""Modifiers: wrappers that change where or how any guidance method (the ``inner`` one) acts.

Each returns a ``Guided`` whose reference (the unguided conditional D) and renoise estimate pass through
from the inner method, so modifiers compose in any order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion.parameterization import broadcast_to
from lightning_diffusion.guidance.base import Condition, DiffusionModel, Guidance, Guided


class Modifier(Guidance):
    """A guidance method wrapped around ``inner``; per-run state resets pass through to it."""

    def __init__(self, inner: Guidance) -> None:
        self.inner = inner

    @property
    def scale(self) -> float:
        """The wrapped method's scale (what a schedule sets)."""
        return self.inner.scale

    @scale.setter
    def scale(self, value: float) -> None:
        self.inner.scale = value

    def unguided(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        return self.inner.unguided(model, z, t, cond)

    def scale_free(self, model: DiffusionModel, t: Tensor) -> bool:
        return self.inner.scale_free(model, t)

    def reset(self) -> None:
        self.inner.reset()

    def check_model(self, model: DiffusionModel) -> None:
        self.inner.check_model(model)


def select_condition(cond: Condition, mask: Tensor) -> dict:
    """The samples of a condition dict where ``mask`` is true (tensors by mask, lists by index)."""
    indices = mask.nonzero().flatten().tolist()
    return {
        key: value[mask] if isinstance(value, Tensor) else [value[i] for i in indices]
        for key, value in cond.items()
    }


def merge(mask: Tensor, where_true: Tensor, where_false: Tensor) -> Tensor:
    """Reassemble a batch from the values of the samples where ``mask`` is true and where it is false."""
    merged = where_false.new_empty((mask.shape[0], *where_false.shape[1:]))
    merged[mask] = where_true.to(merged.dtype)
    merged[~mask] = where_false
    return merged


class GuidanceInterval(Modifier):
    """Guidance only for EDM noise levels sigma_t / alpha_t in (sigma_min, sigma_max] (Kynkäänniemi et al.
    2024, "Applying guidance in a limited interval improves sample and distribution quality").

    Outside the interval: the inner method's ``unguided`` estimate, one pass (the plain conditional
    D(z | x) for CFG, the unconditional base for CLIP guidance). A batch on one side of the interval
    costs exactly one call of its kind (for CFG: 2B rows inside, B outside, two static shapes); a batch
    straddling it is split per sample.

    Choosing the branch needs the noise level on the host. A sampler that keeps its time grid on the
    host and passes ``t`` there costs nothing; the inner method then gets ``t`` on the device of ``z``
    (an asynchronous copy). A ``t`` on an accelerator is read back once per step (a synchronisation)."""

    def __init__(self, inner: Guidance, sigma_min: float, sigma_max: float) -> None:
        if not 0.0 <= sigma_min < sigma_max:
            raise ConfigError(
                f"the guidance interval needs 0 <= sigma_min < sigma_max, got ({sigma_min}, {sigma_max}]."
            )
        super().__init__(inner)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def inside(self, model: DiffusionModel, t: Tensor) -> Tensor:
        """Per sample: does the noise level sigma_t / alpha_t lie in (sigma_min, sigma_max]?"""
        alpha, sigma = model.schedule.alpha_sigma(t)
        level = sigma / alpha
        return (level > self.sigma_min) & (level <= self.sigma_max)

    def scale_free(self, model: DiffusionModel, t: Tensor) -> bool:
        """Outside the interval every scale gives the inner method's unguided estimate."""
        return not bool(self.inside(model, t).any()) or self.inner.scale_free(model, t)

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        inside = self.inside(model, t).expand(z.shape[0])
        t = t.to(z.device, non_blocking=True)
        all_inside, any_inside = torch.stack([inside.all(), inside.any()]).tolist()
        if all_inside:
            return self.inner.guide(model, z, t, cond)
        if not any_inside:
            return self.inner.unguided(model, z, t, cond)
        inside = inside.to(z.device, non_blocking=True)
        guided = self.inner.guide(model, z[inside], t[inside], select_condition(cond, inside))
        plain = self.inner.unguided(model, z[~inside], t[~inside], select_condition(cond, ~inside))
        references = (guided.reference, plain.reference)
        reference = None if any(r is None for r in references) else merge(inside, *references)
        renoise = None
        if guided.renoise is not None or plain.renoise is not None:
            renoise = merge(inside, guided.renoise_estimate, plain.renoise_estimate)
        return Guided(merge(inside, guided.denoised, plain.denoised), reference, renoise)


class CFGRescale(Modifier):
    """Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    Sec. 3.4, Algorithm 2), applied to D (the x0 estimate), as the paper does for its v-prediction models.

    D_rescaled = D~ std(D_ref) / std(D~) per sample; D = phi D_rescaled + (1 - phi) D~. Counters the
    over-exposure of large scales; passes through where there is no reference (s = 0) or D~ is it (s = 1)."""

    def __init__(self, inner: Guidance, phi: float = 0.7) -> None:
        if not 0.0 <= phi <= 1.0:
            raise ConfigError(f"the CFG rescale factor phi must lie in [0, 1], got {phi}.")
        super().__init__(inner)
        self.phi = float(phi)

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        guided = self.inner.guide(model, z, t, cond)
        if guided.reference is None or guided.reference is guided.denoised:
            return guided
        dims = tuple(range(1, z.ndim))
        ratio = guided.reference.std(dims, correction=0, keepdim=True) / guided.denoised.std(
            dims, correction=0, keepdim=True
        )
        rescaled = guided.denoised * ratio
        return guided._replace(denoised=guided.denoised.lerp(rescaled, self.phi))


class DynamicThresholding(Modifier):
    """Dynamic thresholding of D (Imagen, Saharia et al. 2022, Sec. 2.3), generalised to range ``max_value``.

    Per sample r = max(quantile(|D|, percentile), max_value), D = clip(D, -r, r) max_value / r (the
    paper's r = max(quantile(|x0|, p), 1), x0 = clip(x0, -r, r) / r at max_value = 1): saturated samples
    are pushed inwards rather than clipped flat, and samples already inside the range are left unchanged."""

    def __init__(self, inner: Guidance, percentile: float = 0.995, max_value: float = 1.0) -> None:
        if not 0.0 < percentile <= 1.0:
            raise ConfigError(f"the thresholding percentile must lie in (0, 1], got {percentile}.")
        if max_value <= 0.0:
            raise ConfigError(f"the thresholding max_value must be positive, got {max_value}.")
        super().__init__(inner)
        self.percentile, self.max_value = float(percentile), float(max_value)

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        guided = self.inner.guide(model, z, t, cond)
        denoised = guided.denoised
        level = torch.quantile(denoised.abs().flatten(1).float(), self.percentile, dim=1)
        bound = broadcast_to(level.clamp_min(self.max_value).to(denoised.dtype), denoised)
        return guided._replace(denoised=denoised.clamp(-bound, bound) * (self.max_value / bound))
