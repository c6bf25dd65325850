"""Data: sources of labelled (optionally captioned) images and the datamodule that batches them."""

from lightning_diffusion.data.captions import Captioned
from lightning_diffusion.data.datamodule import DiffusionDataModule
from lightning_diffusion.data.shapes import Shapes
from lightning_diffusion.data.sources import (
    DataSource,
    Digits,
    FashionMNIST,
    ImageFolder,
    ImageSet,
    TorchvisionDataset,
)

__all__ = [
    "Captioned",
    "DataSource",
    "DiffusionDataModule",
    "Digits",
    "FashionMNIST",
    "ImageFolder",
    "ImageSet",
    "Shapes",
    "TorchvisionDataset",
]
