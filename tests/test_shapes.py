"""Captioned data for text conditioning: the procedural Shapes source, caption templates for labelled
sources, attributes in batches, the ``vocab`` command, and the evaluator's attribute heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny import quiet_trainer, run_module

from lightning_diffusion.components import Evaluator
from lightning_diffusion.config import ConfigError, instantiate
from lightning_diffusion.data import Captioned, DataSource, DiffusionDataModule, Digits, ImageSet, Shapes
from lightning_diffusion.data.captions import DEFAULT_TEMPLATES, FASHION_MNIST_SYNONYMS, with_article
from lightning_diffusion.data.shapes import (
    ATTRIBUTE_VALUES,
    COLOUR_RGB,
    COMBINATIONS,
    _shapes_split,
    parse_caption,
)
from lightning_diffusion.data.sources import FASHION_MNIST_CLASSES
from lightning_diffusion.nets import ConvClassifier
from lightning_diffusion.nets.text import split_words

ATTRIBUTE_SIZES = [len(values) for values in ATTRIBUTE_VALUES.values()]  # [3, 4, 2, 4, 4, 5]
NONE_SHAPE, NONE_COLOUR = ATTRIBUTE_SIZES[4] - 1, ATTRIBUTE_SIZES[5] - 1


def small_shapes(**kwargs: object) -> Shapes:
    return Shapes(**{"image_size": 16, "num_train": 200, "num_test": 40, **kwargs})


def combination(colour: int, shape: int) -> str:
    return COMBINATIONS[colour * len(ATTRIBUTE_VALUES["shape"]) + shape]


# --- Shapes -------------------------------------------------------------------------------------


def test_shapes_are_deterministic_and_the_first_images_do_not_depend_on_the_split_size():
    first = small_shapes().load("train")
    _shapes_split.cache_clear()
    again = small_shapes().load("train")
    longer = small_shapes(num_train=300).load("train")
    assert first.images.numpy().tobytes() == again.images.numpy().tobytes()
    assert torch.equal(longer.images[:200], first.images) and longer.captions[:200] == first.captions
    assert torch.equal(longer.attributes[:200], first.attributes)
    other_seed = small_shapes(seed=1).load("train")
    assert not torch.equal(other_seed.images, first.images)
    test = small_shapes().load("test")
    assert len(test) == 40 and test.captions != first.captions[:40]


def test_captions_parse_back_to_the_stored_attributes_and_labels():
    data = small_shapes().load("train")
    parsed = torch.tensor([parse_caption(caption) for caption in data.captions])
    assert torch.equal(parsed, data.attributes)
    assert data.attribute_values == {name: list(values) for name, values in ATTRIBUTE_VALUES.items()}
    assert data.class_names == COMBINATIONS and len(COMBINATIONS) == 12
    names = [combination(colour, shape) for shape, colour in data.attributes[:, :2].tolist()]
    assert [data.class_names[label] for label in data.labels.tolist()] == names
    assert all(name in caption for name, caption in zip(names, data.captions, strict=True))
    two = data.attributes[:, 4] != NONE_SHAPE
    assert 0.3 < two.float().mean() < 0.7, "two_object_fraction=0.5"
    assert torch.equal(two, data.attributes[:, 5] != NONE_COLOUR)
    assert parse_caption("a small red circle to the right of a blue square") == [0, 0, 0, 3, 1, 2]
    assert parse_caption("A large  yellow triangle at the bottom") == [2, 3, 1, 1, 3, 4]


@pytest.mark.parametrize("caption", ["a dog", "a small red circle", "a huge red circle at the top"])
def test_unparseable_captions_are_refused_with_the_grammar(caption):
    with pytest.raises(ConfigError, match=r"cannot parse the Shapes caption .* captions read \"a \{size\}"):
        parse_caption(caption)


def test_held_out_combinations_never_appear_in_seen_scenes_and_are_object_a_in_held_out_scenes():
    held_out = ("red square", "green triangle", "blue circle")
    for combinations in ("seen", "held_out"):
        attributes = small_shapes(combinations=combinations).load("train").attributes.tolist()
        first = {combination(row[1], row[0]) for row in attributes}
        second = {combination(row[5], row[4]) for row in attributes if row[4] != NONE_SHAPE}
        assert not second & set(held_out)
        if combinations == "seen":
            assert not first & set(held_out) and len(first) == 9
        else:
            assert first == set(held_out) and second
    assert small_shapes(held_out=[]).load("train").labels.unique().numel() == 12


@pytest.mark.parametrize("image_size", [16, 32])
def test_objects_lie_in_their_halves_without_overlap(image_size):
    """Every pixel of A's colour lies in the half its caption names (so its colour mass does too), and
    B's pixels in the other half: objects stay inside the image and apart, at 16x16 as at 32x32."""
    data = small_shapes(image_size=image_size, num_train=120).load("train")
    assert data.images.shape == (120, 3, image_size, image_size) and data.images.dtype == torch.uint8
    pixels = data.images.numpy().transpose(0, 2, 3, 1).astype(np.float32)
    brightness = pixels.max(axis=-1)
    directions = pixels / np.maximum(brightness, 1.0)[..., None]
    colour = np.abs(directions[..., None, :] - COLOUR_RGB / 255).sum(-1).argmin(-1)
    half = image_size // 2
    for image, row in enumerate(data.attributes.tolist()):
        _, a_colour, _, position, second_shape, b_colour = row
        lit = brightness[image] > 0
        if second_shape != NONE_SHAPE and a_colour == b_colour:
            continue
        ys, xs = np.nonzero(lit & (colour[image] == a_colour))
        along = ys if position < 2 else xs
        in_first_half = position % 2 == 0
        assert len(along) and ((along < half).all() if in_first_half else (along >= half).all()), row
        centre = np.average(along, weights=brightness[image][ys, xs])
        assert centre < half if in_first_half else centre >= half
        if second_shape != NONE_SHAPE:
            ys, xs = np.nonzero(lit & (colour[image] == b_colour))
            along = ys if position < 2 else xs
            assert len(along) and ((along >= half).all() if in_first_half else (along < half).all()), row
        else:
            assert lit.sum() == len(along), "a one-object scene has only A's pixels"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"combinations": "unseen"}, "must be one of seen, held_out"),
        ({"held_out": ["purple square"]}, r"'purple square'\] are not \"colour shape\".*'red circle'"),
        ({"held_out": "red square"}, "must be a list"),
        ({"held_out": COMBINATIONS}, "leave at least one"),
        ({"combinations": "held_out", "held_out": []}, "needs at least one held_out"),
        ({"two_object_fraction": 1.5}, r"must lie in \[0, 1\]"),
        ({"image_size": 4}, "at least 8"),
        ({"num_train": -1}, "0 or more"),
    ],
)
def test_bad_shapes_arguments_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Shapes(**kwargs)


def test_image_set_validates_attributes():
    images, labels = torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)
    values = {"size": ["small", "large"]}
    with pytest.raises(ValueError, match="both attributes and attribute_values"):
        ImageSet(images, labels, ["a"], attributes=torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(2, 1\)"):
        ImageSet(
            images, labels, ["a"], attributes=torch.zeros(2, 2, dtype=torch.long), attribute_values=values
        )
    with pytest.raises(ValueError, match=r"'size' must lie in \[0, 2\)"):
        ImageSet(images, labels, ["a"], attributes=torch.full((2, 1), 2), attribute_values=values)


# --- Captioned ----------------------------------------------------------------------------------


class TinyFashion(DataSource):
    """Fashion-MNIST's class names on ``count`` blank 4x4 images, labels cycling through the classes."""

    def __init__(self, count: int = 60) -> None:
        self.count = count

    @property
    def name(self) -> str:
        return "tiny_fashion"

    def _load(self, split: str) -> ImageSet:
        return ImageSet(
            images=torch.zeros(self.count, 1, 4, 4, dtype=torch.uint8),
            labels=torch.arange(self.count) % len(FASHION_MNIST_CLASSES),
            class_names=FASHION_MNIST_CLASSES,
        )


def test_captioned_is_deterministic_and_each_caption_names_its_class():
    source = Captioned(TinyFashion())
    data = source.load("train")
    assert source.name == "captioned:tiny_fashion"
    assert instantiate(source.spec).load("train").captions == data.captions
    assert Captioned(TinyFashion(count=100)).load("train").captions[:60] == data.captions
    assert Captioned(TinyFashion(), seed=1).load("train").captions != data.captions
    assert source.load("test").captions != data.captions
    for caption, label in zip(data.captions, data.labels.tolist(), strict=True):
        phrases = [with_article(noun) for noun in FASHION_MNIST_SYNONYMS[FASHION_MNIST_CLASSES[label]]]
        assert any(template.replace("{}", p) == caption for template in DEFAULT_TEMPLATES for p in phrases)
    assert len({caption.replace(" an ", " a ") for caption in data.captions}) > 20, (
        "templates and synonyms vary"
    )
    assert with_article("ankle boot") == "an ankle boot" and with_article("sneaker") == "a sneaker"


def test_captioned_uses_lower_cased_class_names_and_keeps_attributes():
    digits = Captioned(Digits(), templates=["a digit {}"]).load("test")
    assert all(
        caption == f"a digit {with_article(str(label))}"
        for caption, label in zip(digits.captions, digits.labels.tolist(), strict=True)
    )
    shapes = Captioned(small_shapes(), templates=["{}"]).load("train")
    assert shapes.attributes is not None and shapes.captions[0] == with_article(
        shapes.class_names[shapes.labels[0]]
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"templates": ["a photo"]}, "contain {} exactly once"),
        ({"templates": []}, "non-empty list"),
        ({"synonyms": {"Sneaker": []}}, r"fix the entries for \['Sneaker'\]"),
    ],
)
def test_bad_captioned_arguments_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Captioned(TinyFashion(), **kwargs)


def test_synonyms_for_unknown_classes_are_refused_on_load():
    with pytest.raises(ConfigError, match=r"synonyms name classes \['Hat'\] that tiny_fashion does not have"):
        Captioned(TinyFashion(), synonyms={"Hat": ["hat"]}).load("train")


# --- datamodule and vocab command ---------------------------------------------------------------


def test_datamodule_batches_carry_captions_and_attributes():
    datamodule = DiffusionDataModule(small_shapes(), batch_size=8)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (8, 3, 16, 16) and len(batch["caption"]) == 8
    assert batch["attributes"].shape == (8, 6) and batch["attributes"].dtype == torch.long
    assert torch.equal(torch.tensor([parse_caption(c) for c in batch["caption"]]), batch["attributes"])
    assert datamodule.attribute_values == {name: list(values) for name, values in ATTRIBUTE_VALUES.items()}
    assert len(datamodule.captions("val", 5)) == 5 and datamodule.attributes("test", 3).shape == (3, 6)
    assert torch.equal(
        torch.tensor([parse_caption(c) for c in datamodule.captions("val")]), datamodule.attributes("val")
    )
    vocabulary = datamodule.vocabulary()
    assert vocabulary == sorted(vocabulary) and {"above", "triangle", "yellow", "left"} <= set(vocabulary)
    digits = DiffusionDataModule(Digits())
    assert digits.attribute_values is None and "attributes" not in next(iter(digits.val_dataloader()))
    for method in (digits.vocabulary, lambda: digits.captions("test"), lambda: digits.attributes("test")):
        with pytest.raises(ConfigError, match="digits has no"):
            method()


def test_vocab_command_prints_a_yaml_list_covering_every_caption(tmp_path: Path):
    source = {"class_path": "Shapes", "init_args": {"image_size": 16, "num_train": 100}}
    data = {"class_path": "DiffusionDataModule", "init_args": {"source": source}}
    config = tmp_path / "shapes.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "Evaluator"}, "data": data}))
    result = run_module("vocab", "--config", str(config))
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    captions = Shapes(image_size=16, num_train=100).load("train").captions
    assert printed == sorted({word for caption in captions for word in split_words(caption)})
    assert result.stdout.startswith("[a, above, at, ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {}\n")
    result = run_module("vocab", "--config", str(bad))
    assert result.returncode != 0 and "has no data section" in result.stderr


# --- evaluator attribute heads ------------------------------------------------------------------


def shapes_evaluator(attribute_sizes: list[int] | None = ATTRIBUTE_SIZES) -> Evaluator:
    torch.manual_seed(0)
    net = ConvClassifier(in_channels=3, num_classes=12, channels=(8, 16), feature_dim=32)
    return Evaluator(net, image_shape=(3, 16, 16), num_classes=12, attribute_sizes=attribute_sizes)


def test_evaluator_attribute_head_trains_and_predicts_every_attribute():
    model = shapes_evaluator()
    datamodule = DiffusionDataModule(small_shapes(), batch_size=16)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=1, num_sanity_val_steps=0)
    before = model.attribute_head.weight.detach().clone()
    trainer.fit(model, datamodule=datamodule)
    assert not torch.equal(before, model.attribute_head.weight)
    metrics = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    assert 0.0 <= metrics["val/attribute_accuracy"] <= 1.0 and "val/accuracy" in metrics
    predictions = model.eval().attribute_predictions(datamodule.real_images("test", 5))
    assert predictions.shape == (5, 6) and predictions.dtype == torch.long
    assert (predictions < torch.tensor(ATTRIBUTE_SIZES)).all()


def test_evaluator_without_attributes_is_unchanged_and_has_no_attribute_predictions():
    model = shapes_evaluator(attribute_sizes=None)
    assert not any(key.startswith("attribute_head") for key in model.state_dict())
    assert set(model.epoch_means) == {"val_loss", "val_accuracy", "test_loss", "test_accuracy"}
    with pytest.raises(ConfigError, match="no attribute head"):
        model.attribute_predictions(torch.zeros(1, 3, 16, 16))


def test_evaluator_refuses_data_with_other_attribute_sizes():
    model = shapes_evaluator([3, 4])
    message = (
        r"have \[3, 4, 2, 4, 4, 5\] values but the model is configured for \[3, 4\]; set .*attribute_sizes"
    )
    with pytest.raises(ConfigError, match=message):
        quiet_trainer(max_steps=1).fit(model, datamodule=DiffusionDataModule(small_shapes(), batch_size=8))


def test_evaluator_with_attribute_heads_refuses_data_without_attributes():
    net = ConvClassifier(in_channels=1, num_classes=10, channels=(8,), feature_dim=8)
    model = Evaluator(net, image_shape=(1, 8, 8), num_classes=10, attribute_sizes=[2, 3])
    with pytest.raises(ConfigError, match="the data has no attributes; use a source with attributes"):
        quiet_trainer(max_steps=1).fit(
            model, datamodule=DiffusionDataModule(Captioned(Digits()), batch_size=8)
        )


@pytest.mark.parametrize("attribute_sizes", [[], [3, 1]])
def test_evaluator_refuses_bad_attribute_sizes(attribute_sizes):
    with pytest.raises(ConfigError, match="attribute_sizes must list"):
        shapes_evaluator(attribute_sizes)


def test_in_two_object_scenes_the_caption_names_the_top_or_left_object_first():
    data = Shapes(image_size=16, num_train=400, num_test=10, two_object_fraction=1.0).load("train")
    positions = {ATTRIBUTE_VALUES["position"][index] for index in data.attributes[:, 3].tolist()}
    assert positions == {"top", "left"}
    assert all(" below " not in c and "to the right of" not in c for c in data.captions)
