"""``python -m lightning_diffusion``: list components, or sample a class-by-scale grid from a checkpoint.

python -m lightning_diffusion components
python -m lightning_diffusion sample runs/demo/checkpoints/last.ckpt --out runs/demo --scales 0 1 2 3 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightning_diffusion.config import ConfigError


def print_components() -> None:
    """One line per registered component (plug-ins included): kind, name, class path."""
    from lightning_diffusion.registry import list_components

    for info in list_components():
        print(f"{info.kind:<20} {info.name:<24} {info.class_path}")


def sample_grid(args: argparse.Namespace) -> None:
    """Sample every class at every scale; write samples.png, samples_s<scale>.npz and label accuracy."""
    import torch

    from lightning_diffusion.data import DiffusionDataModule
    from lightning_diffusion.grid import class_scale_samples, grid_image, save_grid
    from lightning_diffusion.registry import load_component, read_checkpoint
    from lightning_diffusion.samples_io import save_npz, scale_tag

    model = load_component(args.checkpoint, kind="denoiser")
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
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
        progress=True,
    )
    out = Path(args.out)
    grid_path = save_grid(grid_image(samples, args.per_class), out / "samples.png")
    labels = torch.tensor(classes).repeat_interleave(args.per_class)
    for scale, images in samples.items():
        save_npz(out / f"samples_{scale_tag(scale)}.npz", images, labels)
    print(f"grid (rows: classes, columns: s = {', '.join(f'{s:g}' for s in args.scales)}): {grid_path}")
    print(f"samples (guided-diffusion npz): {out}/samples_s<scale>.npz")
    if args.check_labels:
        from lightning_diffusion.metrics.pixel_classifier import fit_pixel_classifier

        hparams = read_checkpoint(args.checkpoint).get("datamodule_hyper_parameters")
        if hparams is None:
            raise ConfigError("the checkpoint does not record its data module; cannot check labels.")
        classifier = fit_pixel_classifier(DiffusionDataModule.from_hparams(hparams))
        print(
            f"label accuracy by a pixel classifier trained on real data "
            f"(its own test accuracy {classifier.test_accuracy:.1%}):"
        )
        for scale, images in samples.items():
            print(f"  s = {scale:<4g} {classifier.accuracy(images, labels):.1%}")


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
        type=float,
        nargs="+",
        default=[0.0, 1.0, 2.0, 3.0, 5.0],
        help="guidance scales s (1 = conditional, 0 = unconditional)",
    )
    grid.add_argument("--per_class", type=int, default=10, help="samples per class and scale")
    grid.add_argument("--sampler", default="ddim", help="ddim, ddpm or heun")
    grid.add_argument("--steps", type=int, default=50)
    grid.add_argument("--seed", type=int, default=0)
    grid.add_argument(
        "--check_labels",
        action="store_true",
        help="report the fraction labelled as their class by a classifier trained on real data",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "components":
            print_components()
        else:
            sample_grid(args)
    except ConfigError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
