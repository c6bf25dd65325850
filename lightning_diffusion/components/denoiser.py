"""The denoiser component: learns D(z_t, t, x) with condition dropout to the null label (for CFG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.components.base import Component, QuartileMeans, adamw_with_warmup, check_network
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import CosineSchedule, denoised_from_output, diffusion_loss
from lightning_diffusion.diffusion.parameterization import check_prediction
from lightning_diffusion.registry import register


@register("denoiser")
class Denoiser(Component):
    """Class-conditional (or unconditional) diffusion model around an injected network.

    The network predicts ``prediction`` (eps, v or x0); ``denoise`` converts it to D, the estimate of
    E[y | z_t, x] that samplers and guidance use. With ``num_classes`` set, the label is embedded
    (index ``num_classes`` is the null label ∅) and replaced by ∅ with probability ``p_uncond``
    during training, so one network serves both terms of classifier-free guidance.
    """

    def __init__(
        self,
        net: nn.Module,
        image_shape: Sequence[int] = (1, 8, 8),
        num_classes: int | None = 10,
        p_uncond: float = 0.1,
        prediction: str = "v",
        loss_weighting: str | None = None,
        schedule: CosineSchedule | None = None,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
    ) -> None:
        super().__init__()
        check_network(net, in_channels=image_shape[0], out_channels=image_shape[0])
        if not 0.0 <= p_uncond <= 1.0:
            raise ConfigError(f"p_uncond is a probability and must lie in [0, 1], got {p_uncond}.")
        cond_dim = getattr(net, "cond_dim", None)
        if num_classes is not None and cond_dim is None:
            raise ConfigError(
                f"a class-conditional denoiser (num_classes={num_classes}) needs a network with a condition "
                "input: set net.init_args.cond_dim (e.g. 128), or num_classes: null for an unconditional "
                "model."
            )
        if num_classes is None and cond_dim is not None:
            raise ConfigError(
                "an unconditional denoiser (num_classes: null) needs a network with cond_dim: null."
            )
        self.net = net
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.p_uncond = p_uncond
        self.prediction = check_prediction(prediction)
        self.loss_weighting = check_prediction(loss_weighting or prediction)
        self.schedule = schedule or CosineSchedule()
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.label_embedding = None if num_classes is None else nn.Embedding(num_classes + 1, cond_dim)
        self.val_loss = QuartileMeans("val/loss")
        self.save_hyperparameters(self.spec["init_args"])

    @property
    def null_label(self) -> int:
        """Index of the null condition ∅ in the label embedding."""
        return self.num_classes

    def null_condition(self, batch_size: int, device: torch.device) -> dict[str, Tensor]:
        """The condition ∅ for a batch: every label is the null label (empty for unconditional models)."""
        if self.num_classes is None:
            return {}
        return {"label": torch.full((batch_size,), self.null_label, dtype=torch.long, device=device)}

    def _condition_vector(self, cond: Mapping[str, Any] | None, batch_size: int) -> Tensor | None:
        if self.label_embedding is None:
            return None
        labels = (cond or {}).get("label")
        if labels is None:
            labels = self.null_condition(batch_size, self.label_embedding.weight.device)["label"]
        labels = torch.as_tensor(labels, device=self.label_embedding.weight.device)
        if labels.numel() and (labels.min() < 0 or labels.max() > self.null_label):
            raise ConfigError(
                f"labels must lie in [0, {self.num_classes - 1}] (or {self.null_label} for ∅), "
                f"got values from {labels.min().item()} to {labels.max().item()}."
            )
        return self.label_embedding(labels)

    def denoise(self, z: Tensor, t: Tensor, cond: Mapping[str, Any] | None = None) -> Tensor:
        """D(z_t, t, x): the estimate of E[y | z_t, x]; a missing label means ∅."""
        alpha, sigma = self.schedule.alpha_sigma(t.float())
        output = self.net(z, t, self._condition_vector(cond, z.shape[0]))
        return denoised_from_output(output.float(), z.float(), alpha, sigma, self.prediction)

    def _dropped_labels(self, labels: Tensor) -> dict[str, Tensor]:
        if self.num_classes is None:
            return {}
        drop = torch.rand(labels.shape, device=labels.device) < self.p_uncond
        return {"label": torch.where(drop, torch.full_like(labels, self.null_label), labels)}

    def _losses(
        self, batch: Mapping[str, Any], cond: Mapping[str, Any], generator=None
    ) -> tuple[Tensor, Tensor]:
        images = batch["image"]
        t = torch.rand(images.shape[0], device=images.device, generator=generator)
        noise = torch.randn(images.shape, device=images.device, generator=generator)
        losses = diffusion_loss(
            lambda z, tt: self.denoise(z, tt, cond), images, t, noise, self.schedule, self.loss_weighting
        )
        return losses, t

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        cond = self._dropped_labels(batch["label"]) if "label" in batch else {}
        losses, _ = self._losses(batch, cond)
        loss = losses.mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Loss with a fixed noise draw per batch, overall and per noise-level quartile of t."""
        generator = torch.Generator(device=batch["image"].device).manual_seed(batch_idx)
        cond = {"label": batch["label"]} if self.num_classes is not None else {}
        losses, t = self._losses(batch, cond, generator)
        self.val_loss.update(losses, t)

    def on_validation_epoch_end(self) -> None:
        self.log_quartile_means(self.val_loss)

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_warmup(self, self.lr, self.weight_decay, self.warmup_steps)

    def on_fit_start(self) -> None:
        """Refuse a data module whose images or classes do not match this model's configuration."""
        self.check_datamodule(self.image_shape, self.num_classes)
