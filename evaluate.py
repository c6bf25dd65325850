"""Guidance sweeps from checkpoints: diversity-quality curves for every method and scale.

    python evaluate.py --config configs/digits/sweep.yaml \
        --denoiser runs/digits/denoiser/checkpoints/last.ckpt \
        --evaluator runs/digits/evaluator/checkpoints/last.ckpt --out runs/digits/sweep
    python evaluate.py ... --methods '[cfg,classifier]' --classifier PATH --scales '[0,1,2,4]' \
        --num_samples 1000
    python evaluate.py ... --devices 2        # DDP through Lightning (CPU gloo here, GPUs elsewhere)
    python evaluate.py ... --features inception [--inception_weights PATH]   # FID/IS/PR as in papers
    python evaluate.py ... --methods '[cfg,cascade]' --cascade '[BASE16.ckpt,UPSAMPLER.ckpt]' --aug_level 0.1
    python evaluate.py --config configs/shapes/sweep.yaml --denoiser TEXT_DENOISER --evaluator EVAL \
        --contrastive CLIP --clip_scorer OTHER_CLIP --out runs/shapes/sweep   # the GLIDE comparison
    python evaluate.py --config configs/shapes/unclip_sweep.yaml --denoiser TEXT_DENOISER ... \
        --unclip '[PRIOR.ckpt,DECODER.ckpt]' --out runs/shapes/unclip_sweep   # unCLIP vs GLIDE

Writes sweep.json, sweep.csv, frontier.csv, curves.png and grid_<method>_s<scale>.png into --out (and with
--save_samples the samples as npz); a re-run with the same --out skips finished rows.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from lightning_diffusion.config import ConfigError, output_folder
from lightning_diffusion.sweep import SweepSettings


def add_flag(parser: ArgumentParser, name: str, default: bool, description: str) -> None:
    """A boolean option that works bare (``--save_samples``) and with a value (``--wandb false``)."""
    parser.add_argument(name, type=bool, nargs="?", const=True, default=default, help=description)


def build_parser() -> ArgumentParser:
    """The evaluate.py options: checkpoints, output folder, sweep settings, processes."""
    parser = ArgumentParser(description=__doc__.split("\n")[0], default_meta=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML with any of these options")
    parser.add_argument("--denoiser", type=str, required=True, help="denoiser checkpoint")
    parser.add_argument(
        "--features",
        type=str,
        default="evaluator",
        help="feature network of FID, IS and precision/recall, by its name in metrics.FEATURES: evaluator or "
        "inception (torch-fidelity's Inception-V3 as the reference FID; class accuracy then comes from "
        "--evaluator if given, else is null)",
    )
    parser.add_argument(
        "--evaluator", type=str | None, default=None, help="evaluator checkpoint (features, class accuracy)"
    )
    parser.add_argument(
        "--inception_weights",
        type=str | None,
        default=None,
        help="--features inception: a local copy of torch-fidelity's Inception-V3 weights (default: "
        "download them once into torch's hub cache)",
    )
    parser.add_argument(
        "--classifier", type=str | None, default=None, help="noisy classifier (method classifier)"
    )
    parser.add_argument(
        "--guide", type=str | None, default=None, help="weaker denoiser (method autoguidance)"
    )
    parser.add_argument(
        "--contrastive", type=str | None, default=None, help="noise-aware contrastive encoder (method clip)"
    )
    parser.add_argument(
        "--clip_scorer",
        type=str | None,
        default=None,
        help="contrastive encoder for the CLIP score, trained apart from the guiding one (another seed)",
    )
    parser.add_argument(
        "--captions",
        type=list[str] | str | None,
        default=None,
        help="captions to sample (a list, or a text file with one per line); default: the data's",
    )
    parser.add_argument(
        "--compose",
        type=str | None,
        default=None,
        help="sample composed prompts from the Shapes data's two-object scenes (method composed_cfg): 'and' "
        "(object A AND object B) or 'not' (A NOT B); other methods follow each prompt's primary caption",
    )
    parser.add_argument(
        "--source",
        type=dict | None,
        default=None,
        help="data source (class_path/init_args) replacing the denoiser's for real images and captions, "
        "e.g. held-out shapes combinations",
    )
    parser.add_argument(
        "--cascade",
        type=list[str] | None,
        default=None,
        help="method cascade: base denoiser and upsampler checkpoints, lowest resolution first",
    )
    parser.add_argument(
        "--unclip",
        type=list[str] | None,
        default=None,
        help="method unclip: prior, unCLIP decoder and (optionally) upsampler checkpoints",
    )
    parser.add_argument("--out", type=str, required=True, help="output folder")
    parser.add_class_arguments(SweepSettings, nested_key=None, as_group=False, skip={"save_samples"})
    add_flag(parser, "--save_samples", False, "also write every sample as npz (samples_<row>_s<scale>.npz)")
    parser.add_argument("--devices", type=int, default=1, help="processes (DDP when > 1)")
    parser.add_argument("--accelerator", type=str, default="auto", help="cpu, gpu or auto")
    add_flag(parser, "--compile", False, "torch.compile the denoiser's network")
    parser.add_argument("--compile_mode", type=str, default="default", help="torch.compile mode")
    parser.add_argument("--cache_dir", type=str, default="runs/.reference_cache", help="real-feature cache")
    add_flag(parser, "--wandb", True, "log to W&B (offline without an API key)")
    parser.add_argument("--project", type=str, default="lightning-diffusion", help="W&B project")
    return parser


def sweep_settings(args: Any) -> SweepSettings:
    """The validated sweep settings among the parsed options (the sampler spec refuses an unknown sampler;
    the feature network's name is checked here too, before any process starts)."""
    from lightning_diffusion.metrics.features import feature_builder

    feature_builder(args.features)
    values = args.as_dict()  # nested options (the sampler spec) as plain mappings
    settings = SweepSettings(**{name: values[name] for name in SweepSettings.__dataclass_fields__})
    settings.validate()
    return settings


def _load_captions(captions: list[str] | str) -> list[str]:
    """A caption list as given, or read from a text file with one caption per line."""
    if isinstance(captions, list):
        return captions
    path = Path(captions)
    if not path.is_file():
        raise ConfigError(
            f"--captions {captions!r} is neither a list nor a text file; pass '[a, b]' or a path."
        )
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _check_scorer(args: Any, contrastive: Any, scorer: Any) -> None:
    """Refuse scoring with the guiding encoder itself: CLIP guidance would be graded by its own model."""
    if contrastive is None or scorer is None:
        return
    from lightning_diffusion.components.base import same_weights

    same_file = Path(args.contrastive).resolve() == Path(args.clip_scorer).resolve()
    if same_file or same_weights(contrastive, scorer):
        raise ConfigError(
            "--clip_scorer is the guiding contrastive encoder (--contrastive); the CLIP score must come from "
            "an encoder trained separately (e.g. the same config with another seed_everything)."
        )


def build_prompts(args: Any, models: Any, datamodule: Any, settings: SweepSettings) -> Any:
    """Uniform class labels, or (text models, CLIP guidance, unCLIP, --captions) captions with their
    labels and attributes when they come from the data."""
    from lightning_diffusion.sweep.prompts import Prompts, composed_shape_prompts

    text = (
        getattr(models.denoiser, "text_encoder", None) is not None
        or args.captions is not None
        or args.compose is not None
        or any(row.sweep_method.prompts == ("caption",) for row in settings.rows())
    )
    if not text:
        if models.num_classes is None:
            raise ConfigError(
                "cannot tell the number of classes to sample: pass an --evaluator or a class-conditional "
                "model."
            )
        return Prompts(num_classes=models.num_classes)
    if args.captions is not None:
        if args.compose is not None:
            raise ConfigError("--compose builds its prompts from the data: pass it or --captions, not both.")
        return Prompts(captions=_load_captions(args.captions))
    if not datamodule.has_captions:
        raise ConfigError(
            "the data has no captions to sample; pass --captions or use a captioned source "
            "(Shapes, Captioned)."
        )
    split = settings.real_split
    attributes = datamodule.attributes(split) if datamodule.attribute_values is not None else None
    if args.compose is not None:
        if attributes is None:
            raise ConfigError("--compose builds prompts from Shapes scenes; this data has no attributes.")
        return composed_shape_prompts(attributes, args.compose)
    return Prompts(
        captions=datamodule.captions(split), labels=datamodule.labels(split), attributes=attributes
    )


def load_models(args: Any, device: Any) -> tuple[Any, Any]:
    """The sweep's components on ``device`` and the data module of its real images and captions (the
    denoiser's, with ``--source`` replacing its source)."""
    from lightning_diffusion.data import DiffusionDataModule
    from lightning_diffusion.metrics import FeatureInputs, build_features
    from lightning_diffusion.registry import load_component, read_checkpoint
    from lightning_diffusion.sweep import SweepModels

    denoiser = load_component(args.denoiser, kind="denoiser", map_location=device)
    hparams = read_checkpoint(args.denoiser).get("datamodule_hyper_parameters")
    if hparams is None:
        raise ConfigError(
            f"{args.denoiser} does not record the data it was trained on; cannot pick real images."
        )
    if args.source is not None:
        hparams = {**hparams, "source": args.source}

    def optional(path: str | None, kind: str) -> Any:
        return None if path is None else load_component(path, kind=kind, map_location=device)

    evaluator = optional(args.evaluator, "evaluator")
    features = FeatureInputs(evaluator, args.evaluator, args.inception_weights)
    extractor = build_features(args.features, features)
    num_classes = getattr(evaluator, "num_classes", None)
    classifier = optional(args.classifier, "noisy_classifier")
    guide = optional(args.guide, "denoiser")
    contrastive = optional(args.contrastive, "contrastive_encoder")
    scorer = optional(args.clip_scorer, "contrastive_encoder")
    _check_scorer(args, contrastive, scorer)
    num_classes = num_classes or denoiser.num_classes or getattr(classifier, "num_classes", None)
    attribute_evaluator = evaluator if getattr(evaluator, "attribute_sizes", None) else None
    cascade = None
    if args.cascade is not None:
        from lightning_diffusion.pipeline import Cascade

        cascade = Cascade.from_checkpoints(args.cascade, map_location=device)
    unclip = None
    if args.unclip is not None:
        from lightning_diffusion.pipeline import Unclip

        unclip = Unclip.from_checkpoints(args.unclip, map_location=device)
    models = SweepModels(
        denoiser,
        extractor,
        classifier,
        guide,
        num_classes,
        contrastive,
        scorer,
        attribute_evaluator,
        cascade,
        unclip,
        features.evaluator_features,
    )
    return models, DiffusionDataModule.from_hparams(hparams)


def start_wandb(args: Any, settings: SweepSettings) -> Any:
    """A W&B run in the output folder, offline unless an API key is configured."""
    import wandb

    from lightning_diffusion.loggers import wandb_mode

    return wandb.init(
        project=args.project,
        dir=args.out,
        mode=wandb_mode(),
        job_type="sweep",
        config={
            **dataclasses.asdict(settings),
            **{
                key: args[key]
                for key in (
                    "denoiser",
                    "features",
                    "evaluator",
                    "inception_weights",
                    "contrastive",
                    "clip_scorer",
                    "source",
                    "cascade",
                    "unclip",
                )
            },
        },
    )


def show_library_log() -> None:
    """Print the library's INFO messages, e.g. whether the reference features came from the cache."""
    logger = logging.getLogger("lightning_diffusion")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
    logger.setLevel(logging.INFO)


def run(args: Any) -> list[dict[str, Any]]:
    """Launch the processes (Lightning Fabric), load the components and run the sweep on every rank."""
    import torch
    from lightning.fabric import Fabric

    from lightning_diffusion.sweep import run_sweep
    from lightning_diffusion.sweep.wandb_logging import log_sweep_summary, wandb_row_logger

    settings = sweep_settings(args)
    if args.devices < 1:
        raise ConfigError(f"--devices must be at least 1, got {args.devices}.")
    out = output_folder(args.out)
    try:
        fabric = Fabric(
            accelerator=args.accelerator, devices=args.devices, strategy="ddp" if args.devices > 1 else "auto"
        )
    except (ImportError, ValueError, RuntimeError) as error:  # Lightning's MisconfigurationException too
        raise ConfigError(
            f"--accelerator {args.accelerator!r} with --devices {args.devices} cannot start here ({error}); "
            "use cpu, gpu or auto, and no more devices than the machine has."
        ) from None
    fabric.launch()
    if fabric.device.type == "cpu" and args.devices > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.devices))
    show_library_log()
    models, datamodule = load_models(args, fabric.device)
    if args.compile:
        from lightning_diffusion.compilation import compile_networks

        compile_networks(models.denoiser, args.compile_mode)
    out.mkdir(parents=True, exist_ok=True)
    wandb_run = start_wandb(args, settings) if args.wandb and fabric.global_rank == 0 else None
    rows = run_sweep(
        models,
        settings,
        args.out,
        real_batches=lambda n: datamodule.real_batches(settings.real_split, n),
        reference_id=datamodule.reference_id(),
        cache_dir=args.cache_dir,
        log_row=wandb_row_logger(wandb_run) if wandb_run is not None else None,
        prompts=build_prompts(args, models, datamodule, settings),
    )
    if wandb_run is not None:
        log_sweep_summary(wandb_run, rows, Path(args.out))
        wandb_run.finish()
    if fabric.global_rank == 0:
        print(f"sweep table: {Path(args.out) / 'sweep.csv'}; curves: {Path(args.out) / 'curves.png'}")
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ConfigError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
