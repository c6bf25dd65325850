"""How training runs write and read their checkpoints: atomically, and never unpickling code.

``SafeCheckpointIO`` is Lightning's ``TorchCheckpointIO`` with two changes: a save goes through
``atomic_write`` (a run killed mid-save leaves the previous ``last.ckpt`` whole), and a load (resuming
with ``--ckpt_path``) reads tensors and plain values only, refusing a checkpoint that holds pickled
objects with a ``ConfigError`` instead of running them. ``train.py`` installs it on every trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer

from lightning_diffusion.atomic import atomic_write
from lightning_diffusion.registry import read_checkpoint


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic saves (temporary file, fsync, rename) and weights-only loads with clear errors."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        """The checkpoint at ``path``, weights only whatever ``weights_only`` asks (our checkpoints hold
        no pickled objects, and one that does is refused)."""
        return read_checkpoint(path, "cpu" if map_location is None else map_location)


def use_safe_checkpoint_io(trainer: Trainer) -> None:
    """Make ``trainer`` save and load through ``SafeCheckpointIO``, unless it was configured with a
    checkpoint plugin of its own (which is kept)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = SafeCheckpointIO()
