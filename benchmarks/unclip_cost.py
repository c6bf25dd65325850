"""Cost of unCLIP sampling against the GLIDE-style text denoiser, per denoising step at one batch size:
the prior's step (k candidates per caption, CFG: 2k embedding rows per caption) and the decoder's CFG
step, against the text denoiser's CFG step. With the same number of steps in prior and decoder, a
whole unCLIP sample costs (prior + decoder) / text denoiser of a GLIDE sample.

Run from the repository root::

    .venv/bin/python benchmarks/unclip_cost.py \
        --encoder runs/study/shapes/contrastive_encoder/checkpoints/last.ckpt

Components are built from ``configs/<data>/{denoiser or text_denoiser, unclip_decoder, prior}.yaml``
with untrained weights (timing does not depend on them; the encoder checkpoint is only needed because
prior and decoder embed with it), fp32 on the CPU under ``torch.no_grad()``; medians over repeats.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from timing import REPO, build, measure, print_table

from lightning_diffusion.guidance import ClassifierFree

TEXT_DENOISER_CONFIG = {"shapes": "denoiser.yaml", "fashion_mnist": "text_denoiser.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="shapes", choices=sorted(TEXT_DENOISER_CONFIG))
    parser.add_argument("--encoder", required=True, help="contrastive encoder checkpoint of that data")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--candidates", type=int, default=2, help="prior candidates per caption")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = REPO / "configs" / args.data
    encoder = ("--model.init_args.encoder", args.encoder)
    text_denoiser = build(folder / TEXT_DENOISER_CONFIG[args.data])
    decoder, prior = build(folder / "unclip_decoder.yaml", *encoder), build(folder / "prior.yaml", *encoder)
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(args.batch, *text_denoiser.image_shape, generator=generator)
    t = torch.full((args.batch,), 0.5)
    captions = ["a small red circle above a blue square"] * args.batch
    rows = args.batch * args.candidates
    embedding_z = torch.randn(rows, *prior.sample_shape, generator=generator)
    prior_cond = {"caption": captions * args.candidates}
    embeddings = torch.nn.functional.normalize(
        torch.randn(args.batch, decoder.embed_dim, generator=generator)
    )
    cfg = ClassifierFree(3.0)
    steps = {
        "text denoiser, cfg": lambda: cfg(text_denoiser, z, t, {"caption": captions}),
        "decoder, cfg": lambda: cfg(decoder, z, t, {"caption": captions, "image_embedding": embeddings}),
        f"prior, cfg, k={args.candidates}": lambda: cfg(prior, embedding_z, t[:1].expand(rows), prior_cond),
    }
    times = measure(steps, args.repeats)
    threads = torch.get_num_threads()
    print(
        f"{args.data}: batch {args.batch}, image {tuple(text_denoiser.image_shape)}, {threads} threads, s = 3"
    )
    print_table(times, {"x text": "text denoiser, cfg"})
    unclip = [
        p + d for p, d in zip(times[f"prior, cfg, k={args.candidates}"], times["decoder, cfg"], strict=True)
    ]
    ratio = statistics.median(u / g for u, g in zip(unclip, times["text denoiser, cfg"], strict=True))
    print(f"unCLIP step (prior + decoder) / GLIDE step: {ratio:.2f}")


if __name__ == "__main__":
    main()
