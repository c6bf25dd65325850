"""The denoiser component: learns D(z_t, t, x) with condition dropout to ∅ (for CFG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.components.base import (
    Component,
    QuartileMeans,
    adamw_with_warmup,
    check_probabilities,
)
from lightning_diffusion.components.conditions import (
    Caption,
    ClassLabel,
    Condition,
    Conditioner,
    NetConditions,
)
from lightning_diffusion.diffusion import CosineSchedule, denoised_from_output, random_time_loss
from lightning_diffusion.diffusion.parameterization import check_prediction
from lightning_diffusion.registry import register

# state-dict prefixes written before the conditions became parts, and where those weights live now
LEGACY_PREFIXES = {
    "label_embedding.": "conditioner.label.embedding.",
    "text_encoder.": "conditioner.caption.text_encoder.",
    "text_projection.": "conditioner.caption.projection.",
    "aug_embedding.": "conditioner.aug_level.embedding.",
    "encoder.": "conditioner.image_embedding.encoder.",
    "null_embedding": "conditioner.image_embedding.null_embedding",
    "embedding_to_vector.": "conditioner.image_embedding.to_vector.",
    "embedding_to_tokens.": "conditioner.image_embedding.to_tokens.",
}


def _rename_legacy_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: move weights saved under a legacy prefix to the condition part now
    holding them, so checkpoints written before the redesign still load."""
    for key in [key for key in state_dict if key.startswith(prefix)]:
        local = key[len(prefix) :]
        for old, new in LEGACY_PREFIXES.items():
            if local.startswith(old):
                state_dict[prefix + new + local[len(old) :]] = state_dict.pop(key)
                break


@register("denoiser")
class Denoiser(Component):
    """Diffusion model around an injected network and a list of condition parts (or none).

    The network predicts ``prediction`` (eps, v or x0); ``denoise`` converts it to D, the estimate of
    E[y | z_t, x] that samplers and guidance use. ``num_classes`` adds a class-label part (index
    ``num_classes`` is ∅) and ``text_encoder`` a caption part (trained jointly, as in GLIDE; the empty
    caption is ∅); both drop to ∅ together with probability ``p_uncond`` during training, so one network
    serves both terms of classifier-free guidance. ``conditions`` adds further parts (see
    ``lightning_diffusion.components.conditions``), each with its own ∅ and dropout.
    """

    def __init__(
        self,
        net: nn.Module,
        image_shape: Sequence[int] = (1, 8, 8),
        num_classes: int | None = 10,
        text_encoder: nn.Module | None = None,
        p_uncond: float = 0.1,
        prediction: str = "v",
        loss_weighting: str | None = None,
        schedule: CosineSchedule | None = None,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        conditions: Sequence[Condition] = (),
    ) -> None:
        super().__init__()
        check_probabilities(p_uncond=p_uncond)
        self.net = net
        self.image_shape = tuple(image_shape)
        self.p_uncond = p_uncond
        self.prediction = check_prediction(prediction)
        self.loss_weighting = check_prediction(loss_weighting or prediction)
        self.schedule = schedule or CosineSchedule()
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        prompt = [
            *([] if num_classes is None else [ClassLabel(num_classes, p_uncond)]),
            *([] if text_encoder is None else [Caption(text_encoder, p_uncond)]),
        ]
        self.conditioner = Conditioner([*prompt, *conditions], net, self.image_shape, self.schedule)
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)
        self.val_loss = QuartileMeans("val/loss")
        self.save_hyperparameters(self.spec["init_args"])

    @property
    def num_classes(self) -> int | None:
        """The number of classes of the label condition (None without one)."""
        label = self.conditioner.part("label")
        return None if label is None else label.num_classes

    @property
    def null_label(self) -> int:
        """Index of the null condition ∅ in the label embedding."""
        return self.num_classes

    @property
    def label_embedding(self) -> nn.Embedding | None:
        """The label condition's embedding (None without one)."""
        label = self.conditioner.part("label")
        return None if label is None else label.embedding

    @property
    def text_encoder(self) -> nn.Module | None:
        """The caption condition's text encoder (None without one)."""
        caption = self.conditioner.part("caption")
        return None if caption is None else caption.text_encoder

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample, the noise samplers start from: the image's."""
        return self.image_shape

    def null_condition(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        """The condition ∅ for a batch, one entry per droppable key (empty for unconditional models).

        Guidance merges it over the sample's condition, so conditions it does not name (e.g. an
        upsampler's low-resolution image) are kept."""
        return self.conditioner.null(batch_size, device)

    def check_condition(self, cond: Mapping[str, Any]) -> None:
        """Refuse a bad condition (labels outside [0, num_classes], num_classes being ∅). It may read the
        device, so it runs once per run (sampling entry, first training batch), never per network call."""
        self.conditioner.check(cond)

    def condition_inputs(self, cond: Mapping[str, Any] | None, batch_size: int) -> NetConditions:
        """The network inputs for ``cond``; a missing condition key means ∅."""
        return self.conditioner.inputs(cond, batch_size)

    def network_input(self, z: Tensor, cond: Mapping[str, Any] | None) -> Tensor:
        """What the network sees of z_t: z_t and the extra channels of conditions such as a low-res image."""
        return self.conditioner.network_input(z, cond)

    def denoise(self, z: Tensor, t: Tensor, cond: Mapping[str, Any] | None = None) -> Tensor:
        """D(z_t, t, x): the estimate of E[y | z_t, x]; a missing label or caption means ∅. ``t`` may
        come from the host (a sampler's grid): it is copied to z's device without waiting, as float32
        whatever its dtype, so a compiled network sees one input signature."""
        t = t.to(z.device, torch.float32, non_blocking=True)
        alpha, sigma = self.schedule.alpha_sigma(t)
        inputs = self.condition_inputs(cond, z.shape[0])
        output = self.net(self.network_input(z, cond), t, **inputs.as_kwargs())
        return denoised_from_output(output.float(), z.float(), alpha, sigma, self.prediction)

    def batch_condition(self, batch: Mapping[str, Any], drop: Tensor | None = None) -> dict[str, Any]:
        """The condition of a training/validation batch; samples where ``drop`` is True get ∅."""
        return self.conditioner.read(batch, drop)

    def training_condition(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch's condition with condition dropout (each part's rate; label and caption together
        with ``p_uncond``) and each part's training augmentation."""
        return self.conditioner.training_condition(batch)

    def _losses(
        self, batch: Mapping[str, Any], cond: Mapping[str, Any], generator=None
    ) -> tuple[Tensor, Tensor]:
        return random_time_loss(
            lambda z, t: self.denoise(z, t, cond),
            batch["image"],
            self.schedule,
            self.loss_weighting,
            generator,
        )

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        losses, _ = self._losses(batch, self.training_condition(batch))
        loss = losses.mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Loss with a fixed noise draw per batch, overall and per noise-level quartile of t."""
        generator = torch.Generator(device=batch["image"].device).manual_seed(batch_idx)
        losses, t = self._losses(batch, self.batch_condition(batch), generator)
        self.val_loss.update(losses, t)

    def on_validation_epoch_end(self) -> None:
        self.log_quartile_means(self.val_loss)

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_warmup(self, self.lr, self.weight_decay, self.warmup_steps)

    def on_fit_start(self) -> None:
        """Refuse a data module whose images or classes do not match this model's configuration."""
        self.check_datamodule(self.image_shape, self.num_classes)

    def on_train_batch_start(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Check the labels of the run's first batch (a read-back of two numbers, once per run)."""
        if self.global_step == 0 and batch_idx == 0:
            self.check_condition(batch)
