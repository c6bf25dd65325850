"""Lightning's training overhead on the digits denoiser: ``Trainer.fit`` vs a plain PyTorch loop.

Run from the repository root::

    .venv/bin/python benchmarks/training.py                      # 20 warm-up + 200 timed steps, 3 repeats
    .venv/bin/python benchmarks/training.py --steps 5 --repeats 1 --threads 1   # quick smoke run
    .venv/bin/python benchmarks/training.py --compile            # eager vs compiled: digits, Fashion-MNIST
    .venv/bin/python benchmarks/training.py --help

Both sides train the model of ``configs/digits/denoiser.yaml`` (U-Net channels (32, 64), 2 res
blocks, attention at level 1, cond_dim 128; Denoiser image_shape (1, 8, 8), 10 classes) on the same
batches (``DiffusionDataModule`` over Digits, batch 64), in fp32 on the CPU with the same number of
torch threads. Both use the module's own ``configure_optimizers()`` (AdamW + warm-up LambdaLR stepped
every step) and its own ``training_step`` for the loss; the plain loop only adds ``zero_grad``,
``backward``, ``optimizer.step`` and ``scheduler.step`` around it and iterates the same DataLoader.
Outside a Trainer ``self.log`` is a no-op (Lightning warns once), so logging is part of Lightning's
side only, as it is in real training.

Each measurement builds a fresh, identically seeded model and data module, runs ``--warmup``
untimed steps, then times ``--steps`` steps. A third row times the bare network's forward and
backward on a fixed batch (no data loader, no optimizer) to show how the per-step time splits.
Measurements repeat ``--repeats`` times, alternating which of plain and Lightning goes first, and
the table reports medians. The last line is the ratio of Lightning's to the plain loop's time per step.

``--compile`` instead times the plain loop eager and with the network compiled in place
(``lightning_diffusion.compilation``, what the ``GPUSpeedups`` callback applies) for the digits net
and the Fashion-MNIST net of ``configs/fashion_mnist/denoiser.yaml`` (channels (32, 64, 64), 1 res
block, attention at level 2, 1x32x32, bf16 autocast as in its config), each on its own synthetic
batches; compilation happens in the warm-up steps. ``benchmarks/gpu_check.py`` reuses these timers.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

# Run as a script from a checkout: make the repository root importable without an install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as pl
import torch

from callbacks import GPUSpeedups
from lightning_diffusion.compilation import apply_speedups
from lightning_diffusion.components import Denoiser
from lightning_diffusion.data import DiffusionDataModule, Digits
from lightning_diffusion.nets import UNet

BATCH_SIZE = 64
IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10
COND_DIM = 128
TARGET_RATIO = 1.05
DIGITS_NET = {"channels": (32, 64), "num_res_blocks": 2, "attention_levels": (1,)}
FASHION_NET = {"channels": (32, 64, 64), "num_res_blocks": 1, "attention_levels": (2,)}
FASHION_SHAPE = (1, 32, 32)


def build_module(seed: int) -> Denoiser:
    """The denoiser of configs/digits/denoiser.yaml, freshly initialised with ``seed``."""
    return build_denoiser(seed, IMAGE_SHAPE, DIGITS_NET)


def build_denoiser(
    seed: int, image_shape: tuple[int, ...], net: dict, cond_dim: int = COND_DIM, **denoiser: object
) -> Denoiser:
    """A class-conditional denoiser around a U-Net with ``net`` settings, initialised with ``seed``."""
    pl.seed_everything(seed, verbose=False)
    unet = UNet(in_channels=image_shape[0], cond_dim=cond_dim, **net)
    options = {"p_uncond": 0.1, "prediction": "v", "lr": 1.0e-3, "warmup_steps": 100, **denoiser}
    return Denoiser(unet, image_shape=image_shape, num_classes=NUM_CLASSES, **options)


def build_datamodule() -> DiffusionDataModule:
    """The data module of configs/digits/denoiser.yaml (Digits, batch 64, 10% held out)."""
    return DiffusionDataModule(source=Digits(), batch_size=BATCH_SIZE, val_fraction=0.1)


class SyntheticImages(torch.utils.data.Dataset):
    """``count`` random images in [-1, 1] with random labels, made once: batches that cost no decoding,
    so a measurement times the model, its optimizer and the loop."""

    def __init__(self, count: int, image_shape: tuple[int, ...], num_classes: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(count, *image_shape, generator=generator) * 2 - 1
        self.labels = torch.randint(num_classes, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}


def synthetic_loader(
    batch_size: int, batches: int, image_shape: tuple[int, ...], pin_memory: bool = False
) -> torch.utils.data.DataLoader:
    """A loader of ``batches`` batches of ``SyntheticImages`` (drop_last, no shuffling)."""
    dataset = SyntheticImages(batch_size * batches, image_shape, NUM_CLASSES)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, drop_last=True, pin_memory=pin_memory)


def endless(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    """Batches of ``loader``, starting a new epoch (a new shuffled pass) whenever one ends."""
    while True:
        yield from loader


def synchronize(device: torch.device) -> None:
    """Wait for queued device work before reading the clock (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``"bf16-mixed"`` (what Lightning's precision plugin does), else nothing."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def time_plain(
    seed: int,
    warmup: int,
    steps: int,
    module: Denoiser | None = None,
    loader: torch.utils.data.DataLoader | None = None,
    device: str = "cpu",
    precision: str = "32-true",
    speedups: dict | None = None,
) -> float:
    """Seconds per step of a hand-written loop around ``training_step`` (default: the digits model and
    data); ``speedups`` are ``apply_speedups`` options applied to the module first (e.g. compile)."""
    device = torch.device(device)
    module = (module or build_module(seed)).to(device)
    if loader is None:
        datamodule = build_datamodule()
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
    if speedups is not None:
        apply_speedups(module, device=device, **speedups)
    batches = endless(loader)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    module.train()
    start = None
    for step in range(warmup + steps):
        batch = {key: value.to(device, non_blocking=True) for key, value in next(batches).items()}
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = module.training_step(batch, step)
        loss.backward()
        optimizer.step()
        scheduler.step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


class StepTimer(pl.Callback):
    """Records the time from the start of optimizer step ``warmup`` to the end of step ``total``."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total
        self.start: float | None = None
        self.end: float | None = None
        self.threads: int | None = None
        self.timed_batches = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self.start is None and trainer.global_step == self.warmup:
            self.threads = torch.get_num_threads()
            synchronize(pl_module.device)
            self.start = time.perf_counter()
        if self.start is not None and self.end is None:
            self.timed_batches += 1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.end is None and trainer.global_step == self.total:
            synchronize(pl_module.device)
            self.end = time.perf_counter()


def time_lightning(
    seed: int,
    warmup: int,
    steps: int,
    module: Denoiser | None = None,
    loader: torch.utils.data.DataLoader | None = None,
    device: str = "cpu",
    precision: str = "32-true",
    speedups: dict | None = None,
) -> float:
    """Seconds per step of ``Trainer.fit`` on the same module and data as ``time_plain`` (the
    ``GPUSpeedups`` callback applies ``speedups``)."""
    module = module or build_module(seed)
    timer = StepTimer(warmup, warmup + steps)
    callbacks = [timer] if speedups is None else [GPUSpeedups(**speedups), timer]
    trainer = pl.Trainer(
        accelerator=torch.device(device).type,
        devices=1,
        precision=precision,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
    )
    if loader is None:
        trainer.fit(module, datamodule=build_datamodule())
    else:
        trainer.fit(module, train_dataloaders=loader)
    if timer.start is None or timer.end is None or timer.timed_batches != steps:
        raise RuntimeError(
            f"Lightning ran {trainer.global_step} steps and timed {timer.timed_batches}, expected "
            f"{warmup + steps} and {steps}; the timer did not fire as planned."
        )
    if timer.threads != torch.get_num_threads():
        raise RuntimeError(f"Lightning ran with {timer.threads} threads, not {torch.get_num_threads()}.")
    return (timer.end - timer.start) / steps


def time_net(seed: int, warmup: int, steps: int) -> float:
    """Seconds per step of the bare U-Net's forward and backward on one fixed batch."""
    net = build_module(seed).net.train()
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(BATCH_SIZE, *IMAGE_SHAPE, generator=generator)
    t = torch.rand(BATCH_SIZE, generator=generator)
    cond = torch.randn(BATCH_SIZE, COND_DIM, generator=generator)
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        net.zero_grad(set_to_none=True)
        net(z, t, cond).square().mean().backward()
    return (time.perf_counter() - start) / steps


MEASUREMENTS: dict[str, tuple[str, Callable[[int, int, int], float]]] = {
    "net": ("U-Net forward+backward only", time_net),
    "plain": ("plain PyTorch loop", time_plain),
    "lightning": ("Lightning Trainer.fit", time_lightning),
}


def quiet() -> None:
    """Silence Lightning's start-up banners and the warnings that are expected here."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_diffusion"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*self.log\\(\\)` but the `self.trainer` reference.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Steps/s of Lightning's Trainer.fit vs a plain PyTorch loop on the digits denoiser.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=200, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before timing starts")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each measurement (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads for all runs")
    parser.add_argument("--seed", type=int, default=0, help="seed for model init, data order and noise")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="time eager vs compiled plain loops on the digits and Fashion-MNIST nets instead",
    )
    args = parser.parse_args(argv)
    for name in ("steps", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    return args


COMPILE_RECIPES = {
    "digits": (IMAGE_SHAPE, DIGITS_NET, "32-true"),
    "fashion_mnist": (FASHION_SHAPE, FASHION_NET, "bf16-mixed"),
}
LOADER_BATCHES = 8


def time_compiled_vs_eager(args: argparse.Namespace) -> dict[str, float]:
    """Per net: median seconds per plain-loop step eager and compiled (alternating which goes first), and
    the speed-up compiled/eager; returns the speed-ups."""
    speedups = {}
    print(f"{'net':<14} {'precision':<10} {'eager ms':>9} {'compiled ms':>12} {'compiled/eager':>15}")
    for name, (shape, net, precision) in COMPILE_RECIPES.items():
        loader = synthetic_loader(BATCH_SIZE, LOADER_BATCHES, shape)
        times: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(args.repeats):
            for compiled in (False, True) if repeat % 2 == 0 else (True, False):
                module = build_denoiser(args.seed, shape, net)
                options = {"compile": compiled, "channels_last": False}
                seconds = time_plain(
                    args.seed, args.warmup, args.steps, module, loader, "cpu", precision, options
                )
                times[compiled].append(seconds)
        eager, compiled = (statistics.median(times[key]) for key in (False, True))
        speedups[name] = eager / compiled
        print(f"{name:<14} {precision:<10} {eager * 1e3:9.2f} {compiled * 1e3:12.2f} {speedups[name]:15.3f}")
    return speedups


def main(argv: list[str] | None = None) -> float | dict[str, float]:
    args = parse_args(argv)
    quiet()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    if args.compile:
        print(
            f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s), plain loop, batch "
            f"{BATCH_SIZE}, {args.warmup} warm-up (compilation) + {args.steps} timed steps, "
            f"{args.repeats} repeat(s); speed-up = eager time / compiled time per step"
        )
        return time_compiled_vs_eager(args)
    print(
        f"torch {torch.__version__}, lightning {pl.__version__}, CPU fp32, {torch.get_num_threads()} "
        f"thread(s), batch {BATCH_SIZE}, {args.warmup} warm-up + {args.steps} timed steps, "
        f"{args.repeats} repeat(s)"
    )
    results: dict[str, list[float]] = {key: [] for key in MEASUREMENTS}
    for repeat in range(args.repeats):
        pair = ["plain", "lightning"] if repeat % 2 == 0 else ["lightning", "plain"]
        for key in ["net", *pair]:
            label, measure = MEASUREMENTS[key]
            seconds = measure(args.seed, args.warmup, args.steps)
            results[key].append(seconds)
            print(f"  repeat {repeat + 1}/{args.repeats}  {label:<28} {seconds * 1e3:8.2f} ms/step")

    medians = {key: statistics.median(values) for key, values in results.items()}
    plain = medians["plain"]
    print()
    print(f"{'measurement':<28} {'ms/step':>9} {'steps/s':>9} {'vs plain':>9}   runs (ms/step)")
    for key, (label, _) in MEASUREMENTS.items():
        runs = ", ".join(f"{value * 1e3:.2f}" for value in results[key])
        print(
            f"{label:<28} {medians[key] * 1e3:9.2f} {1 / medians[key]:9.1f} "
            f"{medians[key] / plain:9.3f}   {runs}"
        )
    net, lightning = medians["net"], medians["lightning"]
    print()
    print(
        f"per step: net fwd+bwd {net * 1e3:.2f} ms; data + loss + optimizer (plain - net) "
        f"{(plain - net) * 1e3:.2f} ms; Lightning overhead (lightning - plain) "
        f"{(lightning - plain) * 1e3:.2f} ms"
    )
    ratio = lightning / plain
    print(f"ratio lightning/plain time per step: {ratio:.3f} (target <= {TARGET_RATIO})")
    return ratio


if __name__ == "__main__":
    main()
