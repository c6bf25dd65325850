"""Data: sources of labelled (optionally captioned) images and the datamodule that batches them."""

from lightning_diffusion.data.captions import Captioned
from lightning_diffusion.data.cifar import CIFAR10
from lightning_diffusion.data.datamodule import DiffusionDataModule
from lightning_diffusion.data.folder import ImageFiles, ImageFolder
from lightning_diffusion.data.shapes import Shapes
from lightning_diffusion.data.sources import (
    DataSource,
    Digits,
    FashionMNIST,
    ImageReader,
    ImageSet,
    TorchvisionDataset,
)

__all__ = [
    "CIFAR10",
    "Captioned",
    "DataSource",
    "DiffusionDataModule",
    "Digits",
    "FashionMNIST",
    "ImageFiles",
    "ImageFolder",
    "ImageReader",
    "ImageSet",
    "Shapes",
    "TorchvisionDataset",
]
