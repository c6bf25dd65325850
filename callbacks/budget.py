"""TrainingBudget: end every run with the steps it reached, and warn when a time budget bought too few."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, Timer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_diffusion.budget import (
    CHECKPOINT_KEY,
    BudgetRecord,
    budget_report,
    likely_causes,
    min_steps_for,
)


def budget_timer(trainer: pl.Trainer) -> Timer | None:
    """The Timer callback ``max_time`` installs, or None for a run without a time budget."""
    timers = [callback for callback in trainer.callbacks if isinstance(callback, Timer)]
    return next((timer for timer in timers if timer._duration is not None), None)


class TrainingBudget(Callback):
    """At the end of a run on a time budget (``--trainer.max_time``), report the optimizer steps reached;
    when the budget ran out before ``min_steps`` (default: the recipe's warm-up or a few hundred steps,
    ``lightning_diffusion.budget.min_steps_for``), warn with the likely causes (precision, threads, a busy
    machine) and what to do. Checkpoints record the same, so sampling from one warns too."""

    def __init__(self, min_steps: int | None = None) -> None:
        if min_steps is not None and min_steps < 0:
            raise ValueError(f"budget.min_steps must be 0 or more, got {min_steps}")
        self.min_steps = min_steps

    def record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> BudgetRecord | None:
        """Where the run stands against its budget now; None without a time budget."""
        timer = budget_timer(trainer)
        if timer is None:
            return None
        remaining = timer.time_remaining()
        return BudgetRecord(
            steps=trainer.global_step,
            min_steps=min_steps_for(pl_module.hparams, self.min_steps),
            stopped_by_time=remaining is not None and remaining <= 0,
        )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        record = self.record(trainer, pl_module)
        if record is not None:
            checkpoint[CHECKPOINT_KEY] = record.as_dict()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = self.record(trainer, pl_module)
        if record is None:
            return
        on_cpu = trainer.strategy.root_device.type == "cpu"
        causes = likely_causes(str(trainer.precision), on_cpu, trainer.world_size) if record.too_few else []
        timer = budget_timer(trainer)  # a stopped run: its budget bought the steps, not the validation after
        seconds = timer._duration if record.stopped_by_time else timer.time_elapsed()
        report = budget_report(record, seconds, causes)
        if record.too_few:
            rank_zero_warn(report)
        else:
            rank_zero_info(report)
