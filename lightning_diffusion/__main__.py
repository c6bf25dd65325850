"""``python -m lightning_diffusion``: list components, sample a class-by-scale grid from a checkpoint,
measure an upsampler's fidelity or a prior's predictions, draw unCLIP image variations, or print the
caption vocabulary of a training config's data.

python -m lightning_diffusion components
python -m lightning_diffusion sample runs/demo/checkpoints/last.ckpt --out runs/demo --scales 0 1 2 3 5
python -m lightning_diffusion upsampler-fidelity runs/fashion_mnist/upsampler/checkpoints/last.ckpt
python -m lightning_diffusion vocab --config CONFIG.yaml    # the vocab: of a text encoder for its data
python -m lightning_diffusion prior-quality runs/shapes/prior/checkpoints/last.ckpt --scales 1 3
python -m lightning_diffusion variations runs/shapes/unclip_decoder/checkpoints/last.ckpt --scale 3
python -m lightning_diffusion compare runs/sweep [runs/other_sweep] --rows cfg@2 cfgpp@0.6   # paired
python -m lightning_diffusion thin-snapshots runs/fashion_mnist/denoiser/posthoc_ema --keep 8
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from lightning_diffusion.atomic import atomic_write_text
from lightning_diffusion.config import (
    ConfigError,
    cannot_write,
    instantiate,
    output_folder,
    parser_reason,
    read_config,
)
from lightning_diffusion.diffusion import GRIDS, SOLVERS, SamplerSpec


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (counts, batch sizes)."""
    value = _parse(int, text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed_int(text: str) -> int:
    """An argparse type: a whole number of 0 or more (a seed)."""
    value = _parse(int, text, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed must be 0 or more, got {value}")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite number (a guidance scale, a level); NaN and infinity are refused."""
    value = _parse(float, text, "a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _parse(kind: type, text: str, what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def add_sampler_options(parser: argparse.ArgumentParser, steps: int = 50) -> None:
    """A ``--sampler.<field>`` flag per SamplerSpec field: ``--sampler.name dpmpp_2m --sampler.steps 20``."""
    helps = {"name": f"solver: {', '.join(SOLVERS)}", "grid": f"noise-level grid: {', '.join(GRIDS)}"}
    for field in dataclasses.fields(SamplerSpec):
        default = steps if field.name == "steps" else field.default
        kind = int if field.name == "steps" else str if isinstance(default, str) else float
        parser.add_argument(
            f"--sampler.{field.name}",
            dest=f"sampler.{field.name}",
            type=kind,
            default=default,
            metavar=field.name.upper(),
            help=helps.get(field.name, "see SamplerSpec (default: %(default)s)"),
        )


def sampler_of(args: argparse.Namespace) -> SamplerSpec:
    """The SamplerSpec given by the ``--sampler.<field>`` flags."""
    values = {field.name: getattr(args, f"sampler.{field.name}") for field in dataclasses.fields(SamplerSpec)}
    return SamplerSpec(**values)


def print_components() -> None:
    """One line per registered component (plug-ins included): kind, name, class path."""
    from lightning_diffusion.registry import list_components

    for info in list_components():
        print(f"{info.kind:<20} {info.name:<24} {info.class_path}")


def sample_grid(args: argparse.Namespace) -> None:
    """Sample every class at every scale; write samples.png, samples_s<scale>.npz and label accuracy."""
    import torch

    from lightning_diffusion.registry import load_component
    from lightning_diffusion.sweep.grids import class_scale_samples, grid_image, save_grid
    from lightning_diffusion.sweep.sample_files import save_npz, scale_tag

    model = load_component(args.checkpoint, kind="denoiser")
    out = output_folder(args.out)  # made, or refused, before any sampling (not for a refused checkpoint)
    real_data = _datamodule_of(args.checkpoint, "check labels") if args.check_labels else None
    if args.compile:
        from lightning_diffusion.compilation import compile_networks

        compile_networks(model, args.compile_mode)
    if model.num_classes is None:
        raise ConfigError(
            "this denoiser is unconditional; a class-by-scale grid needs a class-conditional one."
        )
    classes = list(range(model.num_classes))
    samples = class_scale_samples(
        model,
        classes,
        args.scales,
        per_class=args.per_class,
        sampler=sampler_of(args),
        seed=args.seed,
        progress=True,
    )
    grid_path = save_grid(grid_image(samples, args.per_class), out / "samples.png")
    labels = torch.tensor(classes).repeat_interleave(args.per_class)
    for scale, images in samples.items():
        save_npz(out / f"samples_{scale_tag(scale)}.npz", images, labels)
    print(f"grid (rows: classes, columns: s = {', '.join(f'{s:g}' for s in args.scales)}): {grid_path}")
    print(f"samples (guided-diffusion npz): {out}/samples_s<scale>.npz")
    if real_data is not None:
        from lightning_diffusion.metrics.pixel_classifier import fit_pixel_classifier

        classifier = fit_pixel_classifier(real_data)
        print(
            f"label accuracy by a pixel classifier trained on real data "
            f"(its own test accuracy {classifier.test_accuracy:.1%}):"
        )
        for scale, images in samples.items():
            print(f"  s = {scale:<4g} {classifier.accuracy(images, labels):.1%}")


def training_datamodule(config: str) -> Any:
    """The data module of a training YAML's ``data`` section, parsed the way ``train.py`` parses it (so
    short class names resolve too)."""
    data = read_config(config).get("data")
    if data is None:
        raise ConfigError(f"the config {config!r} has no data section; give a training YAML (train.py fit).")
    from jsonargparse import ArgumentError
    from lightning.pytorch.cli import LightningArgumentParser

    from lightning_diffusion.data import DiffusionDataModule

    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(DiffusionDataModule, "data", required=True)
    try:
        spec = parser.parse_object({"data": data}).data.as_dict()
    except ArgumentError as error:
        raise ConfigError(f"the data section of {config!r} is invalid: {parser_reason(error)}") from None
    return instantiate(spec)


def print_vocabulary(config: str) -> None:
    """Print the words of the train captions of ``config``'s data as a YAML flow list (for ``vocab:``)."""
    import yaml

    vocabulary = training_datamodule(config).vocabulary()
    print(yaml.safe_dump(vocabulary, default_flow_style=True, width=float("inf")).strip())


def upsampler_fidelity(args: argparse.Namespace) -> None:
    """PSNR and consistency of an upsampler (and of bilinear upsampling) on real images of its data."""
    import json

    from lightning_diffusion.pipeline.upsampling import evaluate_upsampler
    from lightning_diffusion.registry import load_component

    upsampler = load_component(args.checkpoint, kind="upsampler")
    data = _datamodule_of(args.checkpoint)
    labels = data.labels(args.split, args.n) if upsampler.num_classes is not None else None
    values = evaluate_upsampler(
        upsampler,
        data.real_images(args.split, args.n),
        batch_size=args.batch_size,
        sampler=sampler_of(args),
        seed=args.seed,
        aug_level=args.aug_level,
        labels=labels,
    )
    print(json.dumps({"split": args.split, "n": args.n, "aug_level": args.aug_level, **values}, indent=2))


def _datamodule_of(checkpoint: str, purpose: str = "pick real images") -> Any:
    """The data module a component checkpoint was trained on, which ``purpose`` needs."""
    from lightning_diffusion.data import DiffusionDataModule
    from lightning_diffusion.registry import read_checkpoint

    hparams = read_checkpoint(checkpoint).get("datamodule_hyper_parameters")
    if hparams is None:
        raise ConfigError(
            f"{checkpoint} does not record the data it was trained on, so it cannot {purpose}; pass a "
            "checkpoint written by train.py fit."
        )
    return DiffusionDataModule.from_hparams(hparams)


def prior_quality(args: argparse.Namespace) -> None:
    """Cosine similarity and retrieval of a prior's embeddings (and of two baselines) on real pairs."""
    import json

    from lightning_diffusion.pipeline.prior_quality import prior_quality as measure
    from lightning_diffusion.registry import load_component

    prior = load_component(args.checkpoint, kind="prior")
    data = _datamodule_of(args.checkpoint)
    captions = data.captions(args.split, args.n)
    rows = measure(
        prior,
        (data.real_images(args.split, args.n), captions),
        (data.real_images("train", args.n_train), data.captions("train", args.n_train)),
        scales=args.scales,
        candidates=args.candidates,
        sampler=sampler_of(args),
        seed=args.seed,
        batch_size=args.batch_size,
        test_labels=data.labels(args.split, args.n) if data.num_classes else None,
    )
    result = {
        "split": args.split,
        "n": len(captions),
        "sampler": dataclasses.asdict(sampler_of(args)),
        "rows": rows,
    }
    text = json.dumps(result, indent=2)
    if args.out is not None:
        if Path(args.out).is_dir():
            raise ConfigError(
                f"--out {args.out!r} is a folder; pass the JSON file to write, e.g. {args.out}/prior.json."
            )
        try:
            atomic_write_text(args.out, text)
        except OSError as error:
            raise cannot_write("--out", args.out, error) from None
    print(text)


def variations(args: argparse.Namespace) -> None:
    """A grid of unCLIP image variations (a real image, then decoder samples from its C_I, per row),
    written to the run folder and logged to W&B (offline without an API key)."""
    import torch

    from lightning_diffusion.components import UnclipDecoder
    from lightning_diffusion.pipeline import image_variations
    from lightning_diffusion.registry import load_component
    from lightning_diffusion.sweep.grids import row_grid, save_grid

    decoder = load_component(args.checkpoint, kind="denoiser")
    out = output_folder(args.out) if args.out is not None else Path(args.checkpoint).resolve().parent.parent
    if not isinstance(decoder, UnclipDecoder):
        raise ConfigError(
            f"{args.checkpoint} is a {type(decoder).__name__}, not an unCLIP decoder: image variations need "
            "an UnclipDecoder checkpoint."
        )
    images = _datamodule_of(args.checkpoint).real_images(args.split, args.n)
    samples = image_variations(
        decoder,
        images,
        args.per_image,
        args.scale,
        sampler=sampler_of(args),
        seed=args.seed,
        batch_size=args.batch_size,
    )
    path = save_grid(
        row_grid(torch.cat([images[:, None], samples], dim=1)), out / f"variations_s{args.scale:g}.png"
    )
    print(f"variations (rows: a real {args.split} image, then {args.per_image} samples from its C_I): {path}")
    if args.wandb:
        import wandb

        from lightning_diffusion.loggers import wandb_mode

        run = wandb.init(
            project=args.project, dir=out, mode=wandb_mode(), job_type="variations", config=vars(args)
        )
        run.log({"variations": wandb.Image(str(path), caption=f"s = {args.scale:g}; first column: real")})
        run.finish()


def compare(args: argparse.Namespace) -> None:
    """Print each metric's paired difference between two sweep rows (``sweep.compare``)."""
    from lightning_diffusion.sweep.compare import compare_rows

    table, _ = compare_rows(args.sweep, args.rows, args.other, args.bootstrap)
    print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lightning_diffusion", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("components", help="list registered components: kind, name, class path")
    grid = commands.add_parser(
        "sample", help="sample a class-by-guidance-scale grid from a denoiser checkpoint"
    )
    grid.add_argument("checkpoint", help="denoiser checkpoint (.ckpt)")
    grid.add_argument("--out", default="runs/samples", help="output folder")
    grid.add_argument(
        "--scales",
        type=finite_float,
        nargs="+",
        default=[0.0, 1.0, 2.0, 3.0, 5.0],
        help="guidance scales s (1 = conditional, 0 = unconditional)",
    )
    grid.add_argument("--per_class", type=positive_int, default=10, help="samples per class and scale")
    add_sampler_options(grid)
    grid.add_argument("--seed", type=seed_int, default=0)
    grid.add_argument("--compile", action="store_true", help="torch.compile the network (static shapes)")
    grid.add_argument("--compile_mode", default="default", help="torch.compile mode, e.g. max-autotune")
    grid.add_argument(
        "--check_labels",
        action="store_true",
        help="report the fraction labelled as their class by a classifier trained on real data",
    )
    fidelity = commands.add_parser(
        "upsampler-fidelity", help="PSNR and consistency of an upsampler on real low-res inputs (vs bilinear)"
    )
    fidelity.add_argument("checkpoint", help="upsampler checkpoint (.ckpt)")
    fidelity.add_argument(
        "--split", default="val", choices=("val", "test"), help="data split of the real images"
    )
    fidelity.add_argument("--n", type=positive_int, default=500, help="number of images")
    add_sampler_options(fidelity, steps=25)
    fidelity.add_argument(
        "--aug_level", type=finite_float, default=0.0, help="augmentation level of the low-res input"
    )
    fidelity.add_argument("--batch_size", type=positive_int, default=250)
    fidelity.add_argument("--seed", type=seed_int, default=0)
    quality = commands.add_parser(
        "prior-quality",
        help="cosine similarity and retrieval of a prior's embeddings vs baselines without one",
    )
    quality.add_argument("checkpoint", help="prior checkpoint (.ckpt)")
    quality.add_argument(
        "--split", default="test", choices=("val", "test"), help="data split of the evaluation pairs"
    )
    quality.add_argument("--n", type=positive_int, default=1000, help="number of evaluation pairs")
    quality.add_argument(
        "--n_train", type=positive_int, default=5000, help="training pairs the linear baseline is fitted on"
    )
    quality.add_argument("--scales", type=finite_float, nargs="+", default=[1.0], help="prior CFG scales")
    quality.add_argument(
        "--candidates", type=positive_int, nargs="+", default=[1], help="prior candidates k per caption"
    )
    add_sampler_options(quality)
    quality.add_argument("--seed", type=seed_int, default=0)
    quality.add_argument("--batch_size", type=positive_int, default=250)
    quality.add_argument("--out", default=None, help="also write the JSON to this file")
    variation = commands.add_parser("variations", help="unCLIP image variations of real images (a PNG grid)")
    variation.add_argument("checkpoint", help="unCLIP decoder checkpoint (.ckpt)")
    variation.add_argument("--n", type=positive_int, default=8, help="number of real images (rows)")
    variation.add_argument("--per_image", type=positive_int, default=7, help="variations per image (columns)")
    variation.add_argument("--scale", type=finite_float, default=3.0, help="CFG scale on the image embedding")
    variation.add_argument(
        "--split", default="test", choices=("val", "test"), help="data split of the real images"
    )
    add_sampler_options(variation)
    variation.add_argument("--seed", type=seed_int, default=0)
    variation.add_argument("--batch_size", type=positive_int, default=64)
    variation.add_argument("--out", default=None, help="output folder (default: the checkpoint's run folder)")
    variation.add_argument("--no_wandb", dest="wandb", action="store_false", help="do not log to W&B")
    variation.add_argument("--project", default="lightning-diffusion", help="W&B project")
    comparison = commands.add_parser(
        "compare",
        help="each metric's difference between two rows of a sweep (or of two sweeps on the same noise) with "
        "its paired 95 %% bootstrap interval (needs a sweep run with --bootstrap)",
    )
    comparison.add_argument("sweep", help="a sweep's --out folder")
    comparison.add_argument(
        "other", nargs="?", default=None, help="another sweep's folder for the second row"
    )
    comparison.add_argument(
        "--rows",
        nargs=2,
        required=True,
        metavar="LABEL@SCALE",
        help="the two rows, e.g. cfg@2 cfgpp@0.6 (LABEL@SCALE@EMA for a row of an EMA length); the "
        "difference is the second minus the first",
    )
    comparison.add_argument(
        "--bootstrap", type=positive_int, default=1000, help="paired resamples (at least 100; default 1000)"
    )
    vocab = commands.add_parser(
        "vocab", help="print the caption vocabulary of a training config's data (for a text encoder's vocab)"
    )
    vocab.add_argument("--config", required=True, help="training YAML whose data section to read")
    thin = commands.add_parser(
        "thin-snapshots", help="keep N post-hoc EMA snapshots spread over its steps, delete the rest"
    )
    thin.add_argument("folder", help="snapshot folder written by callbacks.PostHocEMA")
    thin.add_argument("--keep", type=positive_int, required=True, help="snapshots to keep (first, last too)")
    return parser


def thin_snapshot_folder(folder: str, keep: int) -> None:
    """Delete all but ``keep`` snapshots (and the reconstructions cached from the full set); say what went."""
    import shutil

    from lightning_diffusion.ema.reconstruct import CACHE_FOLDER
    from lightning_diffusion.ema.snapshots import thin_snapshots

    removed = thin_snapshots(folder, keep)
    if removed:
        shutil.rmtree(Path(folder) / CACHE_FOLDER, ignore_errors=True)
    print(f"removed {len(removed)} snapshots from {folder}; {keep if removed else 'all'} kept")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "components":
            print_components()
        elif args.command == "vocab":
            print_vocabulary(args.config)
        elif args.command == "upsampler-fidelity":
            upsampler_fidelity(args)
        elif args.command == "prior-quality":
            prior_quality(args)
        elif args.command == "variations":
            variations(args)
        elif args.command == "compare":
            compare(args)
        elif args.command == "thin-snapshots":
            thin_snapshot_folder(args.folder, args.keep)
        else:
            sample_grid(args)
    except ConfigError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
