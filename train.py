"""Train any lightning-diffusion component from YAML with Lightning's CLI.

    python train.py fit --config configs/digits/denoiser.yaml
    python train.py fit --config configs/digits/denoiser.yaml --trainer.max_epochs 5 --model.init_args.lr 1e-3
    python train.py fit --config configs/digits/denoiser.yaml --ckpt_path last      # resume
    python train.py fit --config configs/digits/denoiser.yaml --print_config

Checkpoints go to ``<trainer.default_root_dir>/checkpoints/`` (with ``last.ckpt``).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from callbacks.budget import TrainingBudget
from callbacks.finite_loss import FiniteLossGuard
from lightning_diffusion.checkpoint_io import use_safe_checkpoint_io
from lightning_diffusion.components import Component
from lightning_diffusion.config import ConfigError, did_you_mean, read_config
from lightning_diffusion.data import DiffusionDataModule
from lightning_diffusion.data.sources import DataSource
from lightning_diffusion.registry import check_component_name, discover, read_checkpoint
from lightning_diffusion.run_lock import ON_BUSY, run_lock
from lightning_diffusion.trainer import Trainer as DiffusionTrainer


def checkpoint_dir(default_root_dir: str | None) -> str:
    """Where checkpoints of a run live: ``<default_root_dir>/checkpoints``."""
    return str(Path(default_root_dir or ".") / "checkpoints")


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also writes ``last.ckpt`` on the batch where the run stops (``max_steps``,
    ``max_time``): when ``val_check_interval`` splits epochs, Lightning saves only after validation, so
    a stop between validations would leave older weights. Saving here, before fit ends, keeps the raw
    weights as the training state and the EMA weights as the model's (as every other save does)."""

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        steps_done = 0 < trainer.max_steps <= trainer.global_step
        if self.save_last and self.dirpath is not None and (trainer.should_stop or steps_done):
            last = Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
            trainer.save_checkpoint(last, weights_only=self.save_weights_only)


class DiffusionCLI(LightningCLI):
    """LightningCLI with a checkpoint callback under the run folder that always keeps ``last.ckpt``, a
    guard stopping a run whose loss turns non-finite, a report of the steps a time budget bought
    (``budget``), ``trainer.precision: auto`` (bf16 where the hardware computes it), and checkpoints
    written atomically and read back without unpickling code (``SafeCheckpointIO``)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(FiniteLossGuard, "finite_loss")
        parser.add_lightning_class_args(TrainingBudget, "budget")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:04d}-step{step:07d}",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.enable_version_counter": False,  # a resumed run updates last.ckpt itself
            }
        )
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=checkpoint_dir)
        parser.add_argument(
            "--on_busy",
            type=str,
            choices=ON_BUSY,
            default="fail",
            help="fit, when another run holds trainer.default_root_dir: wait for it to end, or fail at once",
        )

    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path last`` to the run's ``last.ckpt``, so that, as for an explicit path, the
        model is rebuilt from the checkpoint's hyperparameters (a frozen encoder from the spec it carries,
        not from its file); and read the checkpoint weights-only first, so one holding pickled code (or a
        damaged one) is refused with a ConfigError before LightningCLI reads it."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        if config.get("ckpt_path") == "last":
            last = Path(checkpoint_dir(config.trainer.default_root_dir)) / "last.ckpt"
            if last.is_file():
                config.ckpt_path = str(last)
        if config.get("ckpt_path") and Path(config.ckpt_path).is_file():
            read_checkpoint(config.ckpt_path)
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        use_safe_checkpoint_io(trainer)
        return trainer

    def before_fit(self) -> None:
        """Hold the run folder while fitting: one training per ``default_root_dir`` (its global rank 0,
        before the other ranks start; the lock is freed when the process ends, however it ends)."""
        self.folder_lock = ExitStack()
        self.folder_lock.enter_context(
            run_lock(
                self.trainer.default_root_dir,
                self.config[self.subcommand].on_busy,
                option="--trainer.default_root_dir",
                take=self.trainer.global_rank == 0,
            )
        )

    def after_fit(self) -> None:
        self.folder_lock.close()


class ConfiguredNames(NamedTuple):
    """The component and data source names a command line configures (``--model NAME``,
    ``--model.class_path NAME``, ``--data.init_args.source NAME`` or its ``class_path``, and ``model:`` /
    ``data.init_args.source`` in each ``--config`` file), so a typo is refused before jsonargparse reports
    it as a bad import path."""

    models: list[str]
    sources: list[str]


def check_source_name(name: str) -> None:
    """Refuse a bare data source name that is no DataSource, naming the closest and listing them all
    (a dotted path is left to the import)."""
    sources = sorted(cls.__name__ for cls in _subclasses(DataSource))
    if "." not in name and name not in sources:
        raise ConfigError(
            f"no data source is named {name!r}{did_you_mean(name, sources)}; the sources are: "
            f"{', '.join(sources)} (or a dotted class_path)."
        )


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


def _class_path(entry: Any) -> Any:
    return entry.get("class_path") if isinstance(entry, dict) else entry


def configured_names(args: list[str]) -> ConfiguredNames:
    """The names ``args`` configure, reading each ``--config`` file once (see ``ConfiguredNames``)."""
    models, sources = [], []
    for index, arg in enumerate(args):
        option, equals, value = arg.partition("=")
        if not equals:
            value = args[index + 1] if index + 1 < len(args) else ""
        is_file = Path(value).is_file()
        if option in ("--model", "--model.class_path") and value and not is_file:
            models.append(value)
        elif option in ("--data.init_args.source", "--data.init_args.source.class_path") and value:
            sources.append(value)
        elif option == "--config" and is_file:
            content = read_config(value)
            models.append(_class_path(content.get("model")))
            data = content.get("data")
            init_args = data.get("init_args") if isinstance(data, dict) else None
            if isinstance(init_args, dict):
                sources.append(_class_path(init_args.get("source")))
    named = [[name for name in names if isinstance(name, str)] for names in (models, sources)]
    return ConfiguredNames(*named)


def main(args: list[str] | None = None, run: bool = True) -> DiffusionCLI:
    """Build the CLI (importing every registered component first, so short class names resolve)."""
    discover()
    names = configured_names(sys.argv[1:] if args is None else args)
    for name in names.models:
        check_component_name(name)
    for name in names.sources:
        check_source_name(name)
    try:
        return DiffusionCLI(
            Component,
            DiffusionDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_class=DiffusionTrainer,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )
    except (ValueError, TypeError) as error:
        reason = _config_error_in(error)
        if reason is None:
            raise
        raise reason from None


def _config_error_in(error: BaseException) -> ConfigError | None:
    """Our ConfigError where jsonargparse wrapped it while instantiating a class (a multi-line ValueError
    around a component's or data module's own message), so it reaches the user as its one paragraph."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ConfigError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


if __name__ == "__main__":
    try:
        main()
    except ConfigError as error:
        sys.exit(f"error: {error}")
