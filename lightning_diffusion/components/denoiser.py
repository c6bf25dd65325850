"""The denoiser component: learns D(z_t, t, x) with condition dropout to the null label (for CFG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_diffusion.components.base import (
    Component,
    QuartileMeans,
    adamw_with_warmup,
    check_network,
    check_probabilities,
)
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import CosineSchedule, denoised_from_output, random_time_loss
from lightning_diffusion.diffusion.parameterization import check_prediction
from lightning_diffusion.registry import register


class NetConditions(NamedTuple):
    """What a denoising network receives besides (z, t): a condition vector and context tokens."""

    vector: Tensor | None = None
    context: Tensor | None = None
    context_mask: Tensor | None = None

    def as_kwargs(self) -> dict[str, Tensor]:
        """Keyword arguments for ``net(x, t, **kwargs)``: only what is present."""
        names = ("cond", "context", "context_mask")
        return {name: value for name, value in zip(names, self, strict=True) if value is not None}


@register("denoiser")
class Denoiser(Component):
    """Class-, text-conditional (or unconditional) diffusion model around an injected network.

    The network predicts ``prediction`` (eps, v or x0); ``denoise`` converts it to D, the estimate of
    E[y | z_t, x] that samplers and guidance use. With ``num_classes`` set, the label is embedded
    (index ``num_classes`` is the null label ∅). With a ``text_encoder`` (trained jointly, as in GLIDE),
    the caption's pooled embedding is added to the condition vector and its token embeddings reach the
    network's cross-attention (``net.context_dim`` = encoder width); the empty caption is ∅. During
    training every condition of a sample is replaced by ∅ with probability ``p_uncond``, so one network
    serves both terms of classifier-free guidance.
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
    ) -> None:
        super().__init__()
        check_network(net, in_channels=self.network_in_channels(image_shape), out_channels=image_shape[0])
        check_probabilities(p_uncond=p_uncond)
        self.net = net
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.text_encoder = text_encoder
        self.p_uncond = p_uncond
        self.prediction = check_prediction(prediction)
        self.loss_weighting = check_prediction(loss_weighting or prediction)
        self.schedule = schedule or CosineSchedule()
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        cond_dim = self._check_condition_inputs(net)
        self.label_embedding = None if num_classes is None else nn.Embedding(num_classes + 1, cond_dim)
        self.text_projection = None if text_encoder is None else nn.Linear(text_encoder.width, cond_dim)
        self.val_loss = QuartileMeans("val/loss")
        self.save_hyperparameters(self.spec["init_args"])

    @staticmethod
    def network_in_channels(image_shape: Sequence[int]) -> int:
        """Channels the network takes: the image's (subclasses concatenate more, e.g. a low-res image)."""
        return image_shape[0]

    def _check_condition_inputs(self, net: nn.Module) -> int | None:
        """The network's condition width, after refusing a network that lacks an input a condition needs."""
        cond_dim = getattr(net, "cond_dim", None)
        if self.conditions_vector and cond_dim is None:
            raise ConfigError(
                f"a conditional denoiser ({self._condition_names()}) needs a network with a condition input: "
                "set net.init_args.cond_dim (e.g. 128), or num_classes: null and no text_encoder for an "
                "unconditional model."
            )
        if not self.conditions_vector and cond_dim is not None:
            raise ConfigError(
                "an unconditional denoiser (num_classes: null, no text_encoder) needs a network with "
                "cond_dim: null."
            )
        context_dim = getattr(net, "context_dim", None)
        if self.text_encoder is not None and getattr(self.text_encoder, "width", None) is None:
            raise ConfigError(
                f"the text encoder {type(self.text_encoder).__name__} does not say how wide its embeddings "
                "are (a `width` attribute); use lightning_diffusion.nets.TextTransformer or add one."
            )
        if self.text_encoder is not None and context_dim != self.text_encoder.width:
            raise ConfigError(
                f"the text encoder's tokens are {self.text_encoder.width} wide but the network's "
                f"context_dim is {context_dim}; set net.init_args.context_dim to {self.text_encoder.width}."
            )
        if not self.uses_context and context_dim is not None:
            raise ConfigError(
                "the network has context_dim set but there is no text_encoder; set context_dim: null."
            )
        if self.uses_context and context_dim is None:
            raise ConfigError(
                f"the {self._condition_names()} condition reaches the network as context tokens for "
                "cross-attention: set net.init_args.context_dim (e.g. 64) and attention_levels."
            )
        return cond_dim

    @property
    def uses_context(self) -> bool:
        """Whether conditions reach the network as context tokens (cross-attention)."""
        return self.text_encoder is not None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample, the noise samplers start from: the image's."""
        return self.image_shape

    @property
    def conditions_vector(self) -> bool:
        """Whether any condition feeds the network's condition vector."""
        return self.num_classes is not None or self.text_encoder is not None

    def _condition_names(self) -> str:
        return ", ".join(
            name
            for name, on in (
                ("label", self.num_classes is not None),
                ("caption", self.text_encoder is not None),
            )
            if on
        )

    @property
    def null_label(self) -> int:
        """Index of the null condition ∅ in the label embedding."""
        return self.num_classes

    def null_condition(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        """The condition ∅ for a batch: null labels and/or empty captions (empty for unconditional models).

        Guidance merges it over the sample's condition, so conditions it does not name (e.g. an
        upsampler's low-resolution image) are kept."""
        null: dict[str, Any] = {}
        if self.num_classes is not None:
            null["label"] = torch.full((batch_size,), self.null_label, dtype=torch.long, device=device)
        if self.text_encoder is not None:
            null["caption"] = [""] * batch_size
        return null

    def check_condition(self, cond: Mapping[str, Any]) -> None:
        """Refuse labels outside [0, num_classes] (num_classes is ∅). It reads the labels back to the
        host, so it runs once per run (sampling entry, first training batch), never per network call."""
        labels = cond.get("label")
        if self.num_classes is None or labels is None:
            return
        labels = torch.as_tensor(labels)
        if not labels.numel():
            return
        low, high = torch.stack([labels.min(), labels.max()]).tolist()
        if low < 0 or high > self.null_label:
            raise ConfigError(
                f"labels must lie in [0, {self.num_classes - 1}] (or {self.null_label} for ∅), "
                f"got values from {low} to {high}."
            )

    def _label_vector(self, cond: Mapping[str, Any], batch_size: int) -> Tensor:
        device = self.label_embedding.weight.device
        labels = cond.get("label")
        if labels is None:
            labels = self.null_condition(batch_size, device)["label"]
        return self.label_embedding(torch.as_tensor(labels, device=device))

    def condition_inputs(self, cond: Mapping[str, Any] | None, batch_size: int) -> NetConditions:
        """The network inputs for ``cond``; a missing label or caption means ∅."""
        cond = cond or {}
        vector = context = mask = None
        if self.label_embedding is not None:
            vector = self._label_vector(cond, batch_size)
        if self.text_encoder is not None:
            captions = cond.get("caption")
            if captions is None:
                captions = [""] * batch_size
            if len(captions) != batch_size:
                raise ConfigError(f"got {len(captions)} captions for a batch of {batch_size} images.")
            encoding = self.text_encoder(list(captions))
            text = self.text_projection(encoding.pooled)
            vector = text if vector is None else vector + text
            context, mask = encoding.tokens, encoding.mask
        return NetConditions(vector, context, mask)

    def network_input(self, z: Tensor, cond: Mapping[str, Any] | None) -> Tensor:
        """What the network sees of z_t (subclasses concatenate conditions such as a low-res image)."""
        return z

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
        cond: dict[str, Any] = {}
        if self.num_classes is not None:
            labels = batch["label"]
            if drop is not None:
                labels = torch.where(drop.to(labels.device, non_blocking=True), self.null_label, labels)
            cond["label"] = labels
        if self.text_encoder is not None:
            captions = batch.get("caption")
            if captions is None:
                raise ConfigError(
                    "this denoiser is text-conditional but the data has no captions; use a captioned "
                    "source (Shapes, Captioned(...), ImageFolder with captions_file)."
                )
            cond["caption"] = (
                list(captions)
                if drop is None
                else [
                    "" if dropped else caption
                    for dropped, caption in zip(drop.tolist(), captions, strict=True)
                ]
            )
        return cond

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

    def training_condition(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch's condition with each sample's conditions dropped to ∅ with probability p_uncond.
        The drop mask is drawn on the host, where captions are dropped, so no value is read back."""
        drop = torch.rand(batch["image"].shape[0]) < self.p_uncond
        return self.batch_condition(batch, drop)

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
