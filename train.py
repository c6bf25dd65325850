"""Train any lightning-diffusion component from YAML with Lightning's CLI.

    python train.py fit --config configs/digits/denoiser.yaml
    python train.py fit --config configs/digits/denoiser.yaml --trainer.max_epochs 5 --model.init_args.lr 1e-3
    python train.py fit --config configs/digits/denoiser.yaml --ckpt_path last      # resume
    python train.py fit --config configs/digits/denoiser.yaml --print_config

Checkpoints go to ``<trainer.default_root_dir>/checkpoints/`` (with ``last.ckpt``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from callbacks.finite_loss import FiniteLossGuard
from lightning_diffusion.checkpoint_io import use_safe_checkpoint_io
from lightning_diffusion.components import Component
from lightning_diffusion.config import ConfigError
from lightning_diffusion.data import DiffusionDataModule
from lightning_diffusion.registry import check_component_name, discover, read_checkpoint


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
    guard stopping a run whose loss turns non-finite, and checkpoints written atomically and read back
    without unpickling code (``SafeCheckpointIO``)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(FiniteLossGuard, "finite_loss")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:04d}-step{step:07d}",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.enable_version_counter": False,  # a resumed run updates last.ckpt itself
            }
        )
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=checkpoint_dir)

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


def configured_models(args: list[str]) -> list[str]:
    """The component names a command line configures (``--model NAME``, ``--model.class_path NAME``, and
    ``model:`` in each ``--config`` file), so a typo is refused before jsonargparse reports it as a bad
    import path."""
    names = []
    for index, arg in enumerate(args):
        option, equals, value = arg.partition("=")
        if not equals:
            value = args[index + 1] if index + 1 < len(args) else ""
        is_file = Path(value).is_file()
        if option in ("--model", "--model.class_path") and value and not is_file:
            names.append(value)
        elif option == "--config" and is_file:
            content = yaml.safe_load(Path(value).read_text())
            model = content.get("model") if isinstance(content, dict) else None
            names.append(model.get("class_path") if isinstance(model, dict) else model)
    return [name for name in names if isinstance(name, str)]


def main(args: list[str] | None = None, run: bool = True) -> DiffusionCLI:
    """Build the CLI (importing every registered component first, so short class names resolve)."""
    discover()
    for name in configured_models(sys.argv[1:] if args is None else args):
        check_component_name(name)
    return DiffusionCLI(
        Component,
        DiffusionDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    try:
        main()
    except ConfigError as error:
        sys.exit(f"error: {error}")
