"""fp32 vs bf16 autocast training steps of the recipe networks, and what ``precision: auto`` chose here.

Run from the repository root::

    .venv/bin/python benchmarks/precision.py                       # Fashion-MNIST and CIFAR-10 recipes
    .venv/bin/python benchmarks/precision.py --recipes fashion_mnist --steps 10 --repeats 3
    ATEN_CPU_CAPABILITY=avx2 .venv/bin/python benchmarks/precision.py   # as torch's AVX2 kernels run

Each recipe's denoiser is built from its YAML (``configs/<recipe>/denoiser.yaml``, the network the recipe
trains) and timed in a plain loop around its own ``training_step`` and optimizer (forward, backward,
AdamW, scheduler; ``benchmarks/training.py``'s ``time_plain``) on synthetic batches of the recipe's
per-device batch size, in 32-true and in bf16-mixed (``torch.autocast``, what Lightning's plugin does),
alternating which goes first. The table gives the median ms per step of each, the ratio bf16/fp32 (below
1: bf16 is faster) and the precision ``auto`` resolves to on this machine, with its reason.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import yaml
from jsonargparse import ArgumentParser
from training import quiet, synthetic_loader, time_plain

from lightning_diffusion.components import Component
from lightning_diffusion.precision import BF16, FP32, auto_choice
from lightning_diffusion.registry import discover

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("fashion_mnist", "cifar10")
LOADER_BATCHES = 4


def recipe_model(recipe: str) -> tuple[Component, int]:
    """The denoiser of ``configs/<recipe>/denoiser.yaml``, freshly built, and the recipe's batch size."""
    config = yaml.safe_load((ROOT / "configs" / recipe / "denoiser.yaml").read_text(encoding="utf-8"))
    discover()
    parser = ArgumentParser()
    parser.add_subclass_arguments(Component, "model")
    model = parser.instantiate(parser.parse_object({"model": config["model"]})).model
    return model, config["data"]["init_args"]["batch_size"]


def time_recipe(recipe: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per step of the recipe's training loop in each precision, ``args.repeats`` times."""
    times: dict[str, list[float]] = {FP32: [], BF16: []}
    for repeat in range(args.repeats):
        for precision in (FP32, BF16) if repeat % 2 == 0 else (BF16, FP32):
            torch.manual_seed(args.seed)
            model, batch_size = recipe_model(recipe)
            batch_size = args.batch_size or batch_size
            loader = synthetic_loader(batch_size, LOADER_BATCHES, tuple(model.image_shape))
            seconds = time_plain(args.seed, args.warmup, args.steps, model, loader, "cpu", precision)
            times[precision].append(seconds)
            line = f"  {recipe:<14} {precision:<11} repeat {repeat + 1}: {seconds * 1e3:9.1f} ms/step"
            print(line, flush=True)
    return times


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="fp32 vs bf16 training step time of the recipe networks, and auto's choice.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="repeats per precision (median)")
    parser.add_argument("--batch_size", type=int, default=None, help="default: the recipe's own")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("steps", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Print the table; return the bf16/fp32 time ratio per recipe."""
    args = parse_args(argv)
    quiet()
    torch.set_num_threads(args.threads)
    choice = auto_choice(cuda=False)
    print(
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} thread(s), {args.warmup} warm-up + {args.steps} timed steps, "
        f"{args.repeats} repeat(s)"
    )
    ratios = {}
    rows = []
    for recipe in args.recipes:
        times = time_recipe(recipe, args)
        fp32, bf16 = (statistics.median(times[key]) for key in (FP32, BF16))
        ratios[recipe] = bf16 / fp32
        rows.append((recipe, fp32, bf16))
    print()
    print(f"{'recipe':<14} {'fp32 ms/step':>13} {'bf16 ms/step':>13} {'bf16/fp32':>10}")
    for recipe, fp32, bf16 in rows:
        print(f"{recipe:<14} {fp32 * 1e3:13.1f} {bf16 * 1e3:13.1f} {bf16 / fp32:10.2f}")
    print(f"\n{choice.message()}")
    return ratios


if __name__ == "__main__":
    main()
