"""Guidance methods and modifiers against hand computations and Gaussian closed forms."""

from __future__ import annotations

import pytest
import torch
from gaussian import DIM, SHAPE, GaussianData
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import (
    CosineSchedule,
    SamplerSpec,
    denoised_from_score,
    score_from_denoised,
)
from lightning_diffusion.guidance import (
    AutoGuidance,
    CFGRescale,
    ClassifierFree,
    ClassifierGuidance,
    DynamicThresholding,
    Guidance,
    GuidanceInterval,
    Guided,
    GuidedDenoiser,
    build_guidance,
)

NULL = 9
PATTERN = torch.linspace(-1.0, 1.0, DIM, dtype=torch.float64).reshape(SHAPE)
SCHEDULE = CosineSchedule()


def close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


class ToyModel:
    """D(z, t, x) = gain z + label * PATTERN (∅ is label NULL); records the batch size of every call."""

    def __init__(self, gain: float = 0.5) -> None:
        self.schedule = SCHEDULE
        self.gain = gain
        self.calls: list[int] = []

    def denoise(self, z: Tensor, t: Tensor, cond: dict | None = None) -> Tensor:
        self.calls.append(z.shape[0])
        return self.expected(z, cond["label"])

    def expected(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.gain * z + labels.to(z.dtype).reshape(-1, 1, 1, 1) * PATTERN

    def null_condition(self, batch_size: int, device: torch.device) -> dict[str, Tensor]:
        return {"label": torch.full((batch_size,), NULL, device=device)}


class LinearClassifier(nn.Module):
    """logits = (1 + t) (W flatten(z) + b); counts its calls."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(DIM, classes).double()
        self.calls = 0

    def logits(self, z: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return (1 + t).reshape(-1, 1) * self.linear(z.flatten(1))


class Fixed(Guidance):
    """Returns a given guided D and reference whatever it is asked; counts resets."""

    def __init__(self, denoised: Tensor, reference: Tensor | None) -> None:
        self.result = Guided(denoised, reference)
        self.resets = 0

    def guide(self, model, z, t, cond) -> Guided:
        return self.result

    def reset(self) -> None:
        self.resets += 1


def batch(n: int = 3, seed: int = 0) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, *SHAPE, generator=generator, dtype=torch.float64)
    t = torch.linspace(0.2, 0.8, n, dtype=torch.float64)
    return z, t, {"label": torch.arange(n) % 3}


def per_sample_std(x: Tensor) -> Tensor:
    return x.flatten(1).std(1, correction=0)


# Classifier guidance.


def test_classifier_guidance_adds_the_tweedie_scaled_gradient_under_no_grad():
    model, classifier = ToyModel(), LinearClassifier()
    z, t, cond = batch()
    with torch.no_grad():
        guided = ClassifierGuidance(classifier, 2.5).guide(model, z, t, cond)
    weight, bias = classifier.linear.weight.detach(), classifier.linear.bias.detach()
    probs = ((1 + t).reshape(-1, 1) * (z.flatten(1) @ weight.T + bias)).softmax(-1)
    gradient = (1 + t).reshape(-1, 1) * (weight[cond["label"]] - probs @ weight)
    alpha, sigma = SCHEDULE.alpha_sigma(t)
    base = model.expected(z, cond["label"])
    close(guided.denoised, base + (sigma**2 / alpha * 2.5).reshape(-1, 1, 1, 1) * gradient.reshape(z.shape))
    close(guided.reference, base)
    assert model.calls == [3] and classifier.calls == 1
    assert classifier.linear.weight.grad is None and not guided.denoised.requires_grad


def test_classifier_guidance_works_under_inference_mode():
    z, t, cond = batch()
    guidance = ClassifierGuidance(LinearClassifier(), 1.0)
    with torch.inference_mode():
        guided = guidance.guide(ToyModel(), z, t, cond)
    assert torch.isfinite(guided.denoised).all()


def test_classifier_guidance_at_zero_scale_skips_the_classifier():
    model, classifier = ToyModel(), LinearClassifier()
    z, t, cond = batch()
    guided = ClassifierGuidance(classifier, 0.0).guide(model, z, t, cond)
    close(guided.denoised, model.expected(z, cond["label"]))
    assert classifier.calls == 0 and model.calls == [3]


def test_classifier_guidance_needs_labels():
    z, t, _ = batch()
    with pytest.raises(ConfigError, match="label"):
        ClassifierGuidance(LinearClassifier(), 1.0).guide(ToyModel(), z, t, {})


CLASSES = (GaussianData.example(SCHEDULE), GaussianData.example(SCHEDULE, shift=1.0))


def noisy_marginals(t: Tensor) -> list[tuple[Tensor, Tensor]]:
    """(mean, covariance) of z_t | c, i.e. N(alpha mu_c, alpha^2 Sigma + sigma^2 I), per class."""
    alpha, sigma = SCHEDULE.alpha_sigma(t)
    eye = torch.eye(DIM, dtype=torch.float64)
    return [
        (
            alpha.reshape(-1, 1) * data.mean,
            alpha.reshape(-1, 1, 1) ** 2 * data.covariance + sigma.reshape(-1, 1, 1) ** 2 * eye,
        )
        for data in CLASSES
    ]


class ExactClassifier:
    """Equal priors, so the logits ln p(z_t | c) give the exact p(c | z_t) through a softmax."""

    def logits(self, z: Tensor, t: Tensor) -> Tensor:
        return torch.stack(
            [MultivariateNormal(mean, cov).log_prob(z.flatten(1)) for mean, cov in noisy_marginals(t)], -1
        )


class GaussianMixtureModel:
    """Exact denoisers of the two-class mixture: E[y | z, c] given a label (if conditional), else E[y | z]."""

    def __init__(self, conditional: bool) -> None:
        self.schedule = SCHEDULE
        self.conditional = conditional

    def denoise(self, z: Tensor, t: Tensor, cond: dict | None = None) -> Tensor:
        per_class = torch.stack([data.denoise(z, t) for data in CLASSES])
        labels = (cond or {}).get("label")
        if self.conditional and labels is not None:
            return per_class[labels, torch.arange(z.shape[0])]
        posterior = ExactClassifier().logits(z, t).softmax(-1).T.reshape(2, -1, 1, 1, 1)
        return (posterior * per_class).sum(0)

    def null_condition(self, batch_size: int, device: torch.device) -> dict:
        return {}


def test_classifier_guidance_on_gaussians_matches_the_closed_form_score():
    z, t, _ = batch(4)
    labels = torch.tensor([0, 1, 1, 0])
    model = GaussianMixtureModel(conditional=True)
    guided = ClassifierGuidance(ExactClassifier(), 3.0).guide(model, z, t, {"label": labels})
    flat = z.flatten(1)
    gradients = torch.stack(
        [-torch.linalg.solve(cov, flat - mean) for mean, cov in noisy_marginals(t)]
    )  # grad ln p(z_t | c) per class: -C_c^-1 (z - alpha mu_c)
    posterior = ExactClassifier().logits(z, t).softmax(-1)
    class_gradient = gradients[labels, torch.arange(4)] - torch.einsum("bk,kbd->bd", posterior, gradients)
    alpha, sigma = SCHEDULE.alpha_sigma(t)
    base = model.denoise(z, t, {"label": labels})
    score = score_from_denoised(base, z, alpha, sigma) + 3.0 * class_gradient.reshape(z.shape)
    close(guided.denoised, denoised_from_score(score, z, alpha, sigma))


def test_classifier_guidance_of_the_unconditional_model_at_scale_one_is_the_class_denoiser():
    """Bayes: grad ln p(z|c) = grad ln p(z) + grad ln p(c|z), so the guided mixture is exactly class c."""
    z, t, _ = batch(4, seed=1)
    labels = torch.tensor([1, 0, 1, 0])
    guided = ClassifierGuidance(ExactClassifier(), 1.0).guide(
        GaussianMixtureModel(conditional=False), z, t, {"label": labels}
    )
    close(guided.denoised, GaussianMixtureModel(conditional=True).denoise(z, t, {"label": labels}))


# Autoguidance.


def test_autoguidance_extrapolates_from_the_guide_to_the_main_model():
    main, weak = ToyModel(0.5), ToyModel(0.2)
    z, t, cond = batch()
    guided = AutoGuidance(weak, 2.0).guide(main, z, t, cond)
    d_main, d_weak = main.expected(z, cond["label"]), weak.expected(z, cond["label"])
    close(guided.denoised, d_weak + 2.0 * (d_main - d_weak))
    close(guided.reference, d_main)
    assert main.calls == [3] and weak.calls == [3]


def test_autoguidance_at_scale_one_calls_only_the_main_model_and_at_zero_only_the_guide():
    main, weak = ToyModel(0.5), ToyModel(0.2)
    z, t, cond = batch()
    close(AutoGuidance(weak, 1.0)(main, z, t, cond), main.expected(z, cond["label"]))
    assert main.calls == [3] and weak.calls == []
    guided = AutoGuidance(weak, 0.0).guide(main, z, t, cond)
    close(guided.denoised, weak.expected(z, cond["label"]))
    assert guided.reference is None and main.calls == [3] and weak.calls == [3]


# Guidance interval.


def noise_level(t: Tensor) -> Tensor:
    """EDM sigma = sigma_t / alpha_t = exp(-lambda / 2), from the log-SNR."""
    return torch.exp(-0.5 * SCHEDULE.logsnr(t))


def test_guidance_interval_outside_makes_one_plain_conditional_pass():
    model, classifier = ToyModel(), LinearClassifier()
    z, t, cond = batch()
    interval = GuidanceInterval(ClassifierGuidance(classifier, 4.0, ClassifierFree(3.0)), 100.0, 200.0)
    guided = interval.guide(model, z, t, cond)
    close(guided.denoised, model.expected(z, cond["label"]))
    assert guided.reference is guided.denoised
    assert model.calls == [3] and classifier.calls == 0


def test_guidance_interval_inside_is_the_inner_method():
    model = ToyModel()
    z, t, cond = batch()
    guided = GuidanceInterval(ClassifierFree(3.0), 0.0, 1e4).guide(model, z, t, cond)
    close(guided.denoised, ClassifierFree(3.0)(ToyModel(), z, t, cond))
    assert model.calls == [6]


def test_guidance_interval_splits_a_batch_that_straddles_it():
    model = ToyModel()
    z, _, cond = batch(4)
    t = torch.tensor([0.1, 0.5, 0.55, 0.95], dtype=torch.float64)
    levels = noise_level(t)
    inside = torch.tensor([False, True, True, False])
    guided = GuidanceInterval(ClassifierFree(3.0), levels[0].item(), levels[2].item()).guide(
        model, z, t, cond
    )
    cfg = ClassifierFree(3.0).guide(ToyModel(), z, t, cond)
    plain = model.expected(z, cond["label"])
    close(guided.denoised[inside], cfg.denoised[inside])
    close(guided.denoised[~inside], plain[~inside])
    close(guided.reference, plain)
    assert sorted(model.calls) == [2, 4]


def test_guidance_interval_over_a_ddim_run_makes_the_predicted_calls():
    steps, sigma_min, sigma_max = 24, 0.28, 2.9
    model = ToyModel()
    cond = {"label": torch.tensor([1, 2])}
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    denoise = GuidedDenoiser(model, GuidanceInterval(ClassifierFree(3.0), sigma_min, sigma_max), cond)
    spec = SamplerSpec("ddim", steps)
    spec.sample(denoise, noise, SCHEDULE)
    levels = noise_level(spec.times(SCHEDULE)[:-1])
    inside = int(((levels > sigma_min) & (levels <= sigma_max)).sum())
    assert 0 < inside < steps
    assert model.calls.count(4) == inside and model.calls.count(2) == steps - inside
    assert len(model.calls) == steps


# CFG rescale.


def fixed_pair() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(5)
    reference = torch.randn(3, *SHAPE, generator=generator, dtype=torch.float64)
    return 4.0 * reference + torch.randn(3, *SHAPE, generator=generator, dtype=torch.float64), reference


def test_cfg_rescale_matches_the_formula_and_its_limits():
    guided, reference = fixed_pair()
    z, t, cond = batch()
    ratio = (per_sample_std(reference) / per_sample_std(guided)).reshape(-1, 1, 1, 1)
    result = CFGRescale(Fixed(guided, reference), 0.7).guide(None, z, t, cond)
    close(result.denoised, 0.7 * guided * ratio + 0.3 * guided)
    assert result.reference is reference
    assert torch.equal(CFGRescale(Fixed(guided, reference), 0.0)(None, z, t, cond), guided)
    close(
        per_sample_std(CFGRescale(Fixed(guided, reference), 1.0)(None, z, t, cond)), per_sample_std(reference)
    )


def test_cfg_rescale_passes_through_without_guidance():
    model = ToyModel()
    z, t, cond = batch()
    for scale in (0.0, 1.0):
        expected = ClassifierFree(scale)(ToyModel(), z, t, cond)
        close(CFGRescale(ClassifierFree(scale), 1.0)(model, z, t, cond), expected)


# Dynamic thresholding.


def test_dynamic_thresholding_matches_a_hand_computation():
    denoised = torch.tensor([-4.0, -1.0, 0.5, 2.0], dtype=torch.float64).reshape(1, *SHAPE)
    reference = torch.zeros_like(denoised)
    z, t, cond = batch(1)
    result = DynamicThresholding(Fixed(denoised, reference), percentile=0.5).guide(None, z, t, cond)
    # sorted |D| = 0.5, 1, 2, 4: the median is 1.5, so D = clip(D, -1.5, 1.5) / 1.5.
    close(result.denoised.flatten(), torch.tensor([-1.0, -2 / 3, 1 / 3, 1.0], dtype=torch.float64))
    assert result.reference is reference


def test_dynamic_thresholding_bounds_large_values_and_keeps_small_ones():
    z, t, cond = batch()
    large = 5.0 * torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert DynamicThresholding(Fixed(large, None))(None, z, t, cond).abs().max() <= 1.0
    small = large / (large.abs().max() + 1.0)
    assert torch.equal(DynamicThresholding(Fixed(small, None))(None, z, t, cond), small)


# Resets, validation and the factory.


@pytest.mark.parametrize(
    "wrap",
    [
        lambda inner: GuidanceInterval(inner, 0.1, 1.0),
        lambda inner: CFGRescale(inner),
        lambda inner: DynamicThresholding(inner),
        lambda inner: ClassifierGuidance(LinearClassifier(), 1.0, inner),
    ],
)
def test_wrappers_reset_the_inner_method(wrap):
    inner = Fixed(torch.zeros(1), None)
    GuidedDenoiser(ToyModel(), wrap(inner), {})
    assert inner.resets == 1


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GuidanceInterval(ClassifierFree(), 2.0, 1.0), "sigma_min < sigma_max"),
        (lambda: CFGRescale(ClassifierFree(), 1.5), "phi"),
        (lambda: DynamicThresholding(ClassifierFree(), percentile=0.0), "percentile"),
        (lambda: DynamicThresholding(ClassifierFree(), max_value=0.0), "max_value"),
    ],
)
def test_modifiers_reject_bad_settings(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_build_guidance_maps_names_and_wraps_modifiers():
    assert type(build_guidance("cfg", 2.0)) is ClassifierFree
    assert type(build_guidance("classifier", 2.0, classifier=LinearClassifier())) is ClassifierGuidance
    assert type(build_guidance("autoguidance", 2.0, guide_model=ToyModel())) is AutoGuidance
    built = build_guidance("cfg_interval", 2.0, interval=(0.3, 3.0), rescale=0.7, threshold=0.99)
    assert type(built) is GuidanceInterval and (built.sigma_min, built.sigma_max) == (0.3, 3.0)
    assert type(built.inner) is DynamicThresholding and built.inner.percentile == 0.99
    assert type(built.inner.inner) is CFGRescale and built.inner.inner.phi == 0.7
    assert type(built.inner.inner.inner) is ClassifierFree and built.inner.inner.inner.scale == 2.0
    limited = build_guidance("classifier_interval", 4.0, classifier=LinearClassifier(), interval=(0.3, 5.0))
    assert type(limited) is GuidanceInterval and type(limited.inner) is ClassifierGuidance


@pytest.mark.parametrize(
    ("method", "match"),
    [
        ("nope", "apg, autoguidance, autoguidance_interval, cfg, cfg_interval, cfg_zero_star"),
        ("cgf", "did you mean cfg"),
        ("classifier", "--classifier PATH"),
        ("autoguidance", "--guide PATH"),
        ("cfg_interval", "interval"),
        ("autoguidance_interval", "interval"),
    ],
)
def test_build_guidance_explains_what_is_missing(method, match):
    with pytest.raises(ConfigError, match=match):
        build_guidance(method, 2.0)
