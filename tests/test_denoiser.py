"""The denoiser component, classifier-free guidance and the ``sample`` API."""

from __future__ import annotations

import math

import pytest
import torch
from gaussian import DIM, SHAPE, GaussianData
from tiny import digits_datamodule, quiet_trainer, tiny_denoiser, tiny_unet

from lightning_diffusion import sample
from lightning_diffusion.components import Denoiser
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import CosineSchedule, SamplerSpec, score_from_denoised
from lightning_diffusion.guidance import ClassifierFree, GuidedDenoiser

NULL = 10


def _batch(n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(n, 1, 8, 8, generator=generator) * 2 - 1,
        "label": torch.randint(0, 10, (n,), generator=generator),
    }


def _probe(n: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.linspace(0.2, 0.8, n)


def _labels_seen_in_training_step(model: Denoiser, batch: dict, monkeypatch) -> list[torch.Tensor]:
    """Run ``training_step`` and return the labels it passed to ``denoise``."""
    seen: list[torch.Tensor] = []
    original = model.denoise

    def spy(z, t, cond=None):
        seen.append((cond or {}).get("label"))
        return original(z, t, cond)

    monkeypatch.setattr(model, "denoise", spy)
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    return seen


# --- condition dropout ----------------------------------------------------------------------------


def test_p_uncond_one_replaces_every_training_label_by_the_null_label(monkeypatch):
    seen = _labels_seen_in_training_step(tiny_denoiser(p_uncond=1.0), _batch(), monkeypatch)
    assert len(seen) == 1
    assert torch.equal(seen[0], torch.full((64,), NULL))


def test_p_uncond_zero_keeps_every_training_label(monkeypatch):
    batch = _batch()
    seen = _labels_seen_in_training_step(tiny_denoiser(p_uncond=0.0), batch, monkeypatch)
    assert len(seen) == 1
    assert torch.equal(seen[0], batch["label"])


def test_condition_dropout_drops_labels_at_rate_p_uncond():
    model = tiny_denoiser(p_uncond=0.3)
    labels = torch.randint(0, 10, (20000,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    dropped = model.training_condition({"image": torch.zeros(20000, 1, 1, 1), "label": labels})["label"]
    is_null = dropped == NULL
    assert abs(is_null.float().mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 20000)
    assert torch.equal(dropped[~is_null], labels[~is_null])


def test_unconditional_training_step_passes_no_label(monkeypatch):
    seen = _labels_seen_in_training_step(tiny_denoiser(num_classes=None), _batch(), monkeypatch)
    assert seen == [None]


# --- labels in denoise ----------------------------------------------------------------------------


def test_missing_label_in_denoise_means_the_null_label():
    model = tiny_denoiser()
    z, t = _probe()
    with torch.no_grad():
        missing = model.denoise(z, t)
        empty = model.denoise(z, t, {})
        null = model.denoise(z, t, {"label": torch.full((4,), NULL)})
        conditional = model.denoise(z, t, {"label": torch.tensor([0, 1, 2, 3])})
    torch.testing.assert_close(missing, null, rtol=0, atol=0)
    torch.testing.assert_close(empty, null, rtol=0, atol=0)
    assert (conditional - null).abs().max() > 1e-4  # the label does reach the network


@pytest.mark.parametrize("bad_label", [-1, NULL + 1])
def test_labels_out_of_range_are_a_config_error_when_sampling_starts(bad_label):
    model = tiny_denoiser()
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 9\] \(or 10 for ∅\)"):
        GuidedDenoiser(model, ClassifierFree(2.0), {"label": torch.tensor([0, 1, 2, bad_label])})


def test_null_condition_is_a_batch_of_null_labels():
    condition = tiny_denoiser().null_condition(3, torch.device("cpu"))
    assert torch.equal(condition["label"], torch.full((3,), NULL))


# --- unconditional mode and configuration errors --------------------------------------------------


def test_unconditional_denoiser_ignores_labels():
    model = tiny_denoiser(num_classes=None)
    z, t = _probe()
    assert model.label_embedding is None and model.null_condition(4, z.device) == {}
    with torch.no_grad():
        plain = model.denoise(z, t)
        with_labels = model.denoise(z, t, {"label": torch.tensor([0, 5, 9, 42])})
    assert plain.shape == z.shape
    torch.testing.assert_close(with_labels, plain, rtol=0, atol=0)


def test_class_conditional_denoiser_needs_a_net_with_cond_dim():
    with pytest.raises(
        ConfigError, match=r"needs a network with a condition input: set net.init_args.cond_dim"
    ):
        Denoiser(tiny_unet(cond_dim=None), num_classes=10)


def test_unconditional_denoiser_needs_a_net_without_cond_dim():
    with pytest.raises(
        ConfigError, match=r"unconditional denoiser \(num_classes: null, no text_encoder\) needs"
    ):
        Denoiser(tiny_unet(cond_dim=16), num_classes=None)


@pytest.mark.parametrize("p_uncond", [-0.1, 1.5])
def test_p_uncond_outside_unit_interval_is_a_config_error(p_uncond):
    with pytest.raises(ConfigError, match=r"p_uncond .* \[0, 1\]"):
        Denoiser(tiny_unet(), p_uncond=p_uncond)


def test_unknown_prediction_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown prediction 'score'"):
        Denoiser(tiny_unet(), prediction="score")


# --- classifier-free guidance: the formula --------------------------------------------------------


class ToyModel:
    """D(z, t, label) = t z + label: the conditional and null estimates are known exactly."""

    schedule = CosineSchedule()

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def null_condition(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        return {"label": torch.full((batch_size,), NULL, device=device)}

    def denoise(self, z: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        self.batch_sizes.append(z.shape[0])
        labels = cond["label"].to(z.dtype).reshape(-1, 1, 1, 1)
        return t.reshape(-1, 1, 1, 1) * z + labels


@pytest.mark.parametrize("scale", [0.0, 1.0, 1.5, 3.0])
def test_classifier_free_guidance_combines_conditional_and_null_estimates(scale):
    model = ToyModel()
    z, t = _probe(n=3)
    labels = torch.tensor([2, 5, 7])
    guided = ClassifierFree(scale)(model, z, t, {"label": labels})
    d_cond = t.reshape(-1, 1, 1, 1) * z + labels.reshape(-1, 1, 1, 1)
    d_null = t.reshape(-1, 1, 1, 1) * z + NULL
    torch.testing.assert_close(guided, d_null + scale * (d_cond - d_null))


@pytest.mark.parametrize(("scale", "batch_sizes"), [(0.0, [3]), (1.0, [3]), (1.5, [6]), (3.0, [6])])
def test_classifier_free_guidance_makes_one_forward_pass(scale, batch_sizes):
    model = ToyModel()
    z, t = _probe(n=3)
    ClassifierFree(scale)(model, z, t, {"label": torch.tensor([2, 5, 7])})
    assert model.batch_sizes == batch_sizes


def test_guided_denoiser_binds_model_guidance_and_condition():
    model = ToyModel()
    z, t = _probe(n=3)
    cond = {"label": torch.tensor([2, 5, 7])}
    bound = GuidedDenoiser(model, ClassifierFree(2.0), cond)
    torch.testing.assert_close(bound(z, t), ClassifierFree(2.0)(model, z, t, cond))


# --- classifier-free guidance on Gaussian classes (closed form) -----------------------------------


class GaussianClasses:
    """Two Gaussian classes and a null distribution with one shared covariance; exact denoisers."""

    def __init__(self, schedule: CosineSchedule) -> None:
        self.classes = [GaussianData.example(schedule, shift=0.8), GaussianData.example(schedule, shift=-0.6)]
        self.null = GaussianData.example(schedule, shift=0.0)
        self.schedule = schedule

    def data(self, label: int) -> GaussianData:
        return self.null if label == NULL else self.classes[label]

    def null_condition(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        return {"label": torch.full((batch_size,), NULL, device=device)}

    def denoise(self, z: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        rows = [
            self.data(int(label)).denoise(z[i : i + 1], t[i : i + 1]) for i, label in enumerate(cond["label"])
        ]
        return torch.cat(rows)


def exact_noisy_score(data: GaussianData, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """grad log p_t(z) for p_t = N(alpha mu, alpha^2 Sigma + sigma^2 I), without going through D."""
    alpha, sigma = data.schedule.alpha_sigma(t.double())
    a, s = alpha.reshape(-1, 1, 1), sigma.reshape(-1, 1, 1)
    covariance = a**2 * data.covariance + s**2 * torch.eye(DIM, dtype=torch.float64)
    centred = z.double().reshape(-1, DIM, 1) - a * data.mean.reshape(1, DIM, 1)
    return -torch.linalg.solve(covariance, centred).reshape(z.shape)


@pytest.mark.parametrize("scale", [0.0, 1.0, 1.5, 3.0])
def test_classifier_free_guidance_follows_the_guided_score_of_gaussian_classes(scale):
    schedule = CosineSchedule()
    model = GaussianClasses(schedule)
    generator = torch.Generator().manual_seed(0)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.95], dtype=torch.float64)
    z = torch.randn(len(t), *SHAPE, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    alpha, sigma = schedule.alpha_sigma(t)

    guided = ClassifierFree(scale)(model, z, t, {"label": labels})

    score_null = exact_noisy_score(model.null, z, t)
    score_cond = torch.cat(
        [exact_noisy_score(model.data(int(c)), z[i : i + 1], t[i : i + 1]) for i, c in enumerate(labels)]
    )
    expected_score = scale * score_cond - (scale - 1) * score_null
    torch.testing.assert_close(score_from_denoised(guided, z, alpha, sigma), expected_score)


@pytest.mark.parametrize("scale", [0.0, 1.5, 3.0])
def test_classifier_free_guidance_on_equal_covariances_is_the_exact_denoiser_of_the_tilted_gaussian(scale):
    """With one covariance Sigma, p_t(z|c)^s p_t(z|∅)^(1-s) is the noisy marginal of
    N(mu_0 + s (mu_c - mu_0), Sigma), so guided D is that Gaussian's exact denoiser."""
    schedule = CosineSchedule()
    model = GaussianClasses(schedule)
    generator = torch.Generator().manual_seed(1)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    z = torch.randn(len(t), *SHAPE, generator=generator, dtype=torch.float64)
    guided = ClassifierFree(scale)(model, z, t, {"label": torch.zeros(len(t), dtype=torch.long)})
    mu_0, mu_c = model.null.mean, model.classes[0].mean
    tilted = GaussianData(mu_0 + scale * (mu_c - mu_0), model.null.covariance, schedule)
    torch.testing.assert_close(guided, tilted.denoise(z, t))


# --- the sample() API -----------------------------------------------------------------------------

STEPS = 3


@pytest.fixture(scope="module")
def sampling_model() -> Denoiser:
    return tiny_denoiser(seed=3).eval()


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_samples_do_not_depend_on_batch_size(sampling_model, guidance_scale):
    labels = [0, 1, 2, 3, 4]
    whole = sample(
        sampling_model,
        labels,
        guidance_scale=guidance_scale,
        sampler=SamplerSpec("ddim", STEPS),
        seed=7,
        batch_size=5,
    )
    split = sample(
        sampling_model,
        labels,
        guidance_scale=guidance_scale,
        sampler=SamplerSpec("ddim", STEPS),
        seed=7,
        batch_size=2,
    )
    assert whole.shape == (5, 1, 8, 8)
    assert whole.min() >= -1 and whole.max() <= 1
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-5)
    assert (whole[0] - whole[1]).abs().max() > 1e-3  # every sample draws its own noise


def test_first_index_continues_the_sample_numbering(sampling_model):
    whole = sample(sampling_model, [0, 1, 2, 3, 4], sampler=SamplerSpec("ddim", STEPS), seed=7)
    tail = sample(sampling_model, [3, 4], sampler=SamplerSpec("ddim", STEPS), seed=7, first_index=3)
    torch.testing.assert_close(tail, whole[3:5], rtol=0, atol=1e-5)


def test_different_seeds_give_different_samples(sampling_model):
    first = sample(sampling_model, [0, 1], sampler=SamplerSpec("ddim", STEPS), seed=0)
    second = sample(sampling_model, [0, 1], sampler=SamplerSpec("ddim", STEPS), seed=1)
    assert (first - second).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_ddpm_sampler_is_also_independent_of_batch_size(sampling_model):
    whole = sample(sampling_model, [0, 1, 2], sampler=SamplerSpec("ddpm", STEPS), seed=2, batch_size=3)
    split = sample(sampling_model, [0, 1, 2], sampler=SamplerSpec("ddpm", STEPS), seed=2, batch_size=1)
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-5)


def test_unconditional_model_samples_n_images():
    images = sample(tiny_denoiser(num_classes=None), n=3, sampler=SamplerSpec("ddim", STEPS), seed=0)
    assert images.shape == (3, 1, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": []}, "list of labels to sample is empty"),
        ({"labels": None}, "give the labels to sample, or the number n"),
        ({"labels": None, "n": 0}, "give the labels to sample, or the number n"),
        ({"labels": [0, 1, 2], "n": 2}, "n=2 disagrees with the 3 labels"),
    ],
)
def test_bad_sample_requests_are_config_errors(sampling_model, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        sample(sampling_model, sampler=SamplerSpec("ddim", STEPS), **kwargs)


def test_labels_for_an_unconditional_model_are_a_config_error():
    with pytest.raises(ConfigError, match=r"unconditional .* sample with n="):
        sample(tiny_denoiser(num_classes=None), [0, 1], sampler=SamplerSpec("ddim", STEPS))


def test_sample_labels_out_of_range_are_a_config_error(sampling_model):
    with pytest.raises(ConfigError, match="labels must lie in"):
        sample(sampling_model, [0, 12], sampler=SamplerSpec("ddim", STEPS))


# --- training with a Trainer ----------------------------------------------------------------------


def test_fit_refuses_data_with_another_image_shape_and_says_how_to_fix_it():
    model = Denoiser(tiny_unet(), image_shape=(1, 16, 16))
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    with pytest.raises(
        ConfigError, match=r"shape \(1, 8, 8\).*set model.init_args.image_shape to \[1, 8, 8\]"
    ):
        trainer.fit(model, datamodule=digits_datamodule())


def test_fit_refuses_data_with_another_number_of_classes_and_says_how_to_fix_it():
    model = Denoiser(tiny_unet(), image_shape=(1, 8, 8), num_classes=5)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    with pytest.raises(ConfigError, match=r"10 classes.*set model.init_args.num_classes to 10"):
        trainer.fit(model, datamodule=digits_datamodule())


def test_validation_logs_loss_overall_and_per_noise_level_quartile():
    model = tiny_denoiser()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=digits_datamodule(batch_size=16, eval_batch_size=64))
    metrics = trainer.callback_metrics
    names = ["val/loss", *(f"val/loss_q{q}" for q in range(4))]
    assert set(names) <= set(metrics)
    values = torch.stack([metrics[name] for name in names])
    assert torch.isfinite(values).all() and (values > 0).all()
    overall, quartiles = values[0], values[1:]
    assert quartiles.min() <= overall <= quartiles.max()  # the overall mean is a mix of the quartiles
    assert "train/loss" in metrics
