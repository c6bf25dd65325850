"""Composed prompts: drawn per sample like captions, checked for shape, built from Shapes scenes, and
read by composed CFG while other methods follow the primary caption."""

from __future__ import annotations

import pytest
import torch
from gaussian import SHAPE
from test_multi_condition import CaptionModel

from lightning_diffusion.config import ConfigError
from lightning_diffusion.data.shapes import Shapes, parse_caption
from lightning_diffusion.diffusion import sample_generators
from lightning_diffusion.guidance import ClassifierFree, ComposedCFG
from lightning_diffusion.sweep.prompts import Prompts, composed_shape_prompts, parse_composed

CAPTIONS = ["a", "b c", "d e f"]
PARTS = [("a", "x"), ("b c", "y"), ("d e f", "z w")]


def draw(prompts: Prompts, indices) -> dict:
    return prompts.draw(sample_generators(0, indices, torch.device("cpu"))).cond


def test_composed_prompts_draw_the_parts_of_the_drawn_caption_whatever_the_batch():
    prompts = Prompts(captions=CAPTIONS, parts=PARTS, part_weights=(1.0, -0.5))
    whole = draw(prompts, range(8))
    halves = [draw(prompts, part) for part in (range(4), range(4, 8))]
    assert whole["captions"] == [PARTS[CAPTIONS.index(c)] for c in whole["caption"]]
    assert whole["captions"] == halves[0]["captions"] + halves[1]["captions"]
    assert whole["caption_weights"] == [(1.0, -0.5)] * 8
    assert whole["caption"] == draw(Prompts(captions=CAPTIONS), range(8))["caption"]  # same draws as plain


def test_part_weights_default_to_one():
    assert Prompts(captions=CAPTIONS, parts=PARTS).part_weights == (1.0, 1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"parts": PARTS[:2]}, "got 2 parts for 3 captions"),
        ({"parts": [("a",), ("b", "c"), ("d",)]}, r"same number .* counts \[1, 2\]"),
        ({"parts": PARTS, "part_weights": (1.0,)}, "got 1 part_weights for composed prompts of 2 parts"),
        ({"part_weights": (1.0, 1.0)}, "give the parts too"),
    ],
)
def test_malformed_composed_prompts_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Prompts(captions=CAPTIONS, **kwargs)


def test_composed_prompts_need_captions():
    with pytest.raises(ConfigError, match="primary captions"):
        Prompts(num_classes=3, parts=PARTS)


@pytest.fixture(scope="module")
def shapes_attributes() -> torch.Tensor:
    return Shapes(image_size=8, num_train=60, num_test=0).load("train").attributes


def test_and_prompts_ask_for_both_objects_of_a_two_object_scene(shapes_attributes):
    prompts = composed_shape_prompts(shapes_attributes, "and")
    two_object = shapes_attributes[shapes_attributes[:, 4] != 3]
    assert prompts.attributes.tolist() == two_object.tolist()
    assert prompts.part_weights == (1.0, 1.0)
    for caption, (a, b), row in zip(
        prompts.captions, prompts.parts, prompts.attributes.tolist(), strict=True
    ):
        assert parse_caption(caption) == row
        shape, colour, size, position, second_shape, second_colour = row
        assert parse_caption(a) == [shape, colour, size, position, 3, 4]
        assert parse_caption(b) == [second_shape, second_colour, size, position ^ 1, 3, 4]
    assert prompts.labels.tolist() == (two_object[:, 1] * 3 + two_object[:, 0]).tolist()


def test_not_prompts_ask_for_the_first_object_without_the_second(shapes_attributes):
    prompts = composed_shape_prompts(shapes_attributes, "not")
    assert prompts.part_weights == (1.0, -1.0)
    for caption, (a, _), row in zip(
        prompts.captions, prompts.parts, prompts.attributes.tolist(), strict=True
    ):
        assert caption == a and parse_caption(a) == row and row[4:] == [3, 4]


def test_bad_composition_requests_are_refused(shapes_attributes):
    with pytest.raises(ConfigError, match="choose one of and, not"):
        composed_shape_prompts(shapes_attributes, "or")
    with pytest.raises(ConfigError, match="two_object_fraction"):
        composed_shape_prompts(shapes_attributes[shapes_attributes[:, 4] == 3], "and")


def test_a_drawn_composed_prompt_drives_composed_cfg_while_cfg_follows_the_primary_caption():
    cond = draw(Prompts(captions=CAPTIONS, parts=PARTS, part_weights=(1.0, 1.0)), range(4))
    z = torch.randn(4, *SHAPE, dtype=torch.float64)
    t = torch.full((4,), 0.5)
    composed = ComposedCFG(2.0).guide(CaptionModel(), z, t, cond).denoised
    parts = [CaptionModel.features([p[i] for p in cond["captions"]]) for i in range(2)]
    torch.testing.assert_close(composed, z / 2 + 2.0 * (parts[0] + parts[1]))
    plain = {"caption": cond["caption"]}
    torch.testing.assert_close(
        ClassifierFree(2.0).guide(_Ignoring(), z, t, cond).denoised,
        ClassifierFree(2.0).guide(CaptionModel(), z, t, plain).denoised,
    )


class _Ignoring(CaptionModel):
    """A caption model that, like the denoiser, ignores condition keys it does not know."""

    def denoise(self, z, t, cond):
        return z / 2 + self.features(cond["caption"])


def test_composed_texts_split_at_and_and_not_into_weighted_parts():
    prompts = parse_composed(["a red circle AND a blue square NOT a green triangle", "x AND y NOT z w"])
    assert prompts.captions == ["a red circle", "x"]
    assert prompts.parts == [("a red circle", "a blue square", "a green triangle"), ("x", "y", "z w")]
    assert prompts.part_weights == (1.0, 1.0, -1.0)
    assert parse_composed(["a red circle"]).parts == [("a red circle",)]
    with pytest.raises(ConfigError, match="same operators"):
        parse_composed(["a AND b", "c NOT d"])
