"""CLIP guidance (GLIDE, Nichol et al. 2022, Sec. 2.3): a noise-aware contrastive encoder's
ln P(z|x) ~ C_T(x)^T C_I(z_t, t) (times its learned logit scale) as the guiding log-likelihood
(the formula lives in ``gradient.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance.base import Condition, DiffusionModel, Guidance, Guided
from lightning_diffusion.guidance.classifier_free import ClassifierFree
from lightning_diffusion.guidance.gradient import GradientGuidance
from lightning_diffusion.guidance.registry import GuidanceMethod, register_method


class ContrastiveModel(Protocol):
    """What CLIP guidance needs: caption embeddings C_T and the scaled similarity to C_I(z_t, t)."""

    def text_embedding(self, captions: Sequence[str]) -> Tensor: ...

    def similarity(self, z: Tensor, t: Tensor, text: Tensor) -> Tensor: ...


class ClipGuidance(GradientGuidance):
    """CLIP guidance at scale s towards each sample's caption, on top of ``base``.

    The default base is the model's unconditional estimate (s = 0 of CFG): a text-conditional
    denoiser sampled with the empty caption, or an unconditional one, so the encoder alone follows the
    caption. Caption embeddings are computed once per caption list."""

    def __init__(self, encoder: ContrastiveModel, scale: float, base: Guidance | None = None) -> None:
        super().__init__(scale, base or ClassifierFree(0.0))
        self.encoder = encoder
        self._text: tuple[tuple[str, ...], Tensor] | None = None

    def check_condition(self, cond: Condition) -> None:
        if not cond.get("caption"):
            raise ConfigError(
                "CLIP guidance needs the captions to guide towards: pass cond={'caption': [...]}."
            )

    def unguided(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        """The base's estimate, as at s = 0: unconditional, so the caption acts only through guidance."""
        return self.base.guide(model, z, t, cond)

    def _text_embedding(self, captions: Sequence[str]) -> Tensor:
        key = tuple(captions)
        if self._text is None or self._text[0] != key:
            self._text = (key, self.encoder.text_embedding(list(captions)).detach())
        return self._text[1]

    def log_likelihood(self, z: Tensor, t: Tensor, cond: Condition) -> Tensor:
        return self.encoder.similarity(z, t, self._text_embedding(cond["caption"]))

    def reset(self) -> None:
        self._text = None
        super().reset()


CLIP = register_method(
    GuidanceMethod(
        "clip",
        build=lambda inputs: ClipGuidance(inputs.contrastive, inputs.scale),
        needs=("contrastive",),
        prompts=("caption",),
        follows_condition=True,
        conditional_denoiser=False,
        modifiers=("interval", "schedule", "threshold"),
        refusals={
            "rescale": "its base is the unconditional estimate, so there is no conditional reference to "
            "rescale towards (CFG rescale would pass it through unchanged)"
        },
    )
)
register_method(CLIP.requiring("interval"))
