"""The contrastive encoder: CLIP trained on noised images (GLIDE), for CLIP guidance, CLIP score and
the embeddings the diffusion prior and the unCLIP decoder use."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_diffusion.components.base import (
    Component,
    QuartileMeans,
    adamw_with_warmup,
    check_network,
    check_probabilities,
)
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import CosineSchedule, noised
from lightning_diffusion.nets.text import TextEncoding
from lightning_diffusion.registry import register

MAX_LOGIT_SCALE = 100.0  # CLIP (Radford et al. 2021, Sec. 2.5) clips the temperature so logits stay <= 100


def no_captions(learner: str) -> ConfigError:
    """The error for data without captions, given to a component (``learner``) that needs them."""
    return ConfigError(
        f"{learner} learns from image-caption pairs but the data has no captions; use a captioned source "
        "(Shapes, Captioned(...), ImageFolder with captions_file)."
    )


def same_caption(captions: Sequence[str], device: torch.device | None = None) -> Tensor:
    """Boolean (B, B) matrix: entry (i, j) is True where caption i and caption j are the same string."""
    index = {caption: i for i, caption in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([index[caption] for caption in captions], device=device)
    return ids[:, None] == ids[None, :]


def contrastive_loss(logits: Tensor, captions: Sequence[str]) -> Tensor:
    """Symmetric InfoNCE over a batch (CLIP, Radford et al. 2021) with identical captions as positives.

    ``logits[i, j]`` scores image i against caption j. Each direction's loss is
    ``-log sum_{j in P(i)} softmax(logits_i)_j`` with P(i) the columns whose caption equals row i's
    (the multi-positive loss L_in of Khosla et al. 2020, eq. 3, up to the constant log |P(i)|), so a
    repeated caption is never a negative of its own duplicates: a batch of one caption repeated has
    loss 0. With distinct captions this is CLIP's cross-entropy against the diagonal. Returns the mean
    of image→text and text→image.
    """
    positives = same_caption(captions, logits.device)
    logits = logits.float()

    def one_direction(scores: Tensor) -> Tensor:
        matched = scores.masked_fill(~positives, -math.inf).logsumexp(dim=1)
        return (scores.logsumexp(dim=1) - matched).mean()

    return 0.5 * (one_direction(logits) + one_direction(logits.T))


def retrieval_outcomes(logits: Tensor, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Per-query correctness (1.0 or 0.0) of retrieval within the batch: image→text is right when the
    best-scoring caption reads the same as the image's own, text→image when the best-scoring image's
    caption reads the same as the query."""
    positives = same_caption(captions, logits.device)
    rows = torch.arange(len(captions), device=logits.device)
    image_to_text = positives[rows, logits.argmax(dim=1)].float()
    text_to_image = positives[logits.argmax(dim=0), rows].float()
    return image_to_text, text_to_image


@register("contrastive_encoder")
class ContrastiveEncoder(Component):
    """CLIP with a noise-aware image tower C_I(z_t, t) and a text tower C_T(caption) (GLIDE, Nichol et
    al. 2022, Sec. 2.3).

    The image network (e.g. ``EncoderUNet`` with ``out_dim = embed_dim``) sees images noised at
    t ~ U(0, t_max); a ``p_clean`` fraction of them stays at t = 0, because CLIP score and the prior
    embed clean images. The text network (``TextTransformer``) is projected to ``embed_dim`` without a
    bias. ``similarity`` is what CLIP guidance differentiates. Validation reports within-batch
    retrieval accuracy (``val/i2t``, ``val/t2i``) overall and per quartile of t with a fixed noise draw
    per batch, the same on the clean batch (``val/i2t_clean``, ``val/t2i_clean``), and ``val/loss``.
    """

    def __init__(
        self,
        image_net: nn.Module,
        text_encoder: nn.Module,
        image_shape: Sequence[int] = (1, 8, 8),
        embed_dim: int = 64,
        p_clean: float = 0.25,
        t_max: float = 1.0,
        schedule: CosineSchedule | None = None,
        init_temperature: float = 0.07,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
    ) -> None:
        super().__init__()
        check_probabilities(p_clean=p_clean)
        if not 0.0 < t_max <= 1.0:
            raise ConfigError(
                f"t_max is the highest training noise level and must lie in (0, 1], got {t_max}."
            )
        if not init_temperature >= 1.0 / MAX_LOGIT_SCALE:
            raise ConfigError(
                f"init_temperature must be at least {1.0 / MAX_LOGIT_SCALE} (logit scale at most "
                f"{MAX_LOGIT_SCALE:g}), got {init_temperature}; CLIP starts at 0.07."
            )
        if not hasattr(text_encoder, "width"):
            raise ConfigError(
                f"the text encoder {type(text_encoder).__name__} has no `width` (its pooled output size); "
                "use lightning_diffusion.nets.TextTransformer."
            )
        check_network(image_net, in_channels=image_shape[0], out_dim=embed_dim)
        self.image_net = image_net
        self.text_encoder = text_encoder
        self.text_projection = nn.Linear(text_encoder.width, embed_dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.image_shape = tuple(image_shape)
        self.embed_dim = embed_dim
        self.p_clean = p_clean
        self.t_max = t_max
        self.schedule = schedule or CosineSchedule()
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.val_i2t = QuartileMeans("val/i2t", t_max)
        self.val_t2i = QuartileMeans("val/t2i", t_max)
        self.val_i2t_clean = MeanMetric()
        self.val_t2i_clean = MeanMetric()
        self.val_loss = MeanMetric()
        self.save_hyperparameters(self.spec["init_args"])

    @property
    def logit_scale(self) -> Tensor:
        """exp(log_scale) clamped at 100: the inverse temperature of the similarities (CLIP)."""
        return self.log_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def image_embedding(self, z: Tensor, t: Tensor) -> Tensor:
        """C_I(z_t, t): unit-norm float32 embeddings (B, embed_dim) of images ``z`` at noise levels ``t``."""
        return F.normalize(self.image_net(z, t).float(), dim=-1)

    def encode_text(self, captions: Sequence[str]) -> tuple[Tensor, TextEncoding]:
        """C_T(caption) (see ``text_embedding``) and the text tower's encoding (pooled, tokens, mask)."""
        if isinstance(captions, str):
            raise ConfigError("captions must be a list of strings, got a single string; wrap it in a list.")
        encoding = self.text_encoder(list(captions))
        return F.normalize(self.text_projection(encoding.pooled).float(), dim=-1), encoding

    def text_embedding(self, captions: Sequence[str]) -> Tensor:
        """C_T(caption): unit-norm float32 embeddings (B, embed_dim) of a list of captions."""
        return self.encode_text(captions)[0]

    def similarity(self, z: Tensor, t: Tensor, text: Tensor) -> Tensor:
        """logit_scale · C_T(caption_i)ᵀ C_I(z_i, t_i), shape (B,), for text embeddings ``text`` (B, E):
        what CLIP guidance differentiates with respect to z (GLIDE, Nichol et al. 2022, Sec. 2.3)."""
        if text.shape[0] != z.shape[0]:
            raise ConfigError(f"got {text.shape[0]} caption embeddings for a batch of {z.shape[0]} images.")
        return self.logit_scale * (self.image_embedding(z, t) * text.to(torch.float32)).sum(dim=-1)

    def pair_logits(self, z: Tensor, t: Tensor, text: Tensor) -> Tensor:
        """Scaled similarities (B, B) of every noised image (rows) with every text embedding (columns)."""
        return self.logit_scale * self.image_embedding(z, t) @ text.T

    @staticmethod
    def _captions(batch: Mapping[str, Any]) -> list[str]:
        captions = batch.get("caption")
        if captions is None:
            raise no_captions("the contrastive encoder")
        return list(captions)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """Symmetric multi-positive InfoNCE on images noised at t ~ U(0, t_max), a p_clean share at t = 0."""
        images, captions = batch["image"], self._captions(batch)
        size = images.shape[0]
        t = self.t_max * torch.rand(size, device=images.device)
        t = t.masked_fill(torch.rand(size, device=images.device) < self.p_clean, 0.0)
        z = noised(images, torch.randn_like(images), t, self.schedule)
        loss = contrastive_loss(self.pair_logits(z, t, self.text_embedding(captions)), captions)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/logit_scale", self.logit_scale.detach(), batch_size=size)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Retrieval accuracy and loss with a fixed noise draw per batch, per quartile of t and at t = 0."""
        images, captions = batch["image"], self._captions(batch)
        generator = torch.Generator(device=images.device).manual_seed(batch_idx)
        t = self.t_max * torch.rand(images.shape[0], device=images.device, generator=generator)
        noise = torch.randn(images.shape, device=images.device, generator=generator)
        text = self.text_embedding(captions)
        logits = self.pair_logits(noised(images, noise, t, self.schedule), t, text)
        image_to_text, text_to_image = retrieval_outcomes(logits, captions)
        self.val_i2t.update(image_to_text, t)
        self.val_t2i.update(text_to_image, t)
        self.val_loss.update(contrastive_loss(logits, captions), weight=images.shape[0])
        clean_logits = self.pair_logits(images, torch.zeros_like(t), text)
        clean_i2t, clean_t2i = retrieval_outcomes(clean_logits, captions)
        self.val_i2t_clean.update(clean_i2t)
        self.val_t2i_clean.update(clean_t2i)

    def on_validation_epoch_end(self) -> None:
        self.log_quartile_means(self.val_i2t)
        self.log_quartile_means(self.val_t2i)
        for name, metric in (
            ("val/i2t_clean", self.val_i2t_clean),
            ("val/t2i_clean", self.val_t2i_clean),
            ("val/loss", self.val_loss),
        ):
            self.log(name, metric.compute())
            metric.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_warmup(self, self.lr, self.weight_decay, self.warmup_steps)

    def on_fit_start(self) -> None:
        """Refuse a data module without captions or with images of another shape."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and not getattr(datamodule, "has_captions", True):
            raise no_captions("the contrastive encoder")
        self.check_datamodule(self.image_shape, None)
