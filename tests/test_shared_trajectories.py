"""Shared trajectories: the scales of a row whose guidance is scale-free for a while (outside a guidance
interval, where a schedule is zero) compute that prefix once per batch and branch, with samples
bit-identical to running each scale alone, for deterministic, stochastic and multistep solvers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_sweep import checkpoints, sweep_args  # noqa: F401 - the module-scoped checkpoints fixture
from tiny import tiny_denoiser

import evaluate
from lightning_diffusion.diffusion import SamplerSpec, sample_generators
from lightning_diffusion.guidance import build_guidance
from lightning_diffusion.sampling import CountingModel, generate
from lightning_diffusion.sweep.methods import RowSampler
from lightning_diffusion.sweep.sharing import ScaleGroup

INTERVAL = (0.3, 5.0)
SCALES = (2.0, 3.0, 5.0)
SPECS = {
    "ddim": SamplerSpec("ddim", steps=8, grid="logsnr", sigma_max=80.0),
    "ddim_eta": SamplerSpec("ddim", steps=8, grid="logsnr", sigma_max=80.0, eta=0.7),
    "dpmpp_2m": SamplerSpec("dpmpp_2m", steps=8, grid="logsnr", sigma_max=80.0),
    "unipc": SamplerSpec("unipc", steps=8, grid="logsnr", sigma_max=80.0),
}
ROWS = {
    "cfg_interval": {"method": "cfg", "interval": INTERVAL},
    "cfg_zero_star": {"method": "cfg_zero_star"},
    "cfg_zero_star_interval": {"method": "cfg_zero_star", "interval": INTERVAL},
    "cfg_linear": {"method": "cfg", "schedule": {"name": "linear"}},
}


@pytest.fixture(scope="module")
def model():
    return tiny_denoiser()


def row_sampler(model, row: dict, scale: float, spec: SamplerSpec) -> RowSampler:
    """What a sweep's guided row samples with: a counted denoiser and the row's guidance at ``scale``."""
    counted = CountingModel(model)
    guidance = build_guidance(
        row["method"], scale, interval=row.get("interval"), schedule=row.get("schedule")
    )
    return RowSampler(
        lambda generators, cond: generate(counted, guidance, generators, cond, spec), lambda: counted.rows
    )


def batch(size: int = 5):
    generators = sample_generators(0, range(size))
    return generators, {"label": torch.arange(size) % 10}


def levels_above(spec: SamplerSpec, schedule, level: float) -> int:
    """Grid points (network evaluations of these one-evaluation-per-step solvers) above ``level``."""
    alpha, sigma = schedule.alpha_sigma(spec.times(schedule)[:-1])
    return int((sigma / alpha > level).sum())


@pytest.mark.parametrize("solver", SPECS)
@pytest.mark.parametrize("row", ROWS)
def test_shared_scales_are_bit_identical_and_save_the_prefix(model, solver, row):
    spec, size = SPECS[solver], 5
    alone = []
    alone_rows = 0
    for scale in SCALES:
        sampler = row_sampler(model, ROWS[row], scale, spec)
        generators, cond = batch(size)
        alone.append(sampler.sample_batch(generators, cond))
        alone_rows += sampler.evaluations()
    group = ScaleGroup([row_sampler(model, ROWS[row], scale, spec) for scale in SCALES])
    generators, cond = batch(size)
    shared = group.sample(generators, cond)
    for single, together in zip(alone, shared, strict=True):
        assert torch.equal(single, together)
    shared_rows = sum(sampler.evaluations() for sampler in group.samplers)
    prefix = {
        "cfg_interval": levels_above(spec, model.schedule, INTERVAL[1]),
        "cfg_zero_star": 0,  # its zeroed steps evaluate no network: nothing to share
        "cfg_zero_star_interval": levels_above(spec, model.schedule, INTERVAL[1]),
        "cfg_linear": 0,  # zero only at t = 1, above this grid's first level
    }[row]
    assert prefix > 0 or "interval" not in row
    assert group.prefix_rows == prefix * size
    assert shared_rows == alone_rows - (len(SCALES) - 1) * prefix * size
    assert sum(group.evaluations(i) for i in range(len(SCALES))) == pytest.approx(shared_rows)


def test_a_schedule_zero_at_the_top_shares_its_first_step(model):
    """The linear schedule is zero at t = 1 (the uniform grid's first point from the schedule's top)."""
    spec = SamplerSpec("ddim", steps=6)
    group = ScaleGroup([row_sampler(model, ROWS["cfg_linear"], scale, spec) for scale in SCALES])
    generators, cond = batch(4)
    group.sample(generators, cond)
    alone = row_sampler(model, ROWS["cfg_linear"], SCALES[0], spec)
    alone.sample_batch(*batch(4))
    assert group.prefix_rows == 4  # the first step: CFG at scale 0, one unconditional pass
    assert group.samplers[1].evaluations() == alone.evaluations() - 4


def test_a_prefix_that_lies_is_evaluated_not_replayed(model, monkeypatch):
    """Replay compares each call's inputs bitwise: a guidance wrongly claiming to be scale-free costs
    evaluations, never wrong samples."""
    from lightning_diffusion.guidance.classifier_free import ClassifierFree

    monkeypatch.setattr(ClassifierFree, "scale_free", lambda self, model, t: True)
    spec = SPECS["dpmpp_2m"]
    alone = [row_sampler(model, {"method": "cfg"}, scale, spec).sample_batch(*batch()) for scale in SCALES]
    group = ScaleGroup([row_sampler(model, {"method": "cfg"}, scale, spec) for scale in SCALES])
    for single, together in zip(alone, group.sample(*batch()), strict=True):
        assert torch.equal(single, together)


def run(checkpoints, out, share: bool, *extra: str) -> list[dict]:  # noqa: F811
    args = sweep_args(checkpoints, out, "--sampler.steps", "8", "--sampler.grid", "logsnr",
                      "--sampler.sigma_max", "80", "--save_samples", "true",
                      "--share_trajectories", str(share).lower(), *extra)  # fmt: skip
    return evaluate.main(args)


@pytest.mark.parametrize("sampler", [("ddim", "--sampler.eta", "0.5"), ("unipc",)])
def test_sweep_rows_are_the_same_with_sharing_on_and_off(checkpoints, tmp_path, sampler, monkeypatch):  # noqa: F811
    """Rows equal but for NFE and seconds. The Inception Score's split permutes the samples with the global
    generator (torchmetrics), which moves its float sum in the 7th digit from call to call: not permuted
    here."""
    monkeypatch.setattr(torch, "randperm", lambda n, **kwargs: torch.arange(n))
    extra = ("--methods", "[cfg_interval,cfg]", "--interval", "[0.3,5.0]", "--scales", "[1,2,3]",
             "--sampler.name", *sampler)  # fmt: skip
    off = run(checkpoints, tmp_path / "off", False, *extra)
    on = run(checkpoints, tmp_path / "on", True, *extra)
    assert json.loads((tmp_path / "on" / "sweep.json").read_text()) == on
    assert [row["method"] for row in on] == ["cfg_interval"] * 3 + ["cfg"] * 3
    for shared, alone in zip(on, off, strict=True):
        assert {k: v for k, v in shared.items() if k not in ("nfe", "seconds")} == {
            k: v for k, v in alone.items() if k not in ("nfe", "seconds")
        }
        tag = f"{shared['method']}_s{shared['scale']:g}"
        for key in ("arr_0", "arr_1"):
            np.testing.assert_array_equal(
                np.load(tmp_path / "on" / f"samples_{tag}.npz")[key],
                np.load(tmp_path / "off" / f"samples_{tag}.npz")[key],
            )
    spec = SamplerSpec(sampler[0], steps=8, grid="logsnr", sigma_max=80.0)
    prefix = levels_above(spec, tiny_denoiser().schedule, 5.0)
    assert prefix > 0
    saved = sum(a["nfe"] for a in off[:3]) - sum(s["nfe"] for s in on[:3])
    assert saved == pytest.approx(2 * prefix)  # three scales, the prefix run once instead of three times
    assert [s["nfe"] for s in on[3:]] == [a["nfe"] for a in off[3:]]  # plain cfg shares nothing
