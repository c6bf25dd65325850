"""Denoising, encoding and text networks."""

from lightning_diffusion.nets.classifier import ConvClassifier
from lightning_diffusion.nets.encoder import EncoderUNet
from lightning_diffusion.nets.prior import PriorMLP, PriorTransformer
from lightning_diffusion.nets.text import TextTransformer
from lightning_diffusion.nets.unet import UNet

__all__ = ["ConvClassifier", "EncoderUNet", "PriorMLP", "PriorTransformer", "TextTransformer", "UNet"]
