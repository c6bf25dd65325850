"""The noisy classifier: learns p(label | z_t, t) on noised images, the model classifier guidance uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.components.base import (
    Component,
    QuartileMeans,
    adamw_with_warmup,
    check_network,
    classification_outcomes,
)
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import CosineSchedule, noised
from lightning_diffusion.registry import register


@register("noisy_classifier")
class NoisyClassifier(Component):
    """Classifier of noised images z_t at noise levels t ~ U(0, t_max) (ADM, Dhariwal & Nichol 2021).

    ``logits(z, t)`` is what classifier guidance differentiates: the gradient of
    ``log_softmax(logits)[label]`` with respect to z. The network (e.g. ``EncoderUNet``) maps
    ``(z, t)`` to ``num_classes`` outputs. Validation reports loss and accuracy overall and per
    quartile of t in ``[0, t_max]``, with a fixed noise draw per batch.
    """

    def __init__(
        self,
        net: nn.Module,
        image_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        schedule: CosineSchedule | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        t_max: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 < t_max <= 1.0:
            raise ConfigError(
                f"t_max is the highest training noise level and must lie in (0, 1], got {t_max}."
            )
        check_network(net, in_channels=image_shape[0], out_dim=num_classes)
        self.net = net
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.schedule = schedule or CosineSchedule()
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.t_max = t_max
        self.val_loss = QuartileMeans("val/loss", t_max)
        self.val_accuracy = QuartileMeans("val/accuracy", t_max)
        self.save_hyperparameters(self.spec["init_args"])

    def logits(self, z: Tensor, t: Tensor) -> Tensor:
        """Class logits (B, num_classes) of noised images ``z`` at noise levels ``t`` (B,), in float32."""
        return self.net(z, t).float()

    def _outcomes(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        """Per-sample loss and correctness on the batch noised at random t, and those t."""
        images = batch["image"]
        t = self.t_max * torch.rand(images.shape[0], device=images.device, generator=generator)
        noise = torch.randn(images.shape, device=images.device, generator=generator)
        logits = self.logits(noised(images, noise, t, self.schedule), t)
        return *classification_outcomes(logits, batch["label"]), t

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        losses, correct, _ = self._outcomes(batch)
        loss = losses.mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/accuracy", correct.mean())
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Loss and accuracy with a fixed noise draw per batch, overall and per noise-level quartile."""
        generator = torch.Generator(device=batch["image"].device).manual_seed(batch_idx)
        losses, correct, t = self._outcomes(batch, generator)
        self.val_loss.update(losses, t)
        self.val_accuracy.update(correct, t)

    def on_validation_epoch_end(self) -> None:
        self.log_quartile_means(self.val_loss)
        self.log_quartile_means(self.val_accuracy)

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_warmup(self, self.lr, self.weight_decay, self.warmup_steps)

    def on_fit_start(self) -> None:
        """Refuse a data module whose images or classes do not match this model's configuration."""
        self.check_datamodule(self.image_shape, self.num_classes)
