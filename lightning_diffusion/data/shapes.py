"""Procedural coloured shapes with compositional captions: a text-conditioning data set of any size.

Each image shows object A (a small or large red/green/blue/yellow circle/square/triangle) in the top,
bottom, left or right half of a black image and, sometimes, object B in the opposite half (then A is
the top or left object, so each image has one caption). Captions
follow one fixed grammar (``CAPTION_GRAMMAR``), so ``parse_caption`` turns a caption back into the
attributes it asks for; holding "colour shape" combinations out of training tests compositional
generalisation (a model that has seen red circles and blue squares, asked for a red square).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from lightning_diffusion.config import ConfigError
from lightning_diffusion.data.sources import SPLITS, DataSource, ImageSet

SHAPES = ["circle", "square", "triangle"]
COLOURS = ["red", "green", "blue", "yellow"]
COLOUR_RGB = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.float32)
SIZES = ["small", "large"]
POSITIONS = ["top", "bottom", "left", "right"]
RELATIONS = ["above", "below", "to the left of", "to the right of"]  # A's position relative to B
NONE = "none"
ATTRIBUTE_VALUES = {
    "shape": SHAPES,
    "colour": COLOURS,
    "size": SIZES,
    "position": POSITIONS,
    "second_shape": [*SHAPES, NONE],
    "second_colour": [*COLOURS, NONE],
}
COMBINATIONS = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]  # the class names
COMBINATION_MODES = ("seen", "held_out", "all")
CAPTION_GRAMMAR = (
    '"a {size} {colour} {shape} at the {position}" or "a {size} {colour} {shape} {relation} a {colour} '
    f'{{shape}}" with size in {SIZES}, colour in {COLOURS}, shape in {SHAPES}, position in {POSITIONS} '
    f"and relation in {RELATIONS}"
)

RADIUS = np.array([0.125, 0.2])  # small, large: half the object's width, as a fraction of the image size
MARGIN = 0.03  # least gap between an object and the image edge or the middle line (fraction of the size)
OWN_AXIS_JITTER = 0.05  # most offset from the centre of its half along the axis that names its position
SUPERSAMPLE = 4  # sub-rows per pixel row; columns are covered exactly
CHUNK = 4096  # images rendered at once (bounds the memory of the coverage arrays)


def _alternatives(words: Sequence[str]) -> str:
    return "|".join(re.escape(word) for word in words)


ONE_OBJECT = re.compile(
    rf"a ({_alternatives(SIZES)}) ({_alternatives(COLOURS)}) ({_alternatives(SHAPES)}) at the "
    rf"({_alternatives(POSITIONS)})"
)
TWO_OBJECTS = re.compile(
    rf"a ({_alternatives(SIZES)}) ({_alternatives(COLOURS)}) ({_alternatives(SHAPES)}) "
    rf"({_alternatives(RELATIONS)}) a ({_alternatives(COLOURS)}) ({_alternatives(SHAPES)})"
)


def parse_caption(caption: str) -> list[int]:
    """The attribute indices (in ``ATTRIBUTE_VALUES`` order) a Shapes caption asks for; ``size`` is A's.

    Captions do not state B's size, so no attribute holds it; B's shape and colour are "none" in
    one-object captions."""
    text = " ".join(caption.lower().split())
    if match := ONE_OBJECT.fullmatch(text):
        size, colour, shape, position = match.groups()
        second_shape, second_colour = NONE, NONE
    elif match := TWO_OBJECTS.fullmatch(text):
        size, colour, shape, relation, second_colour, second_shape = match.groups()
        position = POSITIONS[RELATIONS.index(relation)]
    else:
        raise ConfigError(f"cannot parse the Shapes caption {caption!r}; captions read {CAPTION_GRAMMAR}.")
    values = (shape, colour, size, position, second_shape, second_colour)
    return [names.index(value) for names, value in zip(ATTRIBUTE_VALUES.values(), values, strict=True)]


def _caption(attributes: Sequence[int]) -> str:
    """The caption of a scene's attribute indices (the inverse of ``parse_caption``)."""
    shape, colour, size, position, second_shape, second_colour = attributes
    subject = f"a {SIZES[size]} {COLOURS[colour]} {SHAPES[shape]}"
    if second_shape == len(SHAPES):
        return f"{subject} at the {POSITIONS[position]}"
    return f"{subject} {RELATIONS[position]} a {COLOURS[second_colour]} {SHAPES[second_shape]}"


def _place(size: int, position: int, own: float, other: float) -> tuple[float, float, float]:
    """(radius, centre x, centre y) as fractions of the image size of an object in the half ``position``
    names, from uniform draws ``own`` (jitter along the axis that names the half) and ``other``."""
    radius = RADIUS[size]
    jitter = min(OWN_AXIS_JITTER, 0.25 - radius - MARGIN)
    along = 0.25 + 0.5 * (position % 2) + (2 * own - 1) * jitter
    across = radius + MARGIN + other * (1 - 2 * (radius + MARGIN))
    return (radius, across, along) if position < 2 else (radius, along, across)


def _scene(
    rng: np.random.Generator, two_object_fraction: float, a_allowed: np.ndarray, b_allowed: np.ndarray
) -> tuple[list[int], np.ndarray]:
    """One scene: its attribute indices and geometry (2, 5) rows ``shape, colour, radius, x, y`` of A and
    B (B's shape -1 when absent), drawing "colour shape" combinations until both are allowed. With two
    objects A is the top or the left one: "a red circle above a blue square" and "a blue square below a
    red circle" would show the same image, and an evaluator could not tell which object the caption's
    attributes describe."""
    two = rng.random() < two_object_fraction
    while True:
        a = int(rng.integers(len(COMBINATIONS)))
        b = int(rng.integers(len(COMBINATIONS))) if two else -1
        if a_allowed[a] and (not two or b_allowed[b]):
            break
    size, second_size = rng.integers(len(SIZES), size=2)
    position = int(rng.integers(len(POSITIONS)))
    if two:  # A is the top or left object, so the caption is a function of the image (identifiable)
        position &= ~1
    jitter = rng.random(4)
    geometry = np.full((2, 5), -1.0)
    geometry[0] = (a % len(SHAPES), a // len(SHAPES), *_place(size, position, jitter[0], jitter[1]))
    attributes = [a % len(SHAPES), a // len(SHAPES), int(size), position, len(SHAPES), len(COLOURS)]
    if two:
        opposite = position ^ 1  # top <-> bottom, left <-> right
        geometry[1] = (b % len(SHAPES), b // len(SHAPES), *_place(second_size, opposite, *jitter[2:]))
        attributes[4:] = [b % len(SHAPES), b // len(SHAPES)]
    return attributes, geometry


def _coverage(shape: np.ndarray, geometry: np.ndarray, image_size: int) -> np.ndarray:
    """Anti-aliased masks (M, H, W) in [0, 1] of objects with ``shape`` indices (M,) and rows
    ``radius, x, y`` (M, 3) in pixels: exact coverage along each of ``SUPERSAMPLE`` sub-rows per row.

    Each shape is an interval of x per sub-row: a circle's chord, a square's full width, and a triangle
    (apex up, base at the bottom) whose half-width grows linearly from 0 to the radius."""
    radius, x, y = (column[:, None] for column in geometry.astype(np.float32).T)
    rows = (np.arange(image_size * SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE
    dy = rows[None, :] - y
    half_width = np.select(
        [shape[:, None] == 0, shape[:, None] == 1],
        [np.sqrt(np.clip(radius**2 - dy**2, 0.0, None)), np.broadcast_to(radius, dy.shape)],
        (dy + radius) / 2,
    )
    half_width = np.where(np.abs(dy) <= radius, half_width, 0.0)
    left, right = (x - half_width)[:, :, None], (x + half_width)[:, :, None]
    columns = np.arange(image_size, dtype=np.float32)
    covered = np.clip(np.minimum(right, columns + 1) - np.maximum(left, columns), 0.0, 1.0)
    return covered.reshape(len(shape), image_size, SUPERSAMPLE, image_size).mean(axis=2)


def _render(geometry: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 RGB images (N, 3, H, W) of scenes with ``geometry`` (N, 2, 5), ``CHUNK`` images at a time."""
    images = np.zeros((len(geometry), 3, image_size, image_size), dtype=np.uint8)
    for start in range(0, len(geometry), CHUNK):
        chunk = geometry[start : start + CHUNK]
        canvas = np.zeros((len(chunk), 3, image_size, image_size), dtype=np.float32)
        for slot in range(2):
            present = np.flatnonzero(chunk[:, slot, 0] >= 0)
            shape, colour = chunk[present, slot, :2].astype(np.int64).T
            masks = _coverage(shape, chunk[present, slot, 2:] * image_size, image_size)
            canvas[present] += masks[:, None] * COLOUR_RGB[colour][:, :, None, None]
        images[start : start + CHUNK] = np.rint(canvas)
    return images


@lru_cache(maxsize=4)
def _shapes_split(
    image_size: int,
    count: int,
    seed: int,
    two_object_fraction: float,
    combinations: str,
    held_out: tuple[str, ...],
    split: str,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, 3, H, W), attributes (N, 6) and captions of a split: image i from its own generator."""
    held = np.isin(COMBINATIONS, held_out)
    b_allowed = np.ones_like(held) if combinations == "all" else ~held
    a_allowed = {"seen": ~held, "held_out": held, "all": b_allowed}[combinations]
    scenes = [
        _scene(
            np.random.default_rng((seed, SPLITS.index(split), i)), two_object_fraction, a_allowed, b_allowed
        )
        for i in range(count)
    ]
    attributes = np.array([scene[0] for scene in scenes], dtype=np.int64).reshape(
        count, len(ATTRIBUTE_VALUES)
    )
    geometry = np.array([scene[1] for scene in scenes]).reshape(count, 2, 5)
    return _render(geometry, image_size), attributes, [_caption(row) for row in attributes.tolist()]


class Shapes(DataSource):
    """Procedural RGB scenes of one or two coloured shapes with compositional captions and attributes.

    Deterministic from the arguments: image i of a split comes from a generator seeded by
    ``(seed, split, i)``, so the first n images do not depend on ``num_train``/``num_test``. The label
    is object A's "colour shape" (one of the 12 ``COMBINATIONS``); ``attributes`` hold the
    ``ATTRIBUTE_VALUES`` indices a caption states. ``combinations="seen"`` leaves out every scene with
    an object in ``held_out``; ``"held_out"`` keeps only scenes whose object A is held out (B seen);
    ``"all"`` excludes nothing (for an evaluator that must read held-out samples; it never guides)."""

    def __init__(
        self,
        image_size: int = 32,
        num_train: int = 20000,
        num_test: int = 2000,
        seed: int = 0,
        two_object_fraction: float = 0.5,
        combinations: str = "seen",
        held_out: Sequence[str] = ("red square", "green triangle", "blue circle"),
    ) -> None:
        if image_size < 8:
            raise ConfigError(f"Shapes image_size must be at least 8 pixels, got {image_size}.")
        if min(num_train, num_test, seed) < 0:
            raise ConfigError(
                f"Shapes num_train, num_test and seed must be 0 or more, got num_train={num_train}, "
                f"num_test={num_test} and seed={seed}."
            )
        if not 0.0 <= two_object_fraction <= 1.0:
            raise ConfigError(
                f"two_object_fraction is a probability and must lie in [0, 1], got {two_object_fraction}."
            )
        if combinations not in COMBINATION_MODES:
            raise ConfigError(
                f"Shapes combinations must be one of {', '.join(COMBINATION_MODES)} (scenes without the "
                f"held-out combinations, with object A held out, or every scene), got {combinations!r}."
            )
        if isinstance(held_out, str):
            raise ConfigError(
                f'held_out must be a list of "colour shape" strings, got the string {held_out!r}.'
            )
        unknown = [name for name in held_out if name not in COMBINATIONS]
        if unknown:
            raise ConfigError(
                f'held_out entries {unknown} are not "colour shape" combinations; choose from {COMBINATIONS}.'
            )
        if set(held_out) >= set(COMBINATIONS):
            raise ConfigError("held_out lists all 12 combinations; leave at least one of them seen.")
        if combinations == "held_out" and not held_out:
            raise ConfigError('combinations="held_out" needs at least one held_out combination.')
        self.image_size = image_size
        self.num_train = num_train
        self.num_test = num_test
        self.seed = seed
        self.two_object_fraction = two_object_fraction
        self.combinations = combinations
        self.held_out = tuple(sorted(set(held_out)))

    @property
    def name(self) -> str:
        """``"shapes<size>"``, with ``":held_out"`` or ``":all"`` unless the scenes are the seen ones."""
        return f"shapes{self.image_size}" + ("" if self.combinations == "seen" else f":{self.combinations}")

    def _load(self, split: str) -> ImageSet:
        count = self.num_train if split == "train" else self.num_test
        images, attributes, captions = _shapes_split(
            self.image_size,
            count,
            self.seed,
            float(self.two_object_fraction),
            self.combinations,
            self.held_out,
            split,
        )
        return ImageSet(
            images=torch.from_numpy(images),
            labels=torch.from_numpy(attributes[:, 1] * len(SHAPES) + attributes[:, 0]),
            class_names=list(COMBINATIONS),
            captions=list(captions),
            attributes=torch.from_numpy(attributes),
            attribute_values={name: list(values) for name, values in ATTRIBUTE_VALUES.items()},
        )
