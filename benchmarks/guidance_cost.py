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

import torch
from timing import REPO, build, measure, print_table

from lightning_diffusion.guidance import ClassifierFree, ClipGuidance


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
    times = measure(steps, args.repeats)
    threads = torch.get_num_threads()
    print(f"{args.data}: batch {args.batch}, image {tuple(model.image_shape)}, {threads} threads")
    print_table(times, {"x cond": "conditional", "x cfg": "cfg (s = 3)"})


if __name__ == "__main__":
    main()
