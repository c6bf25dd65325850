"""Network evaluations saved by shared trajectories (``sweep.sharing``) on a sweep config's rows and scales.

Run from the repository root::

    .venv/bin/python benchmarks/shared_trajectories.py                       # the Fashion-MNIST lab sweep
    .venv/bin/python benchmarks/shared_trajectories.py --config configs/fashion_mnist/sweep.yaml

Every row of the config is sampled at each of its scales on one small batch, once with each scale alone
and once with the row's scales together (as the sweep groups them), through the sweep's own row plans and
samplers, and the counted network rows per sample (NFE, as the sweep reports it: guidance passes and the
guide of autoguidance included) are compared. NFE does not depend on the weights or the image size, so
the models are tiny and untrained (1x8x8, 10 classes) and the numbers hold for the trained 32x32 ones;
the samples with and without sharing are checked to be bit-identical on the way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from lightning_diffusion.components import Denoiser, NoisyClassifier
from lightning_diffusion.diffusion import sample_generators
from lightning_diffusion.nets import EncoderUNet, UNet
from lightning_diffusion.sweep import SweepSettings
from lightning_diffusion.sweep.models import SweepModels
from lightning_diffusion.sweep.sharing import ScaleGroup, shares_prefix

REPO = Path(__file__).resolve().parent.parent
FIELDS = ("methods", "scales", "sampler", "interval", "rescale", "threshold")


def tiny_models() -> SweepModels:
    """An untrained denoiser, guide (autoguidance) and noisy classifier on 1x8x8 images with 10 classes."""
    torch.manual_seed(0)

    def denoiser() -> Denoiser:
        net = UNet(in_channels=1, channels=(8, 16), num_res_blocks=1, cond_dim=16)
        return Denoiser(net, image_shape=(1, 8, 8), num_classes=10).eval()

    net = EncoderUNet(in_channels=1, out_dim=10, channels=(8, 16), num_res_blocks=1)
    classifier = NoisyClassifier(net, image_shape=(1, 8, 8), num_classes=10).eval()
    return SweepModels(denoiser(), None, roles={"guide": denoiser(), "classifier": classifier})


def nfe(config: Path, batch: int) -> list[tuple[str, float, float, float]]:
    """(row, scale, NFE alone, NFE shared) for every row and scale of ``config``."""
    values = yaml.safe_load(config.read_text())
    settings = SweepSettings(**{name: values[name] for name in FIELDS if name in values})
    models = tiny_models()
    cond = {"label": torch.arange(batch) % 10}
    results = []
    for plan in settings.plans():
        alone = []
        for scale in plan.scales:
            sampler = plan.method.sampler(models, plan, scale)
            images = sampler.sample_batch(sample_generators(0, range(batch)), cond)
            alone.append((images, sampler.evaluations() / batch))
        group = ScaleGroup([plan.method.sampler(models, plan, scale) for scale in plan.scales])
        generators = sample_generators(0, range(batch))
        if len(plan.scales) > 1 and shares_prefix(plan.method, group.samplers[0], generators, cond):
            together = group.sample(generators, cond)
            shared = [group.evaluations(index) / batch for index in range(len(plan.scales))]
        else:
            together, shared = [images for images, _ in alone], [count for _, count in alone]
        for scale, (images, count), same, amortised in zip(plan.scales, alone, together, shared, strict=True):
            if not torch.equal(images, same):
                raise AssertionError(f"{plan.label} s={scale:g}: shared samples differ from unshared ones")
            results.append((plan.label, scale, count, amortised))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fashion_mnist" / "lab_sweep.yaml")
    parser.add_argument("--batch", type=int, default=4, help="samples per row (NFE does not depend on it)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    rows = nfe(args.config, args.batch)
    print(f"{args.config}: sampler {yaml.safe_load(args.config.read_text()).get('sampler')}")
    print(f"{'row':<22}{'scale':>7}{'NFE alone':>12}{'NFE shared':>12}")
    for label, scale, alone, shared in rows:
        print(f"{label:<22}{scale:>7g}{alone:>12.2f}{shared:>12.2f}")
    total_alone, total_shared = sum(row[2] for row in rows), sum(row[3] for row in rows)
    print(
        f"total per sample over {len(rows)} rows x scales: {total_alone:g} without sharing, {total_shared:g} "
        f"with; saved {total_alone - total_shared:g} ({1 - total_shared / total_alone:.1%}), ratio "
        f"{total_shared / total_alone:.3f}; samples bit-identical"
    )


if __name__ == "__main__":
    main()
