"""The LightningModules of the framework; importing this package registers them."""

from lightning_diffusion.components.base import Component
from lightning_diffusion.components.contrastive_encoder import ContrastiveEncoder
from lightning_diffusion.components.denoiser import Denoiser
from lightning_diffusion.components.distilled import DistilledDenoiser
from lightning_diffusion.components.evaluator import Evaluator
from lightning_diffusion.components.noisy_classifier import NoisyClassifier
from lightning_diffusion.components.prior import Prior
from lightning_diffusion.components.progressive import ProgressiveDenoiser
from lightning_diffusion.components.unclip_decoder import UnclipDecoder
from lightning_diffusion.components.upsampler import Upsampler

__all__ = [
    "Component",
    "ContrastiveEncoder",
    "Denoiser",
    "DistilledDenoiser",
    "Evaluator",
    "NoisyClassifier",
    "Prior",
    "ProgressiveDenoiser",
    "UnclipDecoder",
    "Upsampler",
]
