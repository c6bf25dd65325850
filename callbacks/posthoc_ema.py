"""PostHocEMA: track power-function EMA profiles during training and snapshot them, so that the EMA length is
chosen after training (Karras et al. 2024, EDM2 sec. 3; the math is in ``lightning_diffusion.ema``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from lightning_diffusion.config import ConfigError
from lightning_diffusion.ema.snapshots import write_snapshot
from lightning_diffusion.ema.tracker import PowerEMA

log = logging.getLogger(__name__)
MIN_USEFUL_SNAPSHOTS = 4


class PostHocEMA(pl.Callback):
    """Tracks one power-function EMA of the component's parameters per σ_rel in ``sigma_rels`` (EDM2 eq. 3,
    default 0.05 and 0.10) after every optimizer step, on every rank (their weights are identical), and
    every ``every_n_steps`` steps (default: the run's expected steps / ``snapshots``, or once per epoch
    for a run bounded by time only) and at the end of training saves a snapshot of all of them into
    ``dirpath`` (default ``<default_root_dir>/posthoc_ema``) from global rank 0: atomically, weights only,
    with the component's kind and spec, the data record, the step and the profiles. The running averages
    are part of the callback's state in ``last.ckpt``, so a run resumed with ``--ckpt_path`` continues
    them exactly. Rebuild any length with ``lightning_diffusion.ema.reconstruct``."""

    def __init__(
        self,
        sigma_rels: Sequence[float] = (0.05, 0.10),
        every_n_steps: int | None = None,
        snapshots: int = 16,
        dirpath: str | None = None,
    ) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ConfigError(f"PostHocEMA every_n_steps must be at least 1 (or null), got {every_n_steps}.")
        if snapshots < 2:
            raise ConfigError(f"PostHocEMA snapshots must be at least 2, got {snapshots}.")
        self.sigma_rels = tuple(float(value) for value in sigma_rels)
        self.every_n_steps = every_n_steps
        self.snapshots = snapshots
        self.dirpath = dirpath
        self.tracker: PowerEMA | None = None
        self._restored: dict[str, Any] | None = None
        self._saved_step = 0
        self._written = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(sigma_rels=self.sigma_rels)

    def folder(self, trainer: pl.Trainer) -> Path:
        """Where the snapshots go."""
        return Path(self.dirpath or Path(trainer.default_root_dir) / "posthoc_ema")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not hasattr(pl_module, "component_kind"):
            raise ConfigError(
                f"PostHocEMA averages lightning-diffusion components; {type(pl_module).__name__} is none "
                "(derive it from lightning_diffusion.components.base.Component)."
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker = PowerEMA(pl_module, self.sigma_rels)
        if self._restored is not None:
            self.tracker.load_state_dict(self._restored)
            self._saved_step = self._restored.get("saved_step", self.tracker.step)
            self._restored = None
        if self.every_n_steps is None:
            self.every_n_steps = self._default_interval(trainer)

    def _default_interval(self, trainer: pl.Trainer) -> int:
        total = trainer.estimated_stepping_batches
        if math.isfinite(total):
            return max(1, math.ceil(total / self.snapshots))
        return max(1, int(trainer.num_training_batches) // trainer.accumulate_grad_batches)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.tracker is None or step == self.tracker.step:  # no optimizer step (gradient accumulation)
            return
        self.tracker.update(step)
        if step % self.every_n_steps == 0:
            self.save_snapshot(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save_snapshot(trainer, pl_module)
        if trainer.is_global_zero and self._written and self._written < MIN_USEFUL_SNAPSHOTS:
            log.warning(
                "PostHocEMA wrote %d snapshots in this run; few snapshots narrow the EMA lengths they can "
                "rebuild: set every_n_steps so that a run writes about 16.",
                self._written,
            )

    def save_snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        """Write the snapshot of the current step (once per step; global rank 0 writes)."""
        if self.tracker is None or self.tracker.step in (0, self._saved_step):
            return None
        self._saved_step = self.tracker.step
        if not trainer.is_global_zero:
            return None
        datamodule = getattr(trainer, "datamodule", None)
        data = dict(datamodule.hparams) if datamodule is not None else None
        component = {"kind": pl_module.component_kind, "spec": pl_module.spec}
        state = self.tracker.state_dict()
        parameters = set(self.tracker.names)
        buffers = {name: value for name, value in pl_module.state_dict().items() if name not in parameters}
        self._written += 1
        return write_snapshot(self.folder(trainer), self.tracker.step, component, data, state, buffers)

    def state_dict(self) -> dict[str, Any]:
        if self.tracker is None:
            return {} if self._restored is None else self._restored
        return {**self.tracker.state_dict(), "saved_step": self._saved_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict) or None
