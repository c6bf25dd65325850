"""Conditions as composable parts of a diffusion model, combined by one ``Conditioner``.

Each part (class label, caption, image embedding, low-resolution image, augmentation level, guidance
scale) owns its condition key, its null value ∅ and dropout probability, what it gives the network
(condition vector, context tokens, input channels), what it needs of the network, and how it reads a
training batch.
A ``Denoiser`` takes any list of parts (``conditions``); the upsampler and the unCLIP decoder are
denoisers with particular parts.
"""

from lightning_diffusion.components.conditions.base import Condition, NetConditions, NetworkSlots
from lightning_diffusion.components.conditions.caption import Caption
from lightning_diffusion.components.conditions.conditioner import Conditioner
from lightning_diffusion.components.conditions.guidance_scale import GuidanceScale
from lightning_diffusion.components.conditions.image_embedding import ImageEmbedding
from lightning_diffusion.components.conditions.label import ClassLabel
from lightning_diffusion.components.conditions.low_res import AugmentationLevel, LowResImage

__all__ = [
    "AugmentationLevel",
    "Caption",
    "ClassLabel",
    "Condition",
    "Conditioner",
    "GuidanceScale",
    "ImageEmbedding",
    "LowResImage",
    "NetConditions",
    "NetworkSlots",
]
