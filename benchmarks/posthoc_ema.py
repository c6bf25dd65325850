"""Post-hoc EMA cost for the recipe networks: bytes per snapshot, disk per run, the averaging cost per step
and the seconds to rebuild one EMA length from the snapshots.

Run from the repository root::

    .venv/bin/python benchmarks/posthoc_ema.py                          # Fashion-MNIST and CIFAR-10 recipes
    .venv/bin/python benchmarks/posthoc_ema.py --recipes cifar10 --snapshots 4 --dir /scratch

Each recipe's denoiser is built from ``configs/<recipe>/denoiser.yaml`` with random weights; a
``PowerEMA`` of the default profiles (σ_rel 0.05, 0.10) is updated ``--updates`` times (timed per step),
then ``--snapshots`` synthetic snapshots (weights perturbed between them) are written in a temporary folder
exactly as ``callbacks.PostHocEMA`` writes them, and σ_rel 0.07 is rebuilt from them without the cache
(reading every snapshot; the time grows linearly with their number). Snapshots per run are the callback's
default: 16, plus the last step's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from precision import recipe_model

from lightning_diffusion.ema.reconstruct import averaged_state_dict, fit
from lightning_diffusion.ema.snapshots import read_snapshots, write_snapshot
from lightning_diffusion.ema.tracker import PowerEMA

RECIPES = ("fashion_mnist", "cifar10")
SNAPSHOTS_PER_RUN = 17  # the callback's default 16, and the last step's


def measure(recipe: str, snapshots: int, updates: int, folder: Path) -> dict[str, float]:
    """The costs of one recipe's network (see the module docstring)."""
    model, _ = recipe_model(recipe)
    parameters = {name for name, _ in model.named_parameters()}
    buffers = {name: value for name, value in model.state_dict().items() if name not in parameters}
    tracker = PowerEMA(model, [0.05, 0.10])
    start = time.perf_counter()
    for step in range(1, updates + 1):
        tracker.update(step)
    update_ms = (time.perf_counter() - start) / updates * 1e3
    component = {"kind": model.component_kind, "spec": model.spec}
    for index in range(1, snapshots + 1):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1e-3 * torch.randn_like(parameter))
        tracker.update(updates + index * 1000)
        write_snapshot(folder, updates + index * 1000, component, None, tracker.state_dict(), buffers)
    sizes = [path.stat().st_size for path in folder.glob("snapshot-*.pt")]
    start = time.perf_counter()
    averaged_state_dict(fit(read_snapshots(folder), 0.07))
    seconds = time.perf_counter() - start
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "bytes": sum(sizes) / len(sizes),
        "update_ms": update_ms,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--snapshots", type=int, default=4, help="synthetic snapshots rebuilt from")
    parser.add_argument("--updates", type=int, default=20, help="EMA updates timed")
    parser.add_argument("--dir", default=None, help="temporary snapshots' folder (default: the system's)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}; rebuilt from {args.snapshots} snapshots")
    header = ("recipe", "params", "MB/snapshot", f"GB/run ({SNAPSHOTS_PER_RUN})", "update ms/step",
              "rebuild s", "rebuild s/snapshot")  # fmt: skip
    print(" | ".join(header))
    for recipe in args.recipes:
        with tempfile.TemporaryDirectory(dir=args.dir) as folder:
            cost = measure(recipe, args.snapshots, args.updates, Path(folder))
        print(
            f"{recipe} | {cost['parameters'] / 1e6:.2f}M | {cost['bytes'] / 1e6:.1f} | "
            f"{cost['bytes'] * SNAPSHOTS_PER_RUN / 1e9:.2f} | {cost['update_ms']:.2f} | "
            f"{cost['seconds']:.2f} | {cost['seconds'] / args.snapshots:.2f}"
        )


if __name__ == "__main__":
    main()
