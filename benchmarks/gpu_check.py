"""The GPU check of the CIFAR-10 recipe's U-Net: one table, in well under 8 minutes on one GPU.

    scripts/gpu_check.sh            # on a GPU: the recipe U-Net, batch 128 training, batch 1000 sampling
    scripts/gpu_check.sh --smoke    # the same code on the CPU: a tiny net, tiny batches, few steps

Rows: training images/s of the plain PyTorch loop and of Lightning's ``Trainer.fit`` on the same
module, synthetic batches and optimizer (the module's own fused AdamW, bf16 autocast both), eager and
compiled (channels-last weights and TF32 matmuls both; Lightning gets them from the ``GPUSpeedups``
callback, the plain loop from the same ``apply_speedups``); classifier-free-guided DDIM sampling
images/s at batch 1000, eager and compiled, and compiled with a guidance interval (CFG inside: 2B rows
per step, one pass of B rows outside: two shapes, each compiled once); the graphs torch.compile built
during each timed run (0 means no recompilation); and a sampling run under
``torch.cuda.set_sync_debug_mode("error")``, which fails on any host-device synchronisation in the
per-step path (not checked on the CPU; tests/test_no_sync.py checks it there with the meta device).
Ratios: compiled/eager (target >= 1.2 for training) and Lightning/plain (target >= 0.95 compiled).
The net is the one in configs/cifar10/denoiser.yaml when that file exists, else ``RECIPE_NET``.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import yaml
from training import (
    NUM_CLASSES,
    build_denoiser,
    quiet,
    synchronize,
    synthetic_loader,
    time_lightning,
    time_plain,
)

from lightning_diffusion.compilation import apply_speedups, compiled_graphs
from lightning_diffusion.components import Denoiser
from lightning_diffusion.diffusion import SamplerSpec, randn, sample_generators
from lightning_diffusion.guidance import ClassifierFree, Guidance, GuidanceInterval, GuidedDenoiser

RECIPE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cifar10" / "denoiser.yaml"
RECIPE_NET = {
    "channels": (128, 256, 256, 256),
    "num_res_blocks": 2,
    "attention_levels": (1,),  # 16x16 of a 32x32 image
    "dropout": 0.1,
    "cond_dim": 512,
}
RECIPE_SHAPE = (3, 32, 32)
SMOKE_NET = {"channels": (16, 32), "num_res_blocks": 1, "attention_levels": (1,), "cond_dim": 32}
SMOKE_SHAPE = (3, 16, 16)
SCALE = 2.0
INTERVAL = (0.28, 2.9)  # EDM noise levels sigma/alpha
TARGET_COMPILED = 1.2
TARGET_LIGHTNING = 0.95


@dataclass(frozen=True)
class Plan:
    """What one run measures: the net, the device and the sizes."""

    device: str
    shape: tuple[int, ...]
    net: dict
    train_batch: int
    warmup: int
    train_steps: int
    sample_batch: int
    sample_steps: int


def recipe_net() -> tuple[tuple[int, ...], dict]:
    """The CIFAR-10 recipe's image shape and U-Net settings: from its config when present."""
    if not RECIPE_CONFIG.is_file():
        return RECIPE_SHAPE, dict(RECIPE_NET)
    model = yaml.safe_load(RECIPE_CONFIG.read_text())["model"]["init_args"]
    net = dict(model["net"]["init_args"])
    net.pop("in_channels", None)
    return tuple(model.get("image_shape", RECIPE_SHAPE)), net


def plan_for(args: argparse.Namespace) -> Plan:
    if args.smoke:
        return Plan("cpu", SMOKE_SHAPE, SMOKE_NET, 8, 2, 3, 8, 2)
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device here; run with --smoke for the CPU version of this check.")
    shape, net = recipe_net()
    return Plan(
        "cuda", shape, net, args.batch, args.warmup, args.train_steps, args.sample_batch, args.sample_steps
    )


def build(plan: Plan, seed: int = 0) -> Denoiser:
    net = dict(plan.net)
    return build_denoiser(seed, plan.shape, net, cond_dim=net.pop("cond_dim", RECIPE_NET["cond_dim"]))


@contextlib.contextmanager
def peak_memory(device: str) -> Iterator[list[float]]:
    """Yields a list that holds, after the block, the peak memory in GiB: allocated on the GPU during the
    block, or the process's peak resident set on the CPU."""
    result: list[float] = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    yield result
    if device == "cuda":
        result.append(torch.cuda.max_memory_allocated() / 2**30)
    else:
        result.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


@dataclass
class Row:
    name: str
    images_per_second: float
    peak_gib: float
    graphs: str = ""
    ratio: str = ""


def train_row(plan: Plan, loop: str, compiled: bool) -> Row:
    """Training images/s of ``loop`` ("plain" or "lightning") eager or compiled."""
    timer: Callable[..., float] = time_plain if loop == "plain" else time_lightning
    loader = synthetic_loader(plan.train_batch, 4, plan.shape, pin_memory=plan.device == "cuda")
    speedups = {"compile": compiled}
    before = compiled_graphs()
    with peak_memory(plan.device) as peak:
        seconds = timer(
            0, plan.warmup, plan.train_steps, build(plan), loader, plan.device, "bf16-mixed", speedups
        )
    loop_name = "Lightning fit" if loop == "lightning" else "plain loop"
    name = f"train {loop_name} {'compiled' if compiled else 'eager'}"
    return Row(name, plan.train_batch / seconds, peak[0], f"{compiled_graphs() - before} (all steps)")


def sampler_run(plan: Plan, model: Denoiser, guidance: Guidance) -> Callable[[], torch.Tensor]:
    """One guided DDIM run over a fixed batch (labels 0..9 repeated, per-sample noise)."""
    device = torch.device(plan.device)
    generators = sample_generators(0, range(plan.sample_batch), device)
    labels = torch.arange(plan.sample_batch, device=device) % NUM_CLASSES
    noise = randn(generators, model.sample_shape).to(device)
    guided = GuidedDenoiser(model, guidance, {"label": labels})  # its label check runs here, once
    spec = SamplerSpec("ddim", plan.sample_steps)
    return lambda: spec.sample(guided, noise, model.schedule)


@torch.no_grad()
def sample_row(plan: Plan, model: Denoiser, guidance: Guidance, name: str) -> Row:
    """Sampling images/s of one run after an untimed one (which compiles), and the graphs the timed
    run built."""
    run = sampler_run(plan, model, guidance)
    device = torch.device(plan.device)
    with peak_memory(plan.device) as peak:
        warm = compiled_graphs()
        run()
        synchronize(device)
        before = compiled_graphs()
        start = time.perf_counter()
        run()
        synchronize(device)
        seconds = time.perf_counter() - start
    graphs = f"{compiled_graphs() - before} (warm-up {before - warm})"
    return Row(name, plan.sample_batch / seconds, peak[0], graphs)


@torch.no_grad()
def sync_free_sampling(plan: Plan, model: Denoiser) -> str:
    """Run the sampler's steps under ``set_sync_debug_mode("error")``: "pass", or the error."""
    run = sampler_run(plan, model, ClassifierFree(SCALE))
    if plan.device != "cuda":
        run()
        return "not checked on the CPU (ran; see tests/test_no_sync.py)"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    except RuntimeError as error:
        return f"FAIL: {str(error).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return "pass"


def ratio(numerator: Row, denominator: Row, label: str, target: float | None = None) -> str:
    value = numerator.images_per_second / denominator.images_per_second
    verdict = "" if target is None else f" (target >= {target}: {'ok' if value >= target else 'MISS'})"
    return f"{label} {value:.2f}x{verdict}"


def print_table(rows: list[Row], sync: str, plan: Plan) -> None:
    width = max(len(row.name) for row in rows)
    memory = "peak GiB" if plan.device == "cuda" else "peak RSS GiB"
    print(f"{'measurement':<{width}} {'images/s':>10} {memory:>12}  {'graphs built':<16} ratio")
    for row in rows:
        print(
            f"{row.name:<{width}} {row.images_per_second:>10.1f} {row.peak_gib:>12.2f}  "
            f"{row.graphs:<16} {row.ratio}"
        )
    print(f"{'sampling under set_sync_debug_mode(error)':<{width}} {sync}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny net on the CPU, to test this script")
    parser.add_argument("--batch", type=int, default=128, help="training batch (the recipe's)")
    parser.add_argument("--warmup", type=int, default=15, help="untimed training steps (compilation)")
    parser.add_argument("--train_steps", type=int, default=50, help="timed training steps")
    parser.add_argument("--sample_batch", type=int, default=1000, help="sampling batch")
    parser.add_argument("--sample_steps", type=int, default=20, help="DDIM steps per sampling run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_for(args)
    quiet()
    device = torch.cuda.get_device_name() if plan.device == "cuda" else "CPU"
    print(
        f"torch {torch.__version__} on {device}; net {plan.net}, images {plan.shape}; training batch "
        f"{plan.train_batch}, {plan.warmup} warm-up + {plan.train_steps} timed steps, bf16 autocast; "
        f"sampling batch {plan.sample_batch}, DDIM {plan.sample_steps} steps, CFG s = {SCALE}"
    )
    started = time.perf_counter()
    plain_eager, lightning_eager = train_row(plan, "plain", False), train_row(plan, "lightning", False)
    plain_compiled, lightning_compiled = train_row(plan, "plain", True), train_row(plan, "lightning", True)
    plain_compiled.ratio = ratio(plain_compiled, plain_eager, "compiled/eager", TARGET_COMPILED)
    lightning_eager.ratio = ratio(lightning_eager, plain_eager, "Lightning/plain")
    lightning_compiled.ratio = ratio(lightning_compiled, plain_compiled, "Lightning/plain", TARGET_LIGHTNING)
    model = build(plan).to(plan.device).eval()
    apply_speedups(model, compile=False)
    sample_eager = sample_row(plan, model, ClassifierFree(SCALE), "sample CFG eager")
    sync = sync_free_sampling(plan, model)
    apply_speedups(model, compile=True)
    sample_compiled = sample_row(plan, model, ClassifierFree(SCALE), "sample CFG compiled")
    sample_compiled.ratio = ratio(sample_compiled, sample_eager, "compiled/eager")
    interval = sample_row(
        plan, model, GuidanceInterval(ClassifierFree(SCALE), *INTERVAL), "sample CFG-interval compiled"
    )
    print()
    rows = [plain_eager, lightning_eager, plain_compiled, lightning_compiled, sample_eager, sample_compiled]
    print_table([*rows, interval], sync, plan)
    compiled_vs_eager = ratio(lightning_compiled, lightning_eager, "compiled/eager", TARGET_COMPILED)
    print(f"Lightning fit {compiled_vs_eager}; total {time.perf_counter() - started:.0f} s")
    return 0 if sync.startswith(("pass", "not checked")) else 1


if __name__ == "__main__":
    sys.exit(main())
