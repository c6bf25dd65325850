"""Lightning's training overhead on the digits denoiser: ``Trainer.fit`` vs a plain PyTorch loop.

Run from the repository root::

    .venv/bin/python benchmarks/training.py                      # 20 warm-up + 200 timed steps, 3 repeats
    .venv/bin/python benchmarks/training.py --steps 5 --repeats 1 --threads 1   # quick smoke run
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
"""

from __future__ import annotations

import argparse
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

from lightning_diffusion.components import Denoiser
from lightning_diffusion.data import DiffusionDataModule, Digits
from lightning_diffusion.nets import UNet

BATCH_SIZE = 64
IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10
COND_DIM = 128
TARGET_RATIO = 1.05


def build_module(seed: int) -> Denoiser:
    """The denoiser of configs/digits/denoiser.yaml, freshly initialised with ``seed``."""
    pl.seed_everything(seed, verbose=False)
    net = UNet(in_channels=1, channels=(32, 64), num_res_blocks=2, attention_levels=(1,), cond_dim=COND_DIM)
    return Denoiser(
        net,
        image_shape=IMAGE_SHAPE,
        num_classes=NUM_CLASSES,
        p_uncond=0.1,
        prediction="v",
        lr=1.0e-3,
        warmup_steps=100,
    )


def build_datamodule() -> DiffusionDataModule:
    """The data module of configs/digits/denoiser.yaml (Digits, batch 64, 10% held out)."""
    return DiffusionDataModule(source=Digits(), batch_size=BATCH_SIZE, val_fraction=0.1)


def endless(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    """Batches of ``loader``, starting a new epoch (a new shuffled pass) whenever one ends."""
    while True:
        yield from loader


def time_plain(seed: int, warmup: int, steps: int) -> float:
    """Seconds per step of a hand-written loop around ``Denoiser.training_step``."""
    module = build_module(seed)
    datamodule = build_datamodule()
    datamodule.setup("fit")
    batches = endless(datamodule.train_dataloader())
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    module.train()
    start = None
    for step in range(warmup + steps):
        batch = next(batches)
        if step == warmup:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = module.training_step(batch, step)
        loss.backward()
        optimizer.step()
        scheduler.step()
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
            self.start = time.perf_counter()
        if self.start is not None and self.end is None:
            self.timed_batches += 1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.end is None and trainer.global_step == self.total:
            self.end = time.perf_counter()


def time_lightning(seed: int, warmup: int, steps: int) -> float:
    """Seconds per step of ``Trainer.fit`` on the same module and data."""
    module = build_module(seed)
    datamodule = build_datamodule()
    timer = StepTimer(warmup, warmup + steps)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=datamodule)
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
    args = parser.parse_args(argv)
    for name in ("steps", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    quiet()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
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
