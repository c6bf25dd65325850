"""The LightningModules of the framework; importing this package registers them."""

from lightning_diffusion.components.base import Component
from lightning_diffusion.components.denoiser import Denoiser

__all__ = ["Component", "Denoiser"]
