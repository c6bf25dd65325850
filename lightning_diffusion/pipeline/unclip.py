"""The DALL-E 2 (unCLIP) chain, Ramesh et al. 2022, Sec. 2: caption → C_T → prior → C_I → decoder
(→ upsamplers), each stage with its own classifier-free guidance scale; and image variations, C_I of a
real image → decoder.

Every random draw of sample i (the prior's candidates, then the decoder's and upsamplers' noise) comes
from generator i, so a sample does not depend on the batch it is drawn in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_diffusion.compatibility import Trained, check_together, recorded_data
from lightning_diffusion.components.base import same_weights
from lightning_diffusion.components.prior import Prior, check_candidates
from lightning_diffusion.components.unclip_decoder import UnclipDecoder
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec
from lightning_diffusion.guidance import ClassifierFree, Condition
from lightning_diffusion.pipeline.cascade import Cascade
from lightning_diffusion.registry import load_component
from lightning_diffusion.sampling import generate, sample_in_batches


@dataclass
class PriorStage:
    """The prior and how to sample it: CFG ``guidance_scale`` on the caption, and ``candidates`` k
    embeddings per caption of which the one with the highest C_T · C_I is kept, sampled with
    ``sampler`` (a spec or a solver name)."""

    model: Prior
    guidance_scale: float = 1.0
    candidates: int = 1
    sampler: SamplerSpec = field(default_factory=SamplerSpec)

    def __post_init__(self) -> None:
        self.sampler = SamplerSpec.of(self.sampler)
        check_candidates(self.candidates)

    def embeddings(self, captions: Sequence[str], generators: Sequence[torch.Generator]) -> Tensor:
        """Unit-norm image embeddings (B, embed_dim) sampled for ``captions``."""
        return self.model.sample_embeddings(
            captions, generators, self.guidance_scale, self.candidates, self.sampler
        )


def check_prior_and_decoder(prior: Prior, decoder: nn.Module) -> None:
    """Refuse a decoder that cannot read the prior's embeddings: not an unCLIP decoder, another
    embedding size, or another contrastive encoder."""
    if not isinstance(decoder, UnclipDecoder):
        raise ConfigError(
            f"the decoder stage is a {type(decoder).__name__}, not an unCLIP decoder: pass an UnclipDecoder "
            "checkpoint (python train.py fit --config configs/<data>/unclip_decoder.yaml)."
        )
    if decoder.embed_dim != prior.embed_dim:
        raise ConfigError(
            f"the decoder takes image embeddings of size {decoder.embed_dim} but the prior's contrastive "
            f"encoder makes embeddings of size {prior.embed_dim}; use a decoder and a prior trained with "
            "the same contrastive encoder."
        )
    if not same_weights(decoder.encoder, prior.encoder):
        raise ConfigError(
            "the decoder and the prior were trained with different contrastive encoders, so the prior's "
            "embeddings are not the ones the decoder inverts; train both with the same encoder checkpoint."
        )


class Unclip:
    """The prior followed by a cascade whose base stage is an unCLIP decoder, used like one generator
    of images from captions (``generate(generators, {"caption": [...]})``).

    Offers what a sweep needs: ``image_shape`` (the final one), ``parameters()``, ``device`` and ``rows``,
    the image rows the decoder and upsamplers denoised (the prior's rows are embedding vectors, a
    negligible cost, and are not counted)."""

    def __init__(self, prior: PriorStage, cascade: Cascade) -> None:
        check_prior_and_decoder(prior.model, cascade.stages[0].model)
        self.prior = prior
        self.cascade = cascade

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | Path],
        map_location: torch.device | str = "cpu",
        allow_cross_data: bool = False,
    ) -> Unclip:
        """Load a ``prior`` checkpoint, then the decoder (a ``denoiser``) and any upsamplers; the decoder
        must have been trained on the prior's images, data set and caption vocabulary (unless
        ``allow_cross_data``)."""
        if len(paths) < 2:
            raise ConfigError(
                f"the unCLIP chain got {len(paths)} checkpoint(s); give the prior's, then the decoder's "
                "(then any upsamplers')."
            )
        prior = load_component(paths[0], kind="prior", map_location=map_location)
        cascade = Cascade.from_checkpoints(
            paths[1:], map_location=map_location, allow_cross_data=allow_cross_data
        )
        check_together(
            Trained(f"the unCLIP decoder ({paths[1]})", cascade.stages[0].model, recorded_data(paths[1])),
            Trained(f"the prior ({paths[0]})", prior, recorded_data(paths[0])),
            ("image", "vocabulary", "source"),
            "use a prior and a decoder trained on the same data (or allow_cross_data to mix them on "
            "purpose).",
            allow_cross_data,
        )
        return cls(PriorStage(prior), cascade)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the final images."""
        return self.cascade.image_shape

    @property
    def device(self) -> torch.device:
        """The device of the decoder."""
        return self.cascade.device

    def parameters(self) -> Iterator[nn.Parameter]:
        """The decoder's and upsamplers' parameters."""
        return self.cascade.parameters()

    @property
    def rows(self) -> int:
        """Image rows denoised by the decoder and upsamplers since the last ``reset_counts``."""
        return self.cascade.rows

    def reset_counts(self) -> None:
        """Start counting network evaluations afresh."""
        self.cascade.reset_counts()

    @torch.no_grad()
    def generate(self, generators: Sequence[torch.Generator], cond: Condition) -> Tensor:
        """Final-resolution images in [-1, 1] for one batch of ``cond["caption"]``: the prior samples
        C_I, the decoder (and upsamplers) generate from it and, if text-conditional, the caption."""
        captions = cond.get("caption")
        if captions is None:
            raise ConfigError("the unCLIP chain generates from captions: pass cond={'caption': [...]}.")
        embeddings = self.prior.embeddings(list(captions), generators)
        return self.cascade.generate(generators, {**cond, "image_embedding": embeddings.to(self.device)})


def sample_unclip(
    chain: Unclip,
    captions: Sequence[str],
    seed: int = 0,
    first_index: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> Tensor:
    """Images in [-1, 1], shape (N, C, H, W), one per caption; sample i (counting from ``first_index``)
    draws its noise from a generator seeded by (seed, i)."""
    if isinstance(captions, str) or not captions:
        raise ConfigError("give a non-empty list of captions to sample (a single string is not a list).")
    captions = list(captions)

    def generate_batch(generators: Sequence[torch.Generator], cond: Condition) -> Tensor:
        indices = cond["index"].tolist()
        return chain.generate(generators, {"caption": [captions[i] for i in indices]})

    index = {"index": torch.arange(len(captions))}
    return sample_in_batches(
        generate_batch, index, len(captions), chain.device, seed, first_index, batch_size, "unclip", progress
    )


@torch.no_grad()
def image_variations(
    decoder: UnclipDecoder,
    images: Tensor,
    per_image: int,
    guidance_scale: float = 1.0,
    sampler: SamplerSpec | str = "ddim",
    seed: int = 0,
    batch_size: int = 64,
) -> Tensor:
    """``per_image`` decoder samples from the image embedding C_I of each image (DALL-E 2, Sec. 3.1),
    shape (N, per_image, C, H, W) in [-1, 1], with classifier-free guidance on the embedding (the
    caption, if the decoder reads one, is ∅)."""
    if per_image < 1:
        raise ConfigError(f"per_image must be at least 1, got {per_image}.")
    device = next(decoder.parameters()).device
    embeddings = decoder.clean_image_embedding(images.to(device)).repeat_interleave(per_image, dim=0)
    guidance = ClassifierFree(guidance_scale)
    samples = sample_in_batches(
        lambda generators, cond: generate(decoder, guidance, generators, cond, sampler),
        {"image_embedding": embeddings},
        len(embeddings),
        device,
        seed,
        0,
        batch_size,
        "variations",
    )
    return samples.view(len(images), per_image, *samples.shape[1:])
