"""Guidance sweeps from checkpoints: diversity-quality curves for every method and scale.

    python evaluate.py --config configs/digits/sweep.yaml \
        --denoiser runs/digits/denoiser/checkpoints/last.ckpt \
        --evaluator runs/digits/evaluator/checkpoints/last.ckpt --out runs/digits/sweep
    python evaluate.py ... --methods '[cfg,classifier]' --classifier PATH --scales '[0,1,2,4]' \
        --num_samples 1000
    python evaluate.py ... --devices 2        # DDP through Lightning (CPU gloo here, GPUs elsewhere)
    python evaluate.py ... --features inception [--feature_weights PATH]   # FID/IS/PR as in papers
    python evaluate.py ... --features dinov2 [--feature_weights PATH]      # FD_DINOv2 in the fid column
    python evaluate.py ... --features clip [--feature_weights PATH]        # CMMD in the cmmd column
    python evaluate.py ... --methods '[cfg,cascade]' --cascade '[BASE16.ckpt,UPSAMPLER.ckpt]' --aug_level 0.1
    python evaluate.py --config configs/shapes/sweep.yaml --denoiser TEXT_DENOISER --evaluator EVAL \
        --contrastive CLIP --clip_scorer OTHER_CLIP --out runs/shapes/sweep   # the GLIDE comparison
    python evaluate.py --config configs/shapes/unclip_sweep.yaml --denoiser TEXT_DENOISER ... \
        --unclip '[PRIOR.ckpt,DECODER.ckpt]' --out runs/shapes/unclip_sweep   # unCLIP vs GLIDE
    python evaluate.py ... --seed_sets 3 --bootstrap 1000   # mean/sd/min over 3 noise sets, 95 % intervals
    python evaluate.py ... --search --search_target 0.95      # successive halving over the scales

Writes sweep.json, sweep.csv, frontier.csv, curves.png and grid_<method>_s<scale>.png into --out (and with
--save_samples the samples as npz; with --bootstrap the per-sample features that `python -m
lightning_diffusion compare` reads; with --search each round's sweep in round<r>/ and the result in
search.json and search.csv); a re-run with the same --out skips finished rows. The model flags
(--evaluator, --classifier, --guide, ...) come from the sweep's role registry (sweep/roles.py). A setting
of a --config file that no row uses once the command line narrowed the rows (--methods) is dropped; one
typed on the command line is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from lightning_diffusion.config import ConfigError, config_paths, output_folder, read_config, writable_folder
from lightning_diffusion.run_lock import ON_BUSY, run_lock
from lightning_diffusion.sweep import SweepSettings, registered_roles

RENAMED = {"--steps": "--sampler.steps", "--eta": "--sampler.eta"}  # flags from before the sampler spec


def add_flag(parser: ArgumentParser, name: str, default: bool, description: str) -> None:
    """A boolean option that works bare (``--save_samples``) and with a value (``--wandb false``)."""
    parser.add_argument(name, type=bool, nargs="?", const=True, default=default, help=description)


def build_parser() -> ArgumentParser:
    """The evaluate.py options: checkpoints, output folder, sweep settings, processes."""
    parser = ArgumentParser(description=__doc__.split("\n")[0], default_meta=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML with any of these options")
    parser.add_argument(
        "--denoiser",
        type=str,
        required=True,
        help="denoiser checkpoint, or a folder of post-hoc EMA snapshots (callbacks.PostHocEMA) with "
        "--ema_lengths",
    )
    parser.add_argument(
        "--features",
        type=str,
        default="evaluator",
        help="feature network of the feature metrics (FID, FID∞, KID, CMMD, IS, precision/recall, ...), "
        "by its name in metrics.FEATURES: evaluator, inception (torch-fidelity's Inception-V3 as the "
        "reference FID), dinov2 (DINOv2 ViT-L/14 as dgm-eval: the fid column is FD_DINOv2) or clip (CLIP "
        "ViT-L/14@336: the cmmd column is CMMD); class accuracy comes from --evaluator if given, else is "
        "null; IS means nothing under dinov2 and clip (no class logits: it reads 1)",
    )
    for role in registered_roles():
        kind = list[str] | None if role.chain else str | None
        parser.add_argument(role.flag, type=kind, default=None, help=f"{role.help} ({role.kind})")
    parser.add_argument(
        "--guide_ema_length",
        type=float | None,
        default=None,
        help="--guide as a folder of post-hoc EMA snapshots: the EMA length sigma_rel its weights are "
        "rebuilt at",
    )
    add_flag(
        parser,
        "--allow_cross_data",
        False,
        "combine models trained on different data on purpose (e.g. an evaluator of a superset of the "
        "classes); recorded in the run config",
    )
    parser.add_argument(
        "--feature_weights",
        "--inception_weights",
        type=str | None,
        default=None,
        help="a local weights file of the --features network: torch-fidelity's Inception-V3 weights, or "
        "timm's model.safetensors of DINOv2/CLIP (default: download them once into torch's hub cache or "
        "the Hugging Face cache); --inception_weights is the same option",
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
    parser.add_argument("--out", type=str, required=True, help="output folder")
    parser.add_argument(
        "--on_busy",
        type=str,
        choices=ON_BUSY,
        default="fail",
        help="when another run holds --out: wait for it, then add this run's rows, or fail at once",
    )
    parser.add_class_arguments(
        SweepSettings, nested_key=None, as_group=False, skip={"save_samples", "search"}
    )
    add_flag(parser, "--save_samples", False, "also write every sample as npz (samples_<row>_s<scale>.npz)")
    add_flag(
        parser,
        "--search",
        False,
        "search each row's scales by successive halving for the best --search_metric (default fid) at class "
        "accuracy >= --search_target (default 0.95) instead of sampling the full grid (search.csv)",
    )
    parser.add_argument("--devices", type=int, default=1, help="processes (DDP when > 1)")
    parser.add_argument("--accelerator", type=str, default="auto", help="cpu, gpu or auto")
    add_flag(parser, "--compile", False, "torch.compile the denoiser's network")
    parser.add_argument("--compile_mode", type=str, default="default", help="torch.compile mode")
    parser.add_argument("--cache_dir", type=str, default="runs/.reference_cache", help="real-feature cache")
    add_flag(parser, "--wandb", True, "log to W&B (offline without an API key)")
    parser.add_argument("--project", type=str, default="lightning-diffusion", help="W&B project")
    return parser


def refuse_renamed(argv: Sequence[str]) -> None:
    """Answer a flag from before the sampler spec (--steps, --eta, --sampler NAME) with its new spelling."""
    for index, token in enumerate(argv):
        flag, equals, value = token.partition("=")
        if not equals:
            value = argv[index + 1] if index + 1 < len(argv) else "VALUE"
        if flag in RENAMED:
            raise ConfigError(
                f"{flag} is now part of the sampler spec: use {RENAMED[flag]} {value} (in YAML, "
                f"sampler: {{{RENAMED[flag].split('.')[1]}: {value}}})."
            )
        if flag == "--sampler" and not value.lstrip().startswith("{") and not Path(value).is_file():
            raise ConfigError(
                f"--sampler is now the sampler spec (name, steps, eta, grid, ...): use --sampler.name "
                f"{value} (in YAML, sampler: {{name: {value}}})."
            )


def _config_arguments(argv: Sequence[str]) -> list[str]:
    """The --config options of ``argv`` (with their values), in order."""
    found: list[str] = []
    index = 0
    while index < len(argv):
        flag, equals, _ = argv[index].partition("=")
        taken = 1 if equals else 2
        if len(flag) >= len("--conf") and "--config".startswith(flag):
            found += argv[index : index + taken]
        else:
            taken = 1
        index += taken
    return found


def typed_settings(parser: ArgumentParser, argv: Sequence[str], args: Any) -> set[str]:
    """The sweep settings the command line set, as opposed to a --config file or the defaults: those whose
    flag it names (``--interval``, ``--sampler.steps``), even with the config's own value, and those whose
    value differs from the one parsed from the --config files alone (abbreviated flags)."""
    files = parser.parse_args([*_config_arguments(argv), "--denoiser", args.denoiser, "--out", args.out])
    given, configured = args.as_dict(), files.as_dict()
    named = {arg[2:].partition("=")[0].split(".")[0] for arg in argv if arg.startswith("--")}
    fields = SweepSettings.__dataclass_fields__
    return {name for name in fields if name in named or given[name] != configured[name]}


def sweep_settings(args: Any, typed: Collection[str] | None = None) -> SweepSettings:
    """The validated sweep settings among the parsed options (the sampler spec refuses an unknown sampler;
    the feature network's name is checked here too, before any process starts). With ``typed`` (the
    settings the user typed), values from a --config file that no row uses are dropped, not refused."""
    from lightning_diffusion.metrics.features import feature_builder

    feature_builder(args.features)
    values = args.as_dict()  # nested options (the sampler spec) as plain mappings
    settings = SweepSettings(**{name: values[name] for name in SweepSettings.__dataclass_fields__})
    if typed is not None:
        settings = settings.without_unused(typed)
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


def build_prompts(args: Any, models: Any, datamodule: Any, settings: SweepSettings) -> Any:
    """The captions of --captions, composed prompts from the data's Shapes scenes (--compose), else the
    prompt kind the denoiser's condition parts and the rows call for, read from the data (with their
    labels and attributes where the data has them): see ``sweep/prompt_kinds.py``."""
    from lightning_diffusion.sweep.prompts import Prompts, composed_shape_prompts, data_prompts

    if args.captions is not None:
        if args.compose is not None:
            raise ConfigError("--compose builds its prompts from the data: pass it or --captions, not both.")
        return Prompts(captions=_load_captions(args.captions))
    asked = None if args.compose is None else "caption"
    prompts = data_prompts(models, datamodule, settings.real_split, settings.plans(), asked)
    if args.compose is None:
        return prompts
    if prompts.attributes is None:
        raise ConfigError("--compose builds prompts from Shapes scenes; this data has no attributes.")
    return composed_shape_prompts(prompts.attributes, args.compose)


def check_snapshot_inputs(args: Any) -> None:
    """Refuse, before the processes start, EMA lengths without snapshots and snapshots without lengths (of
    the denoiser: --ema_lengths; of the guide: --guide_ema_length)."""
    from lightning_diffusion.ema.reconstruct import check_lengths
    from lightning_diffusion.ema.snapshots import is_snapshot_folder

    if is_snapshot_folder(args.denoiser) and not args.ema_lengths:
        raise ConfigError(
            f"--denoiser {args.denoiser} is a folder of post-hoc EMA snapshots; choose the EMA lengths to "
            "rebuild and sweep with --ema_lengths '[0.05, 0.1]', or pass a checkpoint file."
        )
    if args.ema_lengths and not is_snapshot_folder(args.denoiser):
        check_lengths(None, args.ema_lengths, args.denoiser)
    guide_folder = args.guide is not None and is_snapshot_folder(args.guide)
    if guide_folder != (args.guide_ema_length is not None):
        raise ConfigError(
            "--guide as a folder of post-hoc EMA snapshots needs its EMA length, --guide_ema_length "
            "SIGMA_REL (e.g. 0.05), and --guide_ema_length needs such a folder as --guide; got --guide "
            f"{args.guide} and --guide_ema_length {args.guide_ema_length}."
        )


def sweep_models(args: Any, device: Any) -> tuple[Any, Any]:
    """The sweep's models on ``device`` (the denoiser, and each role given a checkpoint, loaded by the
    sweep's ``load_models``) and the data module of its real images and captions (the denoiser's, with
    ``--source`` replacing its source)."""
    from lightning_diffusion.compatibility import recorded_data
    from lightning_diffusion.data import DiffusionDataModule
    from lightning_diffusion.registry import load_component
    from lightning_diffusion.sweep import load_models
    from lightning_diffusion.sweep.models import averaged_checkpoint

    snapshots = args.denoiser if args.ema_lengths else None  # a snapshot folder (check_snapshot_inputs)
    checkpoint = args.denoiser if snapshots is None else averaged_checkpoint(snapshots, args.ema_lengths[0])
    paths = {role.name: args[role.name] for role in registered_roles()}
    if args.guide_ema_length is not None:
        paths["guide"] = str(averaged_checkpoint(args.guide, args.guide_ema_length))
    denoiser = load_component(checkpoint, kind="denoiser", map_location=device)
    trained_on = recorded_data(checkpoint)
    if trained_on is None:
        raise ConfigError(
            f"{args.denoiser} does not record the data it was trained on; cannot pick real images."
        )
    models = load_models(
        denoiser,
        paths,
        device,
        features=args.features,
        inception_weights=args.feature_weights,
        denoiser_path=args.denoiser,
        denoiser_data=trained_on,
        allow_cross_data=args.allow_cross_data,
    )
    models.snapshots, models.ema = snapshots, args.ema_lengths[0] if snapshots is not None else None
    hparams = trained_on if args.source is None else {**trained_on, "source": args.source}
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
                    "feature_weights",
                    "source",
                    "allow_cross_data",
                    "guide_ema_length",
                )
            },
            **{role.name: args[role.name] for role in registered_roles()},  # every role's checkpoint path(s)
        },
    )


def show_library_log() -> None:
    """Print the library's INFO messages, e.g. whether the reference features came from the cache."""
    logger = logging.getLogger("lightning_diffusion")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
    logger.setLevel(logging.INFO)


def run(args: Any, typed: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Launch the processes (Lightning Fabric), load the components and run the sweep on every rank;
    ``typed``: the settings typed on the command line (None: all of them count as typed)."""
    import torch
    from lightning.fabric import Fabric

    from lightning_diffusion.sweep import SweepContext, run_sweep
    from lightning_diffusion.sweep.wandb_logging import log_sweep_summary, wandb_row_logger

    settings = sweep_settings(args, typed)
    check_snapshot_inputs(args)
    if args.devices < 1:
        raise ConfigError(f"--devices must be at least 1, got {args.devices}.")
    out = output_folder(args.out)
    writable_folder(args.cache_dir, "--cache_dir")  # made when the first reference is cached
    try:
        fabric = Fabric(
            accelerator=args.accelerator, devices=args.devices, strategy="ddp" if args.devices > 1 else "auto"
        )
    except (ImportError, ValueError, RuntimeError) as error:  # Lightning's MisconfigurationException too
        raise ConfigError(
            f"--accelerator {args.accelerator!r} with --devices {args.devices} cannot start here ({error}); "
            "use cpu, gpu or auto, and no more devices than the machine has."
        ) from None
    with run_lock(out, args.on_busy, take=fabric.global_rank == 0):  # rank 0 of the run, before launch
        fabric.launch()
        if fabric.device.type == "cpu" and args.devices > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.devices))
        show_library_log()
        models, datamodule = sweep_models(args, fabric.device)
        if args.compile:
            from lightning_diffusion.compilation import compile_networks

            compile_networks(models.denoiser, args.compile_mode)
        wandb_run = start_wandb(args, settings) if args.wandb and fabric.global_rank == 0 else None
        context = SweepContext(
            real_batches=lambda n: datamodule.real_batches(settings.real_split, n),
            reference_id=datamodule.reference_id(),
            cache_dir=args.cache_dir,
            prompts=build_prompts(args, models, datamodule, settings),
            log_row=wandb_row_logger(wandb_run) if wandb_run is not None else None,
        )
        rows = run_sweep(models, settings, args.out, context)
        if wandb_run is not None:
            log_sweep_summary(wandb_run, rows, Path(args.out))
            wandb_run.finish()
        if fabric.global_rank == 0:
            table = Path(args.out) / ("search.csv" if settings.search else "sweep.csv")
            print(f"sweep table: {table}; curves: {Path(args.out) / 'curves.png'}")
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    argv = sys.argv[1:] if argv is None else argv
    try:
        for path in config_paths(argv):
            read_config(path)  # a config that is not UTF-8, YAML or a mapping is named before parsing
        refuse_renamed(argv)
        parser = build_parser()
        args = parser.parse_args(argv)
        return run(args, typed_settings(parser, argv, args))
    except ConfigError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
