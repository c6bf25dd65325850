"""Guided-sampling cost on the digits denoiser: overhead over the bare network, interval guidance vs
full CFG, and our DDIM + CFG loop vs diffusers' ``DDIMScheduler`` loop around the same network.

Run from the repository root::

    .venv/bin/python benchmarks/sampling.py                      # batch 100, 50 steps, 5 repeats
    .venv/bin/python benchmarks/sampling.py --steps 5 --repeats 1 --threads 1   # quick smoke run
    .venv/bin/python benchmarks/sampling.py --checkpoint runs/digits/denoiser/checkpoints/last.ckpt
    .venv/bin/python benchmarks/sampling.py --help

The model is the denoiser of ``configs/digits/denoiser.yaml`` (U-Net channels (32, 64), 2 res blocks,
attention at level 1, cond_dim 128; image (1, 8, 8), 10 classes, v-prediction), untrained but with
every parameter perturbed by small noise so that the zero-initialised layers and the label matter,
or the denoiser of ``--checkpoint``. Everything runs in fp32 on the CPU, under ``torch.no_grad()``,
with ``--threads`` torch threads. The labels are 0, 1, 2, ... (mod the number of classes).

(a) Efficiency of guided sampling: the wall time of ``sample(...)`` with classifier-free guidance at
    scale ``--scale`` (cond and null batched: one network forward of 2 x batch rows per step) divided
    by its ideal cost, the number of network forwards (counted with a forward hook) times the time of
    one bare ``net(z, t, cond_vector)`` forward at that batch size, measured in the same run.
(b) Interval guidance: ``cfg_interval`` (guidance only for EDM noise levels sigma/alpha in
    ``--interval``, one conditional pass elsewhere) vs full CFG at the same scale: the ratio of their
    ``sample(...)`` wall times, and the NFE (network rows per sample, counted by ``CountingModel``).
(c) Our sampler loop vs diffusers': ``ddim`` driving ``GuidedDenoiser(model, ClassifierFree(s), cond)``
    vs the usual diffusers loop, ``DDIMScheduler.set_timesteps(steps)`` and, per timestep, one batched
    cond + null forward of the same network, the CFG combination of its outputs and
    ``scheduler.step(output, k, sample).prev_sample``. The scheduler's ``alphas_cumprod`` is our cosine
    schedule on a 1000-step grid (alpha_bar_k = sigmoid(logsnr(t_k)), t_k = (k + 1) / 1000) and the
    network sees t_k for diffusers' integer timestep k. Its label embedding is computed once before
    the loop, as diffusers pipelines encode their prompts once. With the default ``trailing`` spacing
    and a step count dividing 1000, diffusers visits exactly our grid t = 1, 1 - 1/N, ..., 1/N and ends
    on clean data, so both loops do the same work and, from the same noise, give the same images up
    to float rounding (reported as a mean absolute difference). ``--spacing leading`` is diffusers'
    default, which shifts the grid (t = 0.981, ..., 0.001 for 50 steps) and so changes the images
    slightly. Skipped, with a note, when diffusers is not installed (``pip install '.[benchmark]'``).

Before timing, each measurement runs once untimed (warm-up; it also counts the forwards and checks
that the images are finite and of the right shape). Then each repeat times the bare forwards and every
run once, alternating which of our and diffusers' loops goes first. The table reports medians over
``--repeats``; each ratio is the median over repeats of that repeat's ratio, so that slow drifts in
the machine's speed (shared CPUs) cancel. A forward hook also times every network forward inside each
run: wall time minus that is the run's own cost outside the network (sampler, guidance, scheduler,
noise), reported per step; it does not depend on how fast the network happened to run.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script from a checkout: make the repository root importable without an install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_diffusion.components import Denoiser
from lightning_diffusion.diffusion import SamplerSpec, randn, sample_generators
from lightning_diffusion.guidance import ClassifierFree, GuidedDenoiser, build_guidance
from lightning_diffusion.nets import UNet
from lightning_diffusion.registry import load_component
from lightning_diffusion.sampling import CountingModel, sample

try:  # the optional ``benchmark`` extra
    import diffusers
    from diffusers import DDIMScheduler
except ImportError:
    diffusers = DDIMScheduler = None

IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10
COND_DIM = 128
PERTURBATION = 0.02
TRAIN_TIMESTEPS = 1000
TARGET_EFFICIENCY = 1.05
TARGET_VS_DIFFUSERS = 1.0
DIFFUSERS_PREDICTION = {"v": "v_prediction", "eps": "epsilon", "x0": "sample"}
SKIPPED = "skipped: diffusers not installed (pip install '.[benchmark]')"


def build_model(seed: int, checkpoint: str | None) -> Denoiser:
    """The denoiser of ``checkpoint``, or that of configs/digits/denoiser.yaml with perturbed weights."""
    if checkpoint is not None:
        model = load_component(checkpoint, kind="denoiser", map_location="cpu")
    else:
        pl.seed_everything(seed, verbose=False)
        net = UNet(
            in_channels=1, channels=(32, 64), num_res_blocks=2, attention_levels=(1,), cond_dim=COND_DIM
        )
        model = Denoiser(net, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES, prediction="v")
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(PERTURBATION * torch.randn(parameter.shape, generator=generator))
    if model.num_classes is None:
        raise SystemExit("this benchmark needs a class-conditional denoiser (num_classes set) for CFG.")
    return model.float().eval().requires_grad_(False)


class ForwardProbe:
    """While attached (as forward pre-hook and hook): counts the network's forwards by batch size (rows)
    and adds up the seconds spent inside them, so that a run's own overhead is wall time minus that."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self.calls: Counter[int] = Counter()
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> ForwardProbe:
        self.handles = [
            self.net.register_forward_pre_hook(self._before),
            self.net.register_forward_hook(self._after),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def _before(self, module: torch.nn.Module, args: tuple) -> None:
        self._start = time.perf_counter()

    def _after(self, module: torch.nn.Module, args: tuple, output: Tensor) -> None:
        self.seconds += time.perf_counter() - self._start
        self.calls[args[0].shape[0]] += 1


def forward_inputs(model: Denoiser, rows: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Noisy images, noise levels and label embeddings (half null) for a bare forward of ``rows`` rows."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, *model.image_shape, generator=generator)
    t = torch.rand(rows, generator=generator)
    labels = torch.arange(rows) % (model.num_classes + 1)
    return z, t, model.label_embedding(labels)


@torch.no_grad()
def time_forward(model: Denoiser, rows: int, calls: int, seed: int) -> float:
    """Seconds per bare ``net(z, t, cond_vector)`` forward at ``rows`` rows, averaged over ``calls``."""
    z, t, cond = forward_inputs(model, rows, seed)
    model.net(z, t, cond)
    start = time.perf_counter()
    for _ in range(calls):
        model.net(z, t, cond)
    return (time.perf_counter() - start) / calls


def diffusers_scheduler(model: Denoiser, spacing: str) -> Any:
    """A DDIMScheduler whose alphas_cumprod is the model's schedule at t_k = (k + 1) / 1000."""
    times = torch.arange(1, TRAIN_TIMESTEPS + 1, dtype=torch.float64) / TRAIN_TIMESTEPS
    alpha_bar = torch.sigmoid(model.schedule.logsnr(times))
    betas = 1.0 - alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    scheduler = DDIMScheduler(
        num_train_timesteps=TRAIN_TIMESTEPS,
        trained_betas=betas.tolist(),
        clip_sample=False,
        set_alpha_to_one=True,
        prediction_type=DIFFUSERS_PREDICTION[model.prediction],
        timestep_spacing=spacing,
    )
    # The exact values rather than their float32 cumulative product.
    scheduler.alphas_cumprod = alpha_bar.float()
    return scheduler


def ours_loop(model: Denoiser, noise: Tensor, labels: Tensor, scale: float, steps: int) -> Tensor:
    """Our DDIM (eta = 0) on classifier-free guidance at ``scale``: one forward of 2B rows per step."""
    denoise = GuidedDenoiser(model, ClassifierFree(scale), {"label": labels})
    return SamplerSpec("ddim", steps).sample(denoise, noise, model.schedule)


def diffusers_loop(
    model: Denoiser, scheduler: Any, noise: Tensor, labels: Tensor, scale: float, steps: int
) -> Tensor:
    """diffusers' DDIM loop with batched cond + null CFG on the network's raw output."""
    null = torch.full_like(labels, model.null_label)
    cond = model.label_embedding(torch.cat([labels, null]))
    scheduler.set_timesteps(steps)
    latents = noise * scheduler.init_noise_sigma
    for k in scheduler.timesteps:
        latent_input = scheduler.scale_model_input(torch.cat([latents] * 2), k)
        t = torch.full((latent_input.shape[0],), (int(k) + 1) / TRAIN_TIMESTEPS)
        output_cond, output_null = model.net(latent_input, t, cond).chunk(2)
        output = output_null + scale * (output_cond - output_null)
        latents = scheduler.step(output, k, latents).prev_sample
    return latents


def quiet() -> None:
    """Silence start-up messages and the warnings that are expected here."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_diffusion", "diffusers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Guided-sampling overhead, interval guidance and our DDIM loop vs diffusers' "
        "DDIMScheduler loop on the digits denoiser.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--batch", type=int, default=100, help="samples per batch (network sees 2x for CFG)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps per sampling run")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each measurement (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads for all runs")
    parser.add_argument("--scale", type=float, default=3.0, help="guidance scale s (s = 1 is conditional)")
    parser.add_argument(
        "--interval",
        type=float,
        nargs=2,
        default=(0.3, 5.0),
        metavar=("SIGMA_MIN", "SIGMA_MAX"),
        help="EDM noise levels sigma/alpha in (SIGMA_MIN, SIGMA_MAX] where cfg_interval guides",
    )
    parser.add_argument(
        "--spacing",
        choices=("trailing", "leading", "linspace"),
        default="trailing",
        help="diffusers' timestep_spacing (trailing matches our grid when steps divides 1000)",
    )
    parser.add_argument(
        "--checkpoint", default=None, help="a denoiser checkpoint instead of the perturbed net"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the perturbation and the noise")
    args = parser.parse_args(argv)
    for name in ("batch", "steps", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.steps > TRAIN_TIMESTEPS:
        parser.error(f"--steps must be at most {TRAIN_TIMESTEPS} (diffusers' training grid)")
    if args.scale in (0.0, 1.0):
        parser.error("--scale 0 and 1 need one pass per step, not batched CFG; pick another scale")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    quiet()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model = build_model(args.seed, args.checkpoint)
    labels = torch.arange(args.batch) % model.num_classes
    noise = randn(sample_generators(args.seed, range(args.batch)), model.image_shape)
    scheduler = None if DDIMScheduler is None else diffusers_scheduler(model, args.spacing)
    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__ if scheduler else 'not installed'}, "
        f"CPU fp32, {torch.get_num_threads()} thread(s), batch {args.batch}, {args.steps} DDIM steps, "
        f"s = {args.scale:g}, {args.repeats} repeat(s), "
        f"model {args.checkpoint or 'digits denoiser config, perturbed init'}"
    )

    def sampler(method: str) -> Callable[[Any], Tensor]:
        interval = tuple(args.interval) if method == "cfg_interval" else None
        guidance = build_guidance(method, args.scale, interval=interval)
        return lambda net_model: sample(
            net_model,
            labels,
            guidance_scale=args.scale,
            guidance=guidance,
            sampler=SamplerSpec("ddim", args.steps),
            seed=args.seed,
            batch_size=args.batch,
        )

    runs: dict[str, tuple[str, Callable[[Any], Tensor]]] = {
        "cfg": (f"sample() CFG s={args.scale:g}", sampler("cfg")),
        "interval": (
            f"sample() cfg_interval ({args.interval[0]:g}, {args.interval[1]:g}]",
            sampler("cfg_interval"),
        ),
        "ours": ("ours: ddim + CFG loop", lambda m: ours_loop(m, noise, labels, args.scale, args.steps)),
    }
    if scheduler is not None:
        runs["diffusers"] = (
            f"diffusers: DDIMScheduler ({args.spacing})",
            lambda m: diffusers_loop(m, scheduler, noise, labels, args.scale, args.steps),
        )

    # Untimed warm-up runs that also count the network's forwards (by batch size) and the NFE.
    calls: dict[str, Counter[int]] = {}
    nfe: dict[str, float] = {}
    images: dict[str, Tensor] = {}
    for key, (_, run) in runs.items():
        counting = CountingModel(model)
        with torch.no_grad(), ForwardProbe(model.net) as probe:
            images[key] = run(counting if key in ("cfg", "interval") else model)
        calls[key] = probe.calls
        rows_seen = sum(rows * n for rows, n in probe.calls.items())
        if key in ("cfg", "interval") and counting.rows != rows_seen:
            raise RuntimeError(f"{key}: CountingModel saw {counting.rows} rows, the network {rows_seen}")
        nfe[key] = rows_seen / args.batch
        image = images[key]
        if image.shape != (args.batch, *model.image_shape) or not torch.isfinite(image).all():
            raise RuntimeError(f"{key} gave images of shape {tuple(image.shape)} or non-finite values")
    sizes = sorted({rows for counter in calls.values() for rows in counter}, reverse=True)

    # Per repeat: bare forwards at each batch size, then every run, each with its time inside the net.
    forward_times: dict[int, list[float]] = {rows: [] for rows in sizes}
    wall: dict[str, list[float]] = {key: [] for key in runs}
    in_net: dict[str, list[float]] = {key: [] for key in runs}
    for repeat in range(args.repeats):
        for rows in sizes:
            forward_times[rows].append(time_forward(model, rows, args.steps, args.seed))
        order = ["cfg", "interval", "ours", "diffusers"]
        if repeat % 2:
            order[2:] = ["diffusers", "ours"]
        order = [key for key in order if key in runs]
        for key in order:
            with torch.no_grad(), ForwardProbe(model.net) as probe:
                start = time.perf_counter()
                runs[key][1](model)
                wall[key].append(time.perf_counter() - start)
            in_net[key].append(probe.seconds)
        timings = ", ".join(f"{key} {wall[key][-1] * 1e3:.1f}" for key in order)
        forwards = ", ".join(f"{rows} rows {forward_times[rows][-1] * 1e3:.2f}" for rows in sizes)
        print(f"  repeat {repeat + 1}/{args.repeats}  forward ({forwards}); runs ({timings}) ms")

    def ideal(key: str, repeat: int) -> float:
        return sum(n * forward_times[rows][repeat] for rows, n in calls[key].items())

    def median_over_repeats(value: Callable[[int], float]) -> float:
        return statistics.median(value(repeat) for repeat in range(args.repeats))

    forward = {rows: statistics.median(values) for rows, values in forward_times.items()}
    median = {key: statistics.median(values) for key, values in wall.items()}
    vs_ideal = {key: median_over_repeats(lambda r, key=key: wall[key][r] / ideal(key, r)) for key in runs}
    # Time per step outside the network (sampler, guidance, scheduler, noise, ...): robust to drift in
    # the machine's speed, since the network's share is timed inside the same run.
    other = {
        key: median_over_repeats(lambda r, key=key: (wall[key][r] - in_net[key][r]) / args.steps)
        for key in runs
    }
    print()
    header = ("measurement", "ms", "forwards", "NFE", "ideal ms", "vs ideal", "in net ms", "other/step")
    print("{:<38} {:>8} {:>12} {:>4} {:>8} {:>8} {:>9} {:>10}   runs (ms)".format(*header))
    for rows in sizes:
        values = ", ".join(f"{value * 1e3:.2f}" for value in forward_times[rows])
        label = f"net forward, {rows} rows"
        print(
            f"{label:<38} {forward[rows] * 1e3:8.2f} {1:>12} {'':>4} {'':>8} {'':>8} {'':>9} {'':>10}"
            f"   {values}"
        )
    for key, (label, _) in runs.items():
        counts = "+".join(f"{n}x{rows}" for rows, n in sorted(calls[key].items(), reverse=True))
        values = ", ".join(f"{value * 1e3:.1f}" for value in wall[key])
        print(
            f"{label:<38} {median[key] * 1e3:8.1f} {counts:>12} {nfe[key]:4.0f} "
            f"{median_over_repeats(lambda r, key=key: ideal(key, r)) * 1e3:8.1f} {vs_ideal[key]:8.3f} "
            f"{statistics.median(in_net[key]) * 1e3:9.1f} {other[key] * 1e3:7.2f} ms   {values}"
        )
    if scheduler is None:
        print(f"{'diffusers: DDIMScheduler':<38} {SKIPPED}")

    ratios = {
        "efficiency": vs_ideal["cfg"],
        "interval": median_over_repeats(lambda r: wall["interval"][r] / wall["cfg"][r]),
    }
    in_run = median_over_repeats(lambda r: wall["cfg"][r] / in_net["cfg"][r])
    print()
    print("ratios are medians over repeats of each repeat's ratio")
    print(
        f"(a) sample() CFG s={args.scale:g} wall / (forwards x bare forward): {ratios['efficiency']:.3f} "
        f"(target <= {TARGET_EFFICIENCY}); wall / time inside its own forwards: {in_run:.3f}, "
        f"{other['cfg'] * 1e3:.2f} ms per step outside the network"
    )
    print(
        f"(b) cfg_interval / CFG wall time: {ratios['interval']:.3f} (forward-time ideal "
        f"{median_over_repeats(lambda r: ideal('interval', r) / ideal('cfg', r)):.3f}); "
        f"NFE {nfe['interval']:g} vs {nfe['cfg']:g} ({nfe['interval'] / nfe['cfg']:.3f})"
    )
    if scheduler is None:
        print(f"(c) ours / diffusers: {SKIPPED}")
        return ratios
    ratios["vs_diffusers"] = median_over_repeats(lambda r: wall["ours"][r] / wall["diffusers"][r])
    difference = (images["ours"] - images["diffusers"]).abs()
    print(
        f"(c) ours / diffusers DDIM + CFG loop time: {ratios['vs_diffusers']:.3f} "
        f"(target <= {TARGET_VS_DIFFUSERS}); outside the network {other['ours'] * 1e3:.2f} vs "
        f"{other['diffusers'] * 1e3:.2f} ms per step"
    )
    print(
        f"    both finite, shape {tuple(images['ours'].shape)}; from the same noise: "
        f"mean |diff| {difference.mean().item():.2e}, max {difference.max().item():.2e}"
    )
    return ratios


if __name__ == "__main__":
    main()
