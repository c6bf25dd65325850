"""The base every component derives from: a LightningModule that knows its kind and its spec."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning.pytorch as pl

from lightning_diffusion.config import Configurable
from lightning_diffusion.registry import CHECKPOINT_KEY


class Component(Configurable, pl.LightningModule):
    """A registered LightningModule whose checkpoints say what kind it is and how to rebuild it."""

    component_kind: ClassVar[str]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {"kind": self.component_kind, "spec": self.spec}
