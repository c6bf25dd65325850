"""Cost of one guided denoising step: CLIP guidance (a forward and a backward pass of the contrastive
encoder's image tower on top of the model's forward) vs classifier-free guidance (one batched forward of
caption + empty caption), both against one plain conditional pass of the denoiser at the same batch size.

Run from the repository root::

    .venv/bin/python benchmarks/guidance_cost.py                    # shapes configs, batch 250, 20 repeats
    .venv/bin/python benchmarks/guidance_cost.py --batch 64 --repeats 5 --threads 1

The denoiser and the contrastive encoder are built from ``configs/<data>/denoiser.yaml`` and
``configs/<data>/contrastive_encoder.yaml`` (untrained weights: timing does not depend on them), in
fp32 on the CPU under ``torch.no_grad()`` as sampling runs. Each measurement runs once untimed, then
``--repeats`` times; the table shows medians (milliseconds per step) and each ratio is the median over
repeats of that repeat's ratio, so drifts in the machine's speed cancel.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import train
from lightning_diffusion.guidance import ClassifierFree, ClipGuidance

REPO = Path(__file__).resolve().parents[1]


def build(config: Path) -> torch.nn.Module:
    """The component a training config describes, in eval mode, without a Trainer run."""
    cli = train.main(args=["--config", str(config), "--trainer.logger", "false"], run=False)
    return cli.model.float().eval().requires_grad_(False)


def seconds(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default="shapes", help="config folder with denoiser and contrastive_encoder"
    )
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = REPO / "configs" / args.data
    model, encoder = build(folder / "denoiser.yaml"), build(folder / "contrastive_encoder.yaml")
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(args.batch, *model.image_shape, generator=generator)
    t = torch.full((args.batch,), 0.5)
    captions = ["a small red circle above a blue square"] * args.batch
    cond = {"caption": captions}
    cfg, clip = ClassifierFree(3.0), ClipGuidance(encoder, 3.0)  # CLIP embeds the captions once
    steps = {
        "conditional": lambda: model.denoise(z, t, cond),
        "cfg (s = 3)": lambda: cfg(model, z, t, cond),
        "clip (s = 3)": lambda: clip(model, z, t, cond),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    with torch.no_grad():
        for step in steps.values():
            step()
        for _ in range(args.repeats):
            for name, step in steps.items():
                times[name].append(seconds(step))
    threads = torch.get_num_threads()
    print(f"{args.data}: batch {args.batch}, image {tuple(model.image_shape)}, {threads} threads")
    print(f"{'step':<14} {'ms/step':>9} {'x cond':>8} {'x cfg':>7}")
    for name, values in times.items():
        plain = statistics.median(v / b for v, b in zip(values, times["conditional"], strict=True))
        cfg = statistics.median(v / c for v, c in zip(values, times["cfg (s = 3)"], strict=True))
        print(f"{name:<14} {1000 * statistics.median(values):>9.1f} {plain:>8.2f} {cfg:>7.2f}")


if __name__ == "__main__":
    main()
