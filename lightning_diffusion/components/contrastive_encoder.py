"""The contrastive encoder: CLIP trained on noised images (GLIDE), for CLIP guidance, CLIP score and
the embeddings the diffusion prior and the unCLIP decoder use."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.nn.functional import all_gather as differentiable_all_gather
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
from lightning_diffusion.distributed import world_size
from lightning_diffusion.metrics.retrieval import caption_ids, retrieval_hits
from lightning_diffusion.nets.text import TextEncoding
from lightning_diffusion.registry import register

MAX_LOGIT_SCALE = 100.0  # CLIP (Radford et al. 2021, Sec. 2.5) clips the temperature so logits stay <= 100


def no_captions(learner: str) -> ConfigError:
    """The error for data without captions, given to a component (``learner``) that needs them."""
    return ConfigError(
        f"{learner} learns from image-caption pairs but the data has no captions; use a captioned source "
        "(Shapes, Captioned(...), ImageFolder with captions_file)."
    )


def multi_positive_infonce(scores: Tensor, positives: Tensor) -> Tensor:
    """Mean over query rows of ``-log sum_{j in P(i)} softmax(scores_i)_j``, P(i) the True columns of
    ``positives[i]``: the multi-positive loss L_in of Khosla et al. 2020, eq. 3, up to the constant
    log |P(i)|, so a repeated caption is never a negative of its own duplicates."""
    scores = scores.float()
    matched = scores.masked_fill(~positives, -math.inf).logsumexp(dim=1)
    return (scores.logsumexp(dim=1) - matched).mean()


def contrastive_loss(image_rows: Tensor, text_rows: Tensor, positives: Tensor) -> Tensor:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021) with identical captions as positives: the mean of
    ``multi_positive_infonce`` over image queries and over caption queries.

    ``image_rows[i, j]`` scores image i against caption j, ``text_rows[i, j]`` caption i against image j,
    and ``positives[i, j]`` says whether query i's caption equals key j's. Within one batch these are
    ``logits``, ``logits.T`` and ``same_caption``: a batch of one caption repeated has loss 0, and with
    distinct captions this is CLIP's cross-entropy against the diagonal. Across processes the rows are
    this process's queries and the columns the global batch (``ContrastiveEncoder.global_rows``).
    """
    image_to_text = multi_positive_infonce(image_rows, positives)
    return 0.5 * (image_to_text + multi_positive_infonce(text_rows, positives))


def gather_with_gradients(tensor: Tensor) -> Tensor:
    """Every DDP rank's ``tensor`` concatenated along dim 0 in rank order (``tensor`` itself on one
    process), through torch's differentiable all-gather: its backward sums every rank's gradient for a
    rank's rows and hands the sum to that rank. Works under a Trainer, Fabric or a plain loop; every rank
    must hold the same number of rows, as Lightning's DistributedSampler (which pads) gives."""
    if world_size() == 1:
        return tensor
    return torch.cat(differentiable_all_gather(tensor.contiguous()), dim=0)


@register("contrastive_encoder")
class ContrastiveEncoder(Component):
    """CLIP with a noise-aware image tower C_I(z_t, t) and a text tower C_T(caption) (GLIDE, Nichol et
    al. 2022, Sec. 2.3).

    The image network (e.g. ``EncoderUNet`` with ``out_dim = embed_dim``) sees images noised at
    t ~ U(0, t_max); a ``p_clean`` fraction of them stays at t = 0, because CLIP score and the prior
    embed clean images. The text network (``TextTransformer``) is projected to ``embed_dim`` without a
    bias. ``similarity`` is what CLIP guidance differentiates. Validation reports retrieval accuracy
    over the global batch (``val/i2t``, ``val/t2i``) overall and per quartile of t with a fixed noise
    draw per batch, the same on the clean batch (``val/i2t_clean``, ``val/t2i_clean``), and ``val/loss``.
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

    def global_rows(
        self, image: Tensor, text: Tensor, captions: Sequence[str]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Scaled similarities of this process's images (rows) to the captions of the global batch, of its
        captions (rows) to the global batch's images, and which of those pairs share a caption.

        The keys are every DDP rank's embeddings gathered with gradients, so InfoNCE negatives and
        retrieval span the global batch as in CLIP (Radford et al. 2021, Fig. 3); the queries stay local.
        Identical captions are matched across ranks by gathered ``caption_ids``, not strings. On one
        process the three are ``logits``, ``logits.T`` and ``same_caption`` of the batch.
        """
        ids = caption_ids(captions, image.device)
        all_images, all_texts, all_ids = (gather_with_gradients(tensor) for tensor in (image, text, ids))
        scale = self.logit_scale
        return scale * image @ all_texts.T, scale * text @ all_images.T, ids[:, None] == all_ids[None, :]

    @staticmethod
    def _captions(batch: Mapping[str, Any]) -> list[str]:
        captions = batch.get("caption")
        if captions is None:
            raise no_captions("the contrastive encoder")
        return list(captions)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """Symmetric multi-positive InfoNCE on images noised at t ~ U(0, t_max), a p_clean share at t = 0,
        against the global batch.

        Each of the W ranks returns L_r, the mean over its own B image and B caption queries against all
        N = W·B keys, so Σ_r L_r = W·L with L the loss one process computes on the N pairs. The gather's
        backward sums Σ_r ∂L_r/∂(rank k's rows) = W·∂L/∂(rank k's rows), so rank k's tower gradient is
        W·(∂L/∂θ through its rows) and DDP's mean over ranks is Σ_k (∂L/∂θ through rank k's rows) =
        ∂L/∂θ; the logit scale, used directly in each L_r, averages to (1/W)·Σ_r ∂L_r/∂s = ∂L/∂s. The
        logged ``train/loss`` is the mean of the L_r over ranks, i.e. L.
        """
        images, captions = batch["image"], self._captions(batch)
        size = images.shape[0]
        t = self.t_max * torch.rand(size, device=images.device)
        t = t.masked_fill(torch.rand(size, device=images.device) < self.p_clean, 0.0)
        z = noised(images, torch.randn_like(images), t, self.schedule)
        rows = self.global_rows(self.image_embedding(z, t), self.text_embedding(captions), captions)
        loss = contrastive_loss(*rows)
        self.log("train/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        self.log("train/logit_scale", self.logit_scale.detach(), batch_size=size)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Retrieval accuracy and loss over the global batch with a fixed noise draw per batch, per
        quartile of t and at t = 0; each rank scores its own queries and the metrics sum over ranks."""
        images, captions = batch["image"], self._captions(batch)
        generator = torch.Generator(device=images.device).manual_seed(batch_idx)
        t = self.t_max * torch.rand(images.shape[0], device=images.device, generator=generator)
        noise = torch.randn(images.shape, device=images.device, generator=generator)
        text = self.text_embedding(captions)
        noisy = noised(images, noise, t, self.schedule)
        image_rows, text_rows, positives = self.global_rows(self.image_embedding(noisy, t), text, captions)
        self.val_i2t.update(retrieval_hits(image_rows, positives), t)
        self.val_t2i.update(retrieval_hits(text_rows, positives), t)
        self.val_loss.update(contrastive_loss(image_rows, text_rows, positives), weight=images.shape[0])
        clean = self.image_embedding(images, torch.zeros_like(t))
        image_rows, text_rows, positives = self.global_rows(clean, text, captions)
        self.val_i2t_clean.update(retrieval_hits(image_rows, positives))
        self.val_t2i_clean.update(retrieval_hits(text_rows, positives))

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
