"""The SR3 upsampler, cascades of a base denoiser and upsamplers, and the upsampling metrics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny import COND_DIM, digits_datamodule, quiet_trainer, tiny_denoiser

from lightning_diffusion.components import Upsampler
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec, sample_generators
from lightning_diffusion.guidance import ClassifierFree
from lightning_diffusion.metrics.upsampling import UpsamplingMetrics
from lightning_diffusion.nets import UNet
from lightning_diffusion.pipeline import Cascade, CascadeStage, evaluate_upsampler, sample_cascade
from lightning_diffusion.registry import load_component

NULL = 10


def tiny_upsampler(image_size: int = 8, low_res_size: int = 4, seed: int = 0, **kwargs) -> Upsampler:
    """An untrained tiny upsampler with every parameter perturbed, so that zero-initialised layers do
    not hide the conditions."""
    torch.manual_seed(seed)
    net = UNet(in_channels=2, out_channels=1, channels=(8, 16), num_res_blocks=1, cond_dim=COND_DIM)
    model = Upsampler(net, image_shape=(1, image_size, image_size), low_res_size=low_res_size, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def _batch(n: int = 4, size: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(n, 1, size, size, generator=generator) * 2 - 1,
        "label": torch.randint(0, 10, (n,), generator=generator),
    }


def _probe(n: int = 4, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(1))
    return z, torch.linspace(0.2, 0.8, n)


@pytest.fixture(scope="module")
def upsampler() -> Upsampler:
    return tiny_upsampler()


# --- conditions -----------------------------------------------------------------------------------


def test_low_res_condition_is_the_box_downsampled_image_at_level_zero(upsampler):
    batch = _batch()
    cond = upsampler.batch_condition(batch)
    torch.testing.assert_close(cond["low_res"], F.avg_pool2d(batch["image"], 2))
    assert torch.equal(cond["aug_level"], torch.zeros(4))
    assert torch.equal(cond["label"], batch["label"])


def test_low_res_reaches_the_network(upsampler):
    z, t = _probe()
    cond = upsampler.batch_condition(_batch())
    other = {**cond, "low_res": upsampler.low_res_of(_batch(seed=1)["image"])}
    with torch.no_grad():
        change = (upsampler.denoise(z, t, cond) - upsampler.denoise(z, t, other)).abs().amax(dim=(1, 2, 3))
    assert change.min() > 1e-4


def test_augmentation_level_reaches_the_network(upsampler):
    z, t = _probe()
    cond = upsampler.batch_condition(_batch())
    with torch.no_grad():
        clean = upsampler.denoise(z, t, cond)
        augmented = upsampler.denoise(z, t, {**cond, "aug_level": torch.full((4,), 0.5)})
        missing = upsampler.denoise(z, t, {key: cond[key] for key in ("low_res", "label")})
    assert (clean - augmented).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    torch.testing.assert_close(missing, clean)  # a missing level means 0 (clean)


def test_training_condition_noises_low_res_at_levels_up_to_aug_max_t():
    model = tiny_upsampler(aug_max_t=0.3, p_uncond=0.0)
    batch = _batch(n=256)
    torch.manual_seed(0)
    cond = model.training_condition(batch)
    clean = F.avg_pool2d(batch["image"], 2)
    levels = cond["aug_level"]
    assert levels.min() >= 0 and levels.max() <= 0.3 and levels.std() > 0.05
    alpha, sigma = model.schedule.alpha_sigma(levels)
    noise = (cond["low_res"] - alpha[:, None, None, None] * clean) / sigma[:, None, None, None]
    assert abs(noise.std().item() - 1) < 0.05  # z_aug = alpha_s low_res + sigma_s eps
    assert torch.equal(cond["label"], batch["label"])


def test_no_augmentation_with_aug_max_t_zero():
    model = tiny_upsampler(aug_max_t=0.0)
    batch = _batch()
    cond = model.training_condition(batch)
    assert torch.equal(cond["aug_level"], torch.zeros(4))
    torch.testing.assert_close(cond["low_res"], F.avg_pool2d(batch["image"], 2), rtol=0, atol=5e-3)


def test_augment_low_res_draws_its_noise_from_the_per_sample_generators(upsampler):
    low_res = upsampler.low_res_of(_batch()["image"])
    whole = upsampler.augment_low_res(low_res, 0.4, sample_generators(3, range(4)))
    tail = upsampler.augment_low_res(low_res[2:], 0.4, sample_generators(3, range(2, 4)))
    torch.testing.assert_close(tail, whole[2:])
    assert (whole - low_res).abs().max() > 0.1


def test_null_condition_keeps_low_res_and_drops_the_label(upsampler):
    cond = upsampler.batch_condition(_batch())
    null = {**cond, **upsampler.null_condition(4, torch.device("cpu"))}
    assert torch.equal(null["label"], torch.full((4,), NULL))
    assert null["low_res"] is cond["low_res"] and null["aug_level"] is cond["aug_level"]


def test_classifier_free_guidance_on_the_label_works_with_an_upsampler(upsampler):
    z, t = _probe()
    cond = upsampler.batch_condition(_batch())
    with torch.no_grad():
        guided = ClassifierFree(2.0)(upsampler, z, t, cond)
        conditional = upsampler.denoise(z, t, cond)
        unconditional = upsampler.denoise(z, t, {**cond, "label": torch.full((4,), NULL)})
    torch.testing.assert_close(guided, unconditional + 2.0 * (conditional - unconditional))
    assert (conditional - unconditional).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("low_res", "got"),
    [
        (torch.zeros(4, 1, 2, 2), r"got low_res of shape \(4, 1, 2, 2\)"),
        (torch.zeros(4, 3, 4, 4), r"got low_res of shape \(4, 3, 4, 4\)"),
        (None, "got no low_res"),
    ],
)
def test_wrong_or_missing_low_res_is_a_config_error_naming_the_expected_shape(upsampler, low_res, got):
    z, t = _probe()
    cond = {} if low_res is None else {"low_res": low_res}
    with pytest.raises(ConfigError, match=r"expects low_res of shape \(4, 1, 4, 4\).*" + got):
        upsampler.denoise(z, t, cond)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"low_res_size": 3}, "low_res_size must divide"),
        ({"aug_max_t": 1.5}, "aug_max_t"),
        ({"downsample": "bicubic"}, "unknown downsample mode"),
    ],
)
def test_bad_upsampler_arguments_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tiny_upsampler(**kwargs)


def test_upsampler_needs_a_net_with_cond_dim_and_twice_the_image_channels():
    with pytest.raises(ConfigError, match="cond_dim"):
        Upsampler(UNet(in_channels=2, out_channels=1, channels=(8, 16), num_res_blocks=1), num_classes=None)
    with pytest.raises(ConfigError, match="in_channels=1 but the model needs 2"):
        Upsampler(UNet(in_channels=1, channels=(8, 16), num_res_blocks=1, cond_dim=COND_DIM))


# --- training and checkpoints ---------------------------------------------------------------------


def test_tiny_upsampler_trains_on_digits_and_its_checkpoint_round_trips(tmp_path):
    model = tiny_upsampler()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model.train(), datamodule=digits_datamodule())
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    path = tmp_path / "upsampler.ckpt"
    trainer.save_checkpoint(path)

    loaded = load_component(path, kind="upsampler")
    assert isinstance(loaded, Upsampler) and loaded.low_res_shape == (1, 4, 4)
    z, t = _probe()
    cond = model.batch_condition(_batch())
    with torch.no_grad():
        torch.testing.assert_close(loaded.denoise(z, t, cond), model.eval().denoise(z, t, cond))
    with pytest.raises(ConfigError, match=r"of kind 'upsampler'.*not of kind 'denoiser'"):
        load_component(path, kind="denoiser")


# --- cascades -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cascade() -> Cascade:
    base = tiny_denoiser(seed=3).eval()
    upsampler = tiny_upsampler(image_size=16, low_res_size=8, seed=4)
    return Cascade(
        [
            CascadeStage(base, SamplerSpec("ddim", 3)),
            CascadeStage(upsampler, SamplerSpec("ddpm", 2), guidance_scale=2.0, aug_level=0.2),
        ]
    )


def test_cascade_samples_final_size_images_independent_of_batch_size(cascade):
    labels = [0, 1, 2, 3]
    cascade.reset_counts()
    whole = sample_cascade(cascade, labels, seed=5, batch_size=4)
    assert cascade.rows_per_stage == [3 * 4, 2 * 2 * 4]  # steps x samples, CFG doubles the rows
    split = sample_cascade(cascade, labels, seed=5, batch_size=2)
    assert whole.shape == (4, 1, 16, 16) and cascade.image_shape == (1, 16, 16)
    assert whole.min() >= -1 and whole.max() <= 1
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-5)
    assert (whole[0] - whole[1]).abs().max() > 1e-3


def test_cascade_offers_what_a_sweep_needs(cascade):
    assert cascade.num_classes == 10
    assert cascade.device == torch.device("cpu")
    assert sum(p.numel() for p in cascade.parameters()) == sum(
        p.numel() for stage in cascade.stages for p in stage.model.parameters()
    )


def test_mismatched_cascade_stages_are_config_errors():
    base = tiny_denoiser()
    with pytest.raises(
        ConfigError, match=r"stage 1 \(Upsampler, 1x8x8\).*\(1, 4, 4\).*stage 0.*low_res_size 8"
    ):
        Cascade([CascadeStage(base), CascadeStage(tiny_upsampler(image_size=8, low_res_size=4))])
    with pytest.raises(ConfigError, match=r"stage 0 .* must be a base denoiser"):
        Cascade([CascadeStage(tiny_upsampler())])
    with pytest.raises(ConfigError, match=r"stage 1 .* must be an upsampler"):
        Cascade([CascadeStage(base), CascadeStage(tiny_denoiser())])
    with pytest.raises(ConfigError, match="no label or caption to guide"):
        Cascade([CascadeStage(tiny_denoiser(num_classes=None), guidance_scale=3.0)])


def _save(model, path):
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_cascade_from_checkpoints_loads_a_denoiser_then_upsamplers(tmp_path):
    base = _save(tiny_denoiser(), tmp_path / "base.ckpt")
    upsampler = _save(tiny_upsampler(image_size=16, low_res_size=8), tmp_path / "up.ckpt")
    cascade = Cascade.from_checkpoints(
        [base, upsampler], sampler=[SamplerSpec("ddim", 2), SamplerSpec("ddim", 1)], aug_level=0.1
    )
    assert [stage.sampler.steps for stage in cascade.stages] == [2, 1]
    assert [stage.aug_level for stage in cascade.stages] == [0.0, 0.1]
    assert sample_cascade(cascade, [1, 2], seed=0).shape == (2, 1, 16, 16)
    with pytest.raises(ConfigError, match=r"of kind 'upsampler'.*not of kind 'denoiser'"):
        Cascade.from_checkpoints([upsampler, upsampler])
    with pytest.raises(ConfigError, match="sampler lists 3 values for 2 stages"):
        Cascade.from_checkpoints([base, upsampler], sampler=["ddim", "ddim", "heun"])


# --- metrics --------------------------------------------------------------------------------------


def test_psnr_of_identical_images_is_infinite_or_very_large():
    images = _batch()["image"]
    metrics = UpsamplingMetrics(low_res_size=4)
    metrics.update(images, images, F.avg_pool2d(images, 2))
    values = metrics.compute()
    assert values["psnr"] > 100 and values["consistency"] < 1e-6


def test_psnr_of_known_noise_is_the_mean_of_ten_log10_one_over_mse():
    target = torch.zeros(3, 1, 8, 8)  # 0.5 in [0, 1]
    noise = 0.05 * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # in [0, 1] units
    output = target + 2 * noise
    metrics = UpsamplingMetrics(low_res_size=4)
    metrics.update(output, target, F.avg_pool2d(target, 2))
    mse = noise.square().flatten(1).mean(dim=1)
    expected = (10 * torch.log10(1 / mse)).mean().item()
    assert math.isclose(metrics.compute()["psnr"], expected, rel_tol=1e-4)


def test_consistency_of_an_exact_upsample_of_the_low_res_input_is_zero():
    low_res = _batch(size=4)["image"]
    output = F.interpolate(low_res, scale_factor=2, mode="nearest")
    metrics = UpsamplingMetrics(low_res_size=4, downsample="area")
    metrics.update(output, torch.zeros_like(output), low_res)
    assert metrics.compute()["consistency"] < 1e-6


def test_evaluate_upsampler_scores_the_upsampler_and_the_bilinear_baseline(upsampler):
    images = _batch(n=5)["image"]
    values = evaluate_upsampler(
        upsampler, images, batch_size=2, sampler=SamplerSpec("ddim", 2), seed=0, aug_level=0.1
    )
    assert set(values) == {"psnr", "consistency", "bilinear_psnr", "bilinear_consistency"}
    assert all(math.isfinite(value) for value in values.values())
    with pytest.raises(ConfigError, match="real images have shape"):
        evaluate_upsampler(upsampler, torch.zeros(2, 1, 16, 16))
