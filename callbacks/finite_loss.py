"""Stop a run whose training loss turns NaN or infinite, before a checkpoint stores the broken weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor

from lightning_diffusion.config import ConfigError

FINITE = 2**62  # the record's value while every loss so far was finite (no step is that late)


class TrainingDiverged(ConfigError):
    """The training loss became NaN or infinite: a setting (learning rate, precision) or the data is wrong."""


class FiniteLossGuard(Callback):
    """Raise ``TrainingDiverged`` naming the step and the likely causes once a training loss is not finite.

    Each step folds its loss into a record kept on the loss's device (the first step, counted from 1,
    whose loss was not finite), so training never waits for the device to report it. The host reads the
    record only where that costs nothing: at once on the CPU; on CUDA through a non-blocking copy read at
    a later step once its event has completed; and, on every device, before each checkpoint is written
    (the state is copied to the host there anyway), so the checkpoint written after the loss went
    non-finite is refused and ``last.ckpt`` keeps the last finite weights. Under DDP only that last
    check runs, by all ranks
    together (one rank stopping alone would leave the others waiting in a collective).
    """

    def __init__(self) -> None:
        self._record: Tensor | None = None
        self._copy: tuple[Tensor, torch.cuda.Event] | None = None  # pinned host buffer, its copy's event
        self._copying = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, Tensor):
            return
        if self._record is None or self._record.device != loss.device:
            self._record = torch.full((), FINITE, dtype=torch.long, device=loss.device)
        step = trainer.global_step
        not_finite = ~torch.isfinite(loss.detach()).all()
        self._record = torch.where(not_finite, torch.clamp(self._record, max=step), self._record)
        if trainer.world_size > 1:
            return  # ranks that stopped alone would leave the others waiting in a collective
        if loss.device.type == "cpu":
            self._stop_if_diverged(trainer, int(self._record))
        elif loss.device.type == "cuda":
            self._poll_cuda(trainer)

    def _poll_cuda(self, trainer: pl.Trainer) -> None:
        """Read the record copied at an earlier step if that copy is done, then start the next copy (into
        the same pinned host buffer, allocated once)."""
        if self._copy is None:
            self._copy = (torch.empty((), dtype=torch.long, pin_memory=True), torch.cuda.Event())
        host, done = self._copy
        if self._copying:
            if not done.query():
                return
            self._stop_if_diverged(trainer, int(host))
        host.copy_(self._record, non_blocking=True)
        done.record()
        self._copying = True

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Refuse to write a checkpoint once a loss was not finite (all ranks decide together)."""
        if self._record is None:
            return
        first = self._record
        if trainer.world_size > 1:
            first = trainer.strategy.reduce(first.clone(), reduce_op="min")
        self._stop_if_diverged(trainer, int(first))

    def _stop_if_diverged(self, trainer: pl.Trainer, step: int) -> None:
        if step != FINITE:
            raise TrainingDiverged(diverged_message(trainer, step))


def diverged_message(trainer: pl.Trainer, step: int) -> str:
    """What went wrong, where, what was kept, and the settings to change."""
    groups = [group for optimizer in trainer.optimizers for group in optimizer.param_groups]
    learning_rates = sorted({group["lr"] for group in groups})
    rate = ", ".join(f"{value:g}" for value in learning_rates) or "unknown"
    checkpoint = trainer.checkpoint_callback
    kept = "no checkpoint was written after it"
    if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath is not None:
        last = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        if last.is_file():
            kept = f"{last} keeps the weights of the last save before it"
    return (
        f"the training loss became NaN or infinite at step {step} (epoch {trainer.current_epoch}), so the "
        f"run stopped; {kept}. Likely causes: a learning rate too high for this model (now {rate}: lower "
        "model.init_args.lr or lengthen warmup_steps); reduced precision overflowing (trainer.precision is "
        f"{trainer.precision}: use bf16-mixed or 32-true); or non-finite values in the data (check the "
        "images the data module yields)."
    )
