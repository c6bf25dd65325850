"""Data: sources of labelled images and the datamodule that batches them for training."""

from lightning_diffusion.data.datamodule import DiffusionDataModule
from lightning_diffusion.data.sources import (
    DataSource,
    Digits,
    FashionMNIST,
    ImageFolder,
    ImageSet,
    TorchvisionDataset,
)

__all__ = [
    "DataSource",
    "DiffusionDataModule",
    "Digits",
    "FashionMNIST",
    "ImageFolder",
    "ImageSet",
    "TorchvisionDataset",
]
