"""The DALL-E 2 diffusion prior (Ramesh et al. 2022, Sec. 2.2): a diffusion model over the contrastive
encoder's image embeddings C_I(y) given the caption, i.e. P(C_I(y) | x).

It diffuses x = sqrt(embed_dim) * C_I(y): unit-norm embeddings have per-coordinate standard deviation
1/sqrt(embed_dim), and the rescaling gives the unit variance the noise schedule is designed for. The
network predicts the clean embedding directly (DALL-E 2: "predict the unnoised z_i directly"), so the
default loss is the x0 MSE. Samples are normalised back to unit norm.
"""

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
from lightning_diffusion.components.contrastive_encoder import no_captions
from lightning_diffusion.components.frozen_encoder import FrozenEncoderUser, load_frozen_encoder
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import (
    CosineSchedule,
    SamplerSpec,
    denoised_from_output,
    randn,
    random_time_loss,
    sample_generators,
)
from lightning_diffusion.diffusion.parameterization import check_prediction
from lightning_diffusion.guidance import ClassifierFree, GuidedDenoiser
from lightning_diffusion.registry import register

VALIDATION_SAMPLER = SamplerSpec("ddim", 25)  # how the embeddings for val/cosine are sampled


def check_candidates(candidates: int) -> int:
    """Return ``candidates`` (prior samples per caption, the best kept) if it is at least 1, else raise."""
    if candidates < 1:
        raise ConfigError(f"the number of prior candidates must be at least 1, got {candidates}.")
    return candidates


@register("prior")
class Prior(FrozenEncoderUser, Component):
    """P(C_I | caption) for the frozen contrastive encoder at ``encoder`` (a checkpoint path; the prior's own
    checkpoints carry the encoder, see ``load_frozen_encoder``), around an injected network
    (``PriorTransformer``, or ``PriorMLP`` for tiny settings).

    Condition keys: ``"caption"`` (list of B strings), whose token states (the encoder's text tower)
    the network reads, and ``"text_embedding"`` (B, embed_dim), C_T of the caption when missing. The
    null condition ∅ is the empty caption for both. Training drops the text embedding to C_T("") with
    probability ``p_drop_text_embedding`` and, independently, the tokens to the empty caption's with
    ``p_drop_tokens``, so classifier-free guidance works on either. ``sample_embeddings`` draws C_I,
    optionally the best of k candidates by C_T · C_I (DALL-E 2, Sec. 2.2).

    Validation logs the loss per noise-level quartile, ``val/cosine`` (cosine similarity of an
    embedding sampled for the caption to the true C_I of its image) and ``val/cosine_text`` (that of
    C_T itself, the baseline without a prior).
    """

    def __init__(
        self,
        net: nn.Module,
        encoder: str | dict,  # a path, or (in its own checkpoints) the carried encoder: see frozen_encoder
        p_drop_text_embedding: float = 0.1,
        p_drop_tokens: float = 0.1,
        prediction: str = "x0",
        schedule: CosineSchedule | None = None,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
    ) -> None:
        super().__init__()
        check_probabilities(p_drop_text_embedding=p_drop_text_embedding, p_drop_tokens=p_drop_tokens)
        self.encoder = load_frozen_encoder(encoder, "the diffusion prior")
        check_network(net, embed_dim=self.encoder.embed_dim, text_width=self.encoder.text_encoder.width)
        self.net = net
        self.image_shape = tuple(self.encoder.image_shape)
        self.embedding_scale = math.sqrt(self.encoder.embed_dim)
        self.p_drop_text_embedding = p_drop_text_embedding
        self.p_drop_tokens = p_drop_tokens
        self.prediction = check_prediction(prediction)
        self.schedule = schedule or CosineSchedule()
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.val_loss = QuartileMeans("val/loss")
        self.val_cosine = MeanMetric()
        self.val_cosine_text = MeanMetric()
        self.save_hyperparameters(self.spec["init_args"])

    @property
    def sample_shape(self) -> tuple[int]:
        """One sample is an embedding: samplers start from noise of shape (embed_dim,)."""
        return (self.embed_dim,)

    def null_condition(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        """∅: the empty caption's tokens and its text embedding C_T("")."""
        null_text = self.encoder.text_embedding([""]).to(device)
        return {"caption": [""] * batch_size, "text_embedding": null_text.expand(batch_size, -1)}

    def denoise(self, z: Tensor, t: Tensor, cond: Mapping[str, Any] | None = None) -> Tensor:
        """D(z_t, t, caption): the estimate of E[sqrt(embed_dim) C_I | z_t, caption]."""
        cond = cond or {}
        captions = cond.get("caption")
        if captions is None or len(captions) != z.shape[0]:
            got = "none" if captions is None else str(len(captions))
            raise ConfigError(
                f"the prior needs one caption per sample ({z.shape[0]}), got {got}; pass cond={{'caption': "
                "[...]}} (the empty caption is ∅)."
            )
        text_embedding, encoding = self.encoder.encode_text(captions)
        text_embedding = cond.get("text_embedding", text_embedding)
        if tuple(text_embedding.shape) != (z.shape[0], self.embed_dim):
            raise ConfigError(
                f"the prior takes text embeddings of shape ({z.shape[0]}, {self.embed_dim}), got "
                f"{tuple(text_embedding.shape)}; embed the captions with the prior's own encoder."
            )
        t = t.to(z.device, torch.float32, non_blocking=True)  # a sampler's grid comes from the host
        alpha, sigma = self.schedule.alpha_sigma(t)
        output = self.net(z, t, text_embedding.to(z.device), encoding.tokens, encoding.mask)
        return denoised_from_output(output.float(), z.float(), alpha, sigma, self.prediction)

    @torch.no_grad()
    def sample_embeddings(
        self,
        captions: Sequence[str],
        generators: Sequence[torch.Generator],
        guidance_scale: float = 1.0,
        candidates: int = 1,
        sampler: SamplerSpec | str = "ddim",
    ) -> Tensor:
        """Unit-norm image embeddings (B, embed_dim) for ``captions``, sampled with classifier-free
        guidance at ``guidance_scale``; with ``candidates`` k > 1 each caption gets k samples and keeps
        the one with the highest C_T · C_I (DALL-E 2, Sec. 2.2), ``sampler`` a spec or a solver name.
        Caption i's candidates draw all their noise from ``generators[i]``, so a sample does not depend
        on the batch it is drawn in."""
        check_candidates(candidates)
        if len(captions) != len(generators):
            raise ConfigError(f"got {len(captions)} captions for {len(generators)} generators.")
        text = self.encoder.text_embedding(captions)
        repeated = [generator for generator in generators for _ in range(candidates)]
        cond = {
            "caption": [caption for caption in captions for _ in range(candidates)],
            "text_embedding": text.repeat_interleave(candidates, dim=0),
        }
        noise = randn(repeated, self.sample_shape).to(text.device)
        guided = GuidedDenoiser(self, ClassifierFree(guidance_scale), cond)
        samples = SamplerSpec.of(sampler).sample(guided, noise, self.schedule, repeated)
        embeddings = F.normalize(samples.float(), dim=-1).view(len(captions), candidates, -1)
        best = (embeddings * text[:, None]).sum(dim=-1).argmax(dim=1)
        return embeddings[torch.arange(len(captions), device=best.device), best]

    def _batch(self, batch: Mapping[str, Any]) -> tuple[Tensor, list[str]]:
        """The scaled clean image embeddings of a batch (the diffusion variable) and its captions."""
        captions = batch.get("caption")
        if captions is None:
            raise no_captions("the diffusion prior")
        return self.embedding_scale * self.clean_image_embedding(batch["image"]), list(captions)

    def _losses(self, y: Tensor, cond: Mapping[str, Any], generator=None) -> tuple[Tensor, Tensor]:
        return random_time_loss(
            lambda z, t: self.denoise(z, t, cond), y, self.schedule, self.prediction, generator
        )

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """Diffusion loss with the text embedding and the tokens dropped to ∅ independently."""
        y, captions = self._batch(batch)
        size = y.shape[0]
        drop_tokens = (torch.rand(size, device=y.device) < self.p_drop_tokens).tolist()
        drop_embedding = torch.rand(size, device=y.device) < self.p_drop_text_embedding
        text = self.encoder.text_embedding(captions)
        text = torch.where(drop_embedding[:, None], self.encoder.text_embedding([""]), text)
        cond = {
            "caption": ["" if drop else caption for drop, caption in zip(drop_tokens, captions, strict=True)],
            "text_embedding": text,
        }
        loss = self._losses(y, cond)[0].mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Loss with a fixed noise draw per batch, and cosine similarities of sampled embeddings (and of
        C_T) to the true C_I."""
        y, captions = self._batch(batch)
        generator = torch.Generator(device=y.device).manual_seed(batch_idx)
        losses, t = self._losses(y, {"caption": captions}, generator)
        self.val_loss.update(losses, t)
        true = F.normalize(y, dim=-1)
        generators = sample_generators(batch_idx, range(len(captions)), y.device)
        sampled = self.sample_embeddings(captions, generators, sampler=VALIDATION_SAMPLER)
        self.val_cosine.update((sampled * true).sum(dim=-1))
        self.val_cosine_text.update((self.encoder.text_embedding(captions) * true).sum(dim=-1))

    def on_validation_epoch_end(self) -> None:
        self.log_quartile_means(self.val_loss)
        for name, metric in (("val/cosine", self.val_cosine), ("val/cosine_text", self.val_cosine_text)):
            self.log(name, metric.compute(), prog_bar=name == "val/cosine")
            metric.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_warmup(self.net, self.lr, self.weight_decay, self.warmup_steps)

    def on_fit_start(self) -> None:
        """Refuse data without captions or with images the encoder does not embed."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and not getattr(datamodule, "has_captions", True):
            raise no_captions("the diffusion prior")
        self.check_datamodule(self.image_shape, None)
