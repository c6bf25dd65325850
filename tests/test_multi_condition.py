"""Multi-condition CFG (InstructPix2Pix Eq. 3) and composed captions (composable diffusion) against hand
computations with mock models, CFG, a real two-condition denoiser and Gaussian closed forms."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from gaussian import DIM, SHAPE, GaussianData
from torch import Tensor

from lightning_diffusion.components import Denoiser
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import CosineSchedule
from lightning_diffusion.guidance import ClassifierFree, ComposedCFG, MultiConditionCFG, MultiConditionOptions
from lightning_diffusion.nets import UNet
from lightning_diffusion.nets.text import TextTransformer, caption_vocabulary
from lightning_diffusion.sampling import CountingModel

P1, P2, P3 = (
    torch.linspace(-1.0, 1.0, DIM, dtype=torch.float64).reshape(SHAPE) * k for k in (1.0, -0.5, 2.0)
)
EMBED = 3


class TwoConditionModel:
    """D = z / 2 + e P1 + l P2 + e l P3 with e = sum of the image embedding (zeros: ∅) and l = the caption's
    length ("" is ∅): linear in each condition, with an interaction, so the nesting order matters."""

    def __init__(self) -> None:
        self.schedule = CosineSchedule()
        self.low_res_seen: list[Tensor] = []

    def denoise(self, z: Tensor, t: Tensor, cond: dict) -> Tensor:
        if "low_res" in cond:
            self.low_res_seen.append(cond["low_res"])
        e = cond["image_embedding"].sum(1).reshape(-1, 1, 1, 1).double()
        length = torch.tensor([len(c) for c in cond["caption"]], dtype=torch.float64).reshape(-1, 1, 1, 1)
        return z / 2 + e * P1 + length * P2 + e * length * P3

    def null_condition(self, batch_size: int, device: torch.device) -> dict:
        return {
            "image_embedding": torch.zeros(batch_size, EMBED, dtype=torch.float64),
            "caption": [""] * batch_size,
        }


def two_condition_batch() -> tuple[Tensor, Tensor, dict]:
    z = torch.randn(2, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cond = {"image_embedding": torch.tensor([[1.0, 0.5, 0.0], [-0.2, 0.0, 0.1]], dtype=torch.float64)}
    return z, torch.full((2,), 0.4), {**cond, "caption": ["ab", "abcd"]}


def test_multi_condition_cfg_is_instructpix2pix_equation_3_in_one_forward():
    model, (z, t, cond) = CountingModel(TwoConditionModel()), two_condition_batch()
    guided = MultiConditionCFG(3.0, scales={"image_embedding": 1.5}).guide(model, z, t, cond)
    e = cond["image_embedding"].sum(1).reshape(-1, 1, 1, 1)
    length = torch.tensor([2.0, 4.0], dtype=torch.float64).reshape(-1, 1, 1, 1)
    # D(∅,∅) + s_I (D(c_I,∅) - D(∅,∅)) + s_T (D(c_I,c_T) - D(c_I,∅)), by hand for this model
    torch.testing.assert_close(guided.denoised, z / 2 + 1.5 * e * P1 + 3.0 * (length * P2 + e * length * P3))
    torch.testing.assert_close(guided.reference, model.denoise(z, t, cond))
    assert model.rows == 3 * len(z) + len(z)  # one forward of 3B rows (and the reference check above)


@pytest.mark.parametrize("scale", [0.0, 2.5])
def test_equal_scales_are_cfg_at_that_scale_in_two_passes(scale):
    model, (z, t, cond) = CountingModel(TwoConditionModel()), two_condition_batch()
    guided = MultiConditionCFG(scale, scales={"image_embedding": scale}).guide(model, z, t, cond)
    assert model.rows == (len(z) if scale == 0.0 else 2 * len(z))
    torch.testing.assert_close(guided.denoised, ClassifierFree(scale).guide(model, z, t, cond).denoised)


def test_the_default_is_cfg_on_the_caption_given_the_image_embedding():
    model, (z, t, cond) = CountingModel(TwoConditionModel()), two_condition_batch()
    guided = MultiConditionCFG(4.0).guide(model, z, t, cond)
    assert model.rows == 2 * len(z)
    given_image = model.denoise(z, t, {**cond, "caption": ["", ""]})
    torch.testing.assert_close(guided.denoised, given_image + 4.0 * (model.denoise(z, t, cond) - given_image))


def test_all_scales_one_is_exactly_the_conditional_estimate_in_one_pass():
    model, (z, t, cond) = CountingModel(TwoConditionModel()), two_condition_batch()
    guided = MultiConditionCFG(1.0).guide(model, z, t, cond)
    assert model.rows == len(z)
    assert torch.equal(guided.denoised, model.model.denoise(z, t, cond))
    assert guided.reference is guided.denoised


def test_conditions_the_model_does_not_drop_keep_their_value_in_every_pass():
    model, (z, t, cond) = TwoConditionModel(), two_condition_batch()
    low_res = torch.arange(2.0)
    MultiConditionCFG(2.0, scales={"image_embedding": 3.0}).guide(model, z, t, {**cond, "low_res": low_res})
    torch.testing.assert_close(model.low_res_seen[0], low_res.repeat(3))


def test_bad_multi_condition_settings_are_refused_with_what_to_do():
    with pytest.raises(ConfigError, match=r"drops only \['caption', 'image_embedding'\]"):
        MultiConditionCFG(2.0, conditions=("label", "caption")).check_model(TwoConditionModel())
    with pytest.raises(ConfigError, match="guided at the method's scale"):
        MultiConditionCFG(2.0, scales={"caption": 2.0})
    with pytest.raises(ConfigError, match="distinct condition keys"):
        MultiConditionCFG(2.0, conditions="caption")
    assert MultiConditionCFG(2.0, **asdict(MultiConditionOptions())).scales == (1.0, 2.0)


def label_and_text_denoiser() -> Denoiser:
    """A tiny untrained denoiser conditioned on a label and a caption (both dropped to ∅ in training)."""
    torch.manual_seed(0)
    vocab = caption_vocabulary(["a red circle", "a blue square"])
    text = TextTransformer(vocab, context_length=6, width=16, layers=1, heads=2)
    net = UNet(in_channels=1, channels=(8, 16), num_res_blocks=1, cond_dim=16, context_dim=16)
    model = Denoiser(net, image_shape=(1, 8, 8), num_classes=4, text_encoder=text)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


@torch.no_grad()
def test_multi_condition_on_a_label_and_caption_denoiser_builds_the_partial_nulls():
    model = label_and_text_denoiser()
    z, t = torch.randn(2, 1, 8, 8), torch.full((2,), 0.5)
    cond = {"label": torch.tensor([1, 3]), "caption": ["a red circle", "a blue square"]}
    guided = MultiConditionCFG(2.0, conditions=("label", "caption"), scales={"label": 3.0}).guide(
        model, z, t, cond
    )
    null = model.null_condition(2, z.device)
    neither, label_only, both = (
        model.denoise(z, t, c) for c in (null, {**cond, "caption": null["caption"]}, cond)
    )
    expected = neither + 3.0 * (label_only - neither) + 2.0 * (both - label_only)
    torch.testing.assert_close(guided.denoised, expected, rtol=1e-4, atol=1e-5)


class CaptionModel:
    """D = z / 2 + len(caption) P1 + (number of words) P2: linear in caption features ("" is ∅)."""

    def __init__(self) -> None:
        self.schedule = CosineSchedule()

    def denoise(self, z: Tensor, t: Tensor, cond: dict) -> Tensor:
        assert "captions" not in cond and "caption_weights" not in cond  # parts reach the model one by one
        return z / 2 + self.features(cond["caption"])

    @staticmethod
    def features(captions: list[str]) -> Tensor:
        lengths = torch.tensor([float(len(c)) for c in captions], dtype=torch.float64).reshape(-1, 1, 1, 1)
        words = torch.tensor([float(len(c.split())) for c in captions], dtype=torch.float64).reshape(
            -1, 1, 1, 1
        )
        return lengths * P1 + words * P2

    def null_condition(self, batch_size: int, device: torch.device) -> dict:
        return {"caption": [""] * batch_size}


class LabelOnly(CaptionModel):
    """A model that drops a label but no caption."""

    def null_condition(self, batch_size: int, device: torch.device) -> dict:
        return {"label": torch.full((batch_size,), 9)}


def composed(parts: list[tuple[str, ...]], weights: list[tuple[float, ...]]) -> tuple[Tensor, Tensor, dict]:
    z = torch.randn(len(parts), *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cond = {"caption": [p[0] for p in parts], "captions": parts, "caption_weights": weights}
    return z, torch.full((len(parts),), 0.3), cond


def test_composition_is_the_weighted_sum_of_differences_to_the_null_estimate_in_one_forward():
    parts = [("a b", "cde"), ("x", "y z w")]
    z, t, cond = composed(parts, [(1.0, 1.0), (1.0, -0.5)])
    model = CountingModel(CaptionModel())
    guided = ComposedCFG(2.0).guide(model, z, t, cond)
    first, second = (CaptionModel.features([p[i] for p in parts]) for i in range(2))
    # D(∅) + s sum_i w_i (D(c_i) - D(∅)), D(∅) = z / 2 for this model
    weights = torch.tensor([[1.0, 1.0], [1.0, -0.5]], dtype=torch.float64).reshape(2, 2, 1, 1, 1)
    torch.testing.assert_close(
        guided.denoised, z / 2 + 2.0 * (weights[:, 0] * first + weights[:, 1] * second)
    )
    torch.testing.assert_close(guided.reference, z / 2 + weights[:, 0] * first + weights[:, 1] * second)
    assert model.rows == 3 * len(z)


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0])
def test_one_caption_with_weight_one_is_cfg_at_the_scale(scale):
    z, t, cond = composed([("a b",), ("cde fg",)], [(1.0,), (1.0,)])
    model = CountingModel(CaptionModel())
    guided = ComposedCFG(scale).guide(model, z, t, cond)
    assert model.rows == (len(z) if scale in (0.0, 1.0) else 2 * len(z))
    plain = {"caption": cond["caption"]}
    torch.testing.assert_close(
        guided.denoised, ClassifierFree(scale).guide(CaptionModel(), z, t, plain).denoised
    )


def test_composition_needs_composed_prompts_and_a_text_model():
    z, t, cond = composed([("a", "b")], [(1.0, 1.0)])
    with pytest.raises(ConfigError, match=r"Prompts\(parts=\.\.\., part_weights=\.\.\.\)"):
        ComposedCFG(2.0).guide(CaptionModel(), z, t, {"caption": ["a"]})
    with pytest.raises(ConfigError, match=r"lengths \[2\] and weights of shape \(1, 3\)"):
        ComposedCFG(2.0).guide(CaptionModel(), z, t, {**cond, "caption_weights": [(1.0, 1.0, 1.0)]})
    with pytest.raises(ConfigError, match="text-conditional denoiser"):
        ComposedCFG(2.0).guide(LabelOnly(), z, t, cond)


class GaussianCaptions:
    """Exact denoisers of N(m_c, Sigma), one mean per caption ("" is the unconditional mean)."""

    def __init__(self, means: dict[str, Tensor], covariance: Tensor) -> None:
        self.schedule = CosineSchedule()
        self.data = {
            caption: GaussianData(mean, covariance, self.schedule) for caption, mean in means.items()
        }

    def denoise(self, z: Tensor, t: Tensor, cond: dict) -> Tensor:
        return torch.cat(
            [self.data[c].denoise(z[i : i + 1], t[i : i + 1]) for i, c in enumerate(cond["caption"])]
        )

    def null_condition(self, batch_size: int, device: torch.device) -> dict:
        return {"caption": [""] * batch_size}


def test_and_of_gaussians_is_the_exact_denoiser_of_their_product_over_the_unconditional():
    """p(x|c1) p(x|c2) / p(x) for Gaussians with one covariance is N(m1 + m2 - m0, Sigma) at every noise
    level (Liu et al.'s product of experts), so AND at s = 1 must be that Gaussian's exact denoiser, and
    NOT (weights 1, -1) the one of N(m0 + (m1 - m0) - (m2 - m0))."""
    example = GaussianData.example()
    m0, m1, m2 = example.mean, example.mean + torch.tensor([1.0, 0.0, -0.5, 0.2]), example.mean - 0.7
    model = GaussianCaptions({"": m0, "c1": m1, "c2": m2}, example.covariance)
    z = torch.randn(4, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    for weights, mean in (((1.0, 1.0), m1 + m2 - m0), ((1.0, -1.0), m1 - m2 + m0)):
        cond = {"caption": ["c1"] * 4, "captions": [("c1", "c2")] * 4, "caption_weights": [weights] * 4}
        guided = ComposedCFG(1.0).guide(model, z, t, cond)
        exact = GaussianData(mean, example.covariance, model.schedule).denoise(z, t)
        torch.testing.assert_close(guided.denoised, exact)


@torch.no_grad()
def test_composed_cfg_on_a_real_denoiser_conditions_each_pass_on_one_caption_alone():
    model = label_and_text_denoiser()
    z, t = torch.randn(2, 1, 8, 8), torch.full((2,), 0.5)
    parts = [("a red circle", "a blue square"), ("a blue circle", "a red square")]
    cond = {"label": torch.tensor([1, 2]), "caption": ["a red circle", "a blue circle"], "captions": parts}
    guided = ComposedCFG(2.0).guide(model, z, t, {**cond, "caption_weights": [(1.0, -0.5)] * 2})
    null = model.null_condition(2, z.device)
    empty, first, second = (
        model.denoise(z, t, {**null, **c})
        for c in ({}, {"caption": [p[0] for p in parts]}, {"caption": [p[1] for p in parts]})
    )
    expected = empty + 2.0 * ((first - empty) - 0.5 * (second - empty))
    torch.testing.assert_close(guided.denoised, expected, rtol=1e-4, atol=1e-5)
