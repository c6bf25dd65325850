"""GuidanceSweep: run the guidance sweep of ``evaluate.py`` during training, every N epochs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.loggers import WandbLogger

from callbacks.posthoc_ema import PostHocEMA
from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import FeatureInputs, build_features
from lightning_diffusion.registry import load_component
from lightning_diffusion.sweep import SweepContext, SweepSettings, get_role, load_models, run_sweep
from lightning_diffusion.sweep.models import averaged_checkpoint
from lightning_diffusion.sweep.prompts import data_prompts
from lightning_diffusion.sweep.wandb_logging import log_sweep_summary, wandb_row_logger


def posthoc_ema_of(trainer: pl.Trainer) -> PostHocEMA:
    """The trainer's ``PostHocEMA`` callback, from whose snapshots an EMA-length sweep rebuilds weights."""
    for callback in trainer.callbacks:
        if isinstance(callback, PostHocEMA):
            return callback
    raise ConfigError(
        "GuidanceSweep with ema_lengths sweeps EMA lengths rebuilt from post-hoc EMA snapshots, and this "
        "trainer has no PostHocEMA callback; add it (--config configs/trainer/posthoc_ema.yaml) or drop "
        "ema_lengths."
    )


def validated_model(trainer: pl.Trainer, pl_module: pl.LightningModule) -> pl.LightningModule:
    """The model validation used: the averaged copy of a ``WeightAveraging`` callback (EMA), else the
    module. Called after validation, when the callback has swapped the training weights back in, so the
    averaged copy holds the averaged weights whatever the order of the callbacks."""
    for callback in trainer.callbacks:
        averaged = (
            getattr(callback, "_average_model", None) if isinstance(callback, WeightAveraging) else None
        )
        if averaged is not None:
            return averaged.module
    return pl_module


class GuidanceSweep(pl.Callback):
    """Every ``every_n_epochs`` validations, sweep the model being trained with the same code as
    ``evaluate.py`` (DDP-sharded over the trainer's ranks) into ``<default_root_dir>/sweeps/epoch<E>/``
    and log the table, plots and grids to W&B. It samples with the weights validation uses: the averaged
    ones of the trainer's ``WeightAveraging`` callback (EMA) if there is one, wherever either callback is
    listed (it runs once validation is over and takes the averaged model itself). ``features`` and
    ``inception_weights`` choose the feature network as in
    ``evaluate.py`` (class accuracy comes from ``evaluator`` when given), built at construction so that a
    bad choice fails before training; ``settings`` take the fields of ``SweepSettings``. ``models`` gives
    the checkpoint path (a list for chains) of any other model role the methods need, by role name as
    ``evaluate.py``'s flags (``{contrastive: PATH, cascade: [BASE, UPSAMPLER]}``); ``classifier`` and
    ``guide`` are shorthands for two of them. Each is checked against the trained model's data (unless
    ``allow_cross_data``) before the first sample of each sweep. Samples are prompted as in ``evaluate.py``:
    with the prompt kind the model's condition parts and the methods call for, read from the trainer's
    data (class labels, or the data's captions for a text-conditional model). With ``ema_lengths`` in
    ``settings`` the periodic sweeps sample the validated weights as before, and at the end of training the
    sweep runs once more over those EMA lengths, rebuilt from the trainer's ``PostHocEMA`` snapshots, into
    ``<default_root_dir>/sweeps/posthoc_ema/``."""

    def __init__(
        self,
        evaluator: str | None = None,
        every_n_epochs: int = 10,
        classifier: str | None = None,
        guide: str | None = None,
        cache_dir: str = "runs/.reference_cache",
        settings: dict[str, Any] | None = None,
        features: str = "evaluator",
        inception_weights: str | None = None,
        models: dict[str, str | list[str]] | None = None,
        allow_cross_data: bool = False,
    ) -> None:
        self.paths = {"classifier": classifier, "guide": guide, **(models or {})}
        if "evaluator" in self.paths:
            raise ConfigError(
                "GuidanceSweep takes the evaluator as its own argument (evaluator: PATH), not in models."
            )
        for role in self.paths:
            get_role(role)
        loaded = None if evaluator is None else get_role("evaluator").load(evaluator, "cpu")
        self.evaluator_path = evaluator
        self.feature_inputs = FeatureInputs(loaded, evaluator, inception_weights)
        self.extractor = build_features(features, self.feature_inputs)
        self.allow_cross_data = allow_cross_data
        self.every_n_epochs = every_n_epochs
        self.cache_dir = cache_dir
        self.settings = SweepSettings(**{"num_samples": 200, **(settings or {})})
        self.settings.validate()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.settings.ema_lengths:
            posthoc_ema_of(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        out = Path(trainer.default_root_dir) / "sweeps" / f"epoch{trainer.current_epoch:04d}"
        settings = dataclasses.replace(self.settings, ema_lengths=None)
        self._sweep(trainer, validated_model(trainer, pl_module), pl_module.device, settings, out)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.settings.ema_lengths:
            return
        posthoc_ema = posthoc_ema_of(trainer)
        posthoc_ema.save_snapshot(trainer, pl_module)  # the last step's, whatever the callbacks' order
        trainer.strategy.barrier()
        folder = posthoc_ema.folder(trainer)
        first = self.settings.ema_lengths[0]
        model = load_component(averaged_checkpoint(folder, first), kind=pl_module.component_kind)
        out = Path(trainer.default_root_dir) / "sweeps" / "posthoc_ema"
        device = pl_module.device
        self._sweep(trainer, model.to(device), device, self.settings, out, snapshots=folder)

    def _sweep(
        self,
        trainer: pl.Trainer,
        model: pl.LightningModule,
        device: Any,
        settings: SweepSettings,
        out: Path,
        snapshots: Path | None = None,
    ) -> None:
        """Sweep ``model`` on ``device`` with ``settings`` into ``out`` (``snapshots``: its post-hoc EMA
        folder)."""
        evaluator = self.feature_inputs.evaluator
        if evaluator is not None:
            evaluator.to(device)
        datamodule = trainer.datamodule
        models = load_models(
            model,
            {**self.paths, "evaluator": self.evaluator_path},
            device,
            denoiser_data=dict(datamodule.hparams),
            allow_cross_data=self.allow_cross_data,
            loaded={"evaluator": evaluator},
            extractor=self.extractor,
        )
        if snapshots is not None:
            models.snapshots, models.ema = snapshots, settings.ema_lengths[0]
        wandb_runs = [logger.experiment for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        run = wandb_runs[0] if wandb_runs and trainer.is_global_zero else None
        split = settings.real_split
        prompts = data_prompts(models, datamodule, split, settings.plans())
        was_training = model.training
        model.eval()
        context = SweepContext(
            real_batches=lambda n: datamodule.real_batches(split, n),
            reference_id=datamodule.reference_id(),
            cache_dir=self.cache_dir,
            prompts=prompts,
            log_row=wandb_row_logger(run) if run is not None else None,
            progress=False,
        )
        rows = run_sweep(models, settings, out, context)
        model.train(was_training)
        if run is not None:
            log_sweep_summary(run, rows, out)
