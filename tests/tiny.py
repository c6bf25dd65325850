"""Tiny models and a quiet CPU Trainer for fast component tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_diffusion.components import Denoiser
from lightning_diffusion.data import DiffusionDataModule, Digits
from lightning_diffusion.nets import UNet

REPO = Path(__file__).resolve().parent.parent
COND_DIM = 16


def tiny_unet(cond_dim: int | None = COND_DIM) -> UNet:
    """A two-level U-Net small enough to train and sample in well under a second on one CPU core."""
    return UNet(in_channels=1, channels=(8, 16), num_res_blocks=1, cond_dim=cond_dim)


def tiny_denoiser(
    num_classes: int | None = 10, perturb: bool = True, seed: int = 0, **kwargs: Any
) -> Denoiser:
    """An untrained tiny denoiser on 1x8x8 images; ``perturb`` adds noise to every parameter so that the
    zero-initialised layers (output, residual branches) stop hiding the network and the label."""
    torch.manual_seed(seed)
    net = tiny_unet(COND_DIM if num_classes is not None else None)
    model = Denoiser(net, image_shape=(1, 8, 8), num_classes=num_classes, **kwargs)
    if perturb:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def digits_datamodule(batch_size: int = 16, **kwargs: Any) -> DiffusionDataModule:
    return DiffusionDataModule(Digits(), batch_size=batch_size, **kwargs)


def quiet_trainer(**kwargs: Any) -> pl.Trainer:
    """A CPU Trainer without logger, checkpoints, progress bar or model summary."""
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return pl.Trainer(**{**options, **kwargs})


def run_module(
    *args: str, cwd: Path = REPO, extra_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m lightning_diffusion ARGS`` in a subprocess: one thread, ``extra_path`` first."""
    path = [str(REPO)] if extra_path is None else [str(extra_path), str(REPO)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(
        [sys.executable, "-m", "lightning_diffusion", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )
