"""SampleGrid: every N epochs, a grid of samples (rows = classes, columns = guidance scales)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger

from lightning_diffusion.diffusion import SamplerSpec
from lightning_diffusion.sweep.grids import class_scale_samples, grid_image, save_grid


class SampleGrid(pl.Callback):
    """Samples one image per class and scale at the end of every ``every_n_epochs``-th validation, saves
    it as ``<default_root_dir>/samples/epoch<E>.png`` and logs it to W&B. It samples with the weights
    validation uses, so list it before the EMA callback (which swaps its weights in for validation).
    ``sampler`` is a spec (in YAML ``sampler: {name: ddim, steps: 50}``) or a solver name."""

    def __init__(
        self,
        every_n_epochs: int = 10,
        scales: Sequence[float] = (0.0, 1.0, 3.0),
        max_classes: int = 10,
        sampler: SamplerSpec | str = "ddim",
        seed: int = 0,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.scales = list(scales)
        self.max_classes = max_classes
        self.sampler, self.seed = SamplerSpec.of(sampler), seed

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if not trainer.is_global_zero or getattr(pl_module, "num_classes", None) is None:
            return
        classes = range(min(pl_module.num_classes, self.max_classes))
        was_training = pl_module.training
        pl_module.eval()
        samples = class_scale_samples(pl_module, classes, self.scales, sampler=self.sampler, seed=self.seed)
        pl_module.train(was_training)
        image = grid_image(samples)
        path = save_grid(
            image, Path(trainer.default_root_dir) / "samples" / f"epoch{trainer.current_epoch:04d}.png"
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                caption = "rows: classes, columns: s = " + ", ".join(f"{s:g}" for s in self.scales)
                logger.log_image("samples/grid", [str(path)], step=trainer.global_step, caption=[caption])
