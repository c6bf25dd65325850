"""Whether trained models belong together: what each was trained on, compared aspect by aspect.

A model's image shape, classes and caption vocabulary are read from the model itself; its data set from
the data record (``datamodule_hyper_parameters``) its checkpoint carries. Sweeps and pipelines refuse a
model trained on other data than the one it is combined with before the first sample, naming both sides
and what differs; ``allow_cross_data`` lets a deliberate cross-data pairing through (e.g. an evaluator
from a superset of the classes), except a different image shape, which no model can read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_diffusion.config import ConfigError
from lightning_diffusion.registry import read_checkpoint

ASPECTS = ("image", "classes", "vocabulary", "source")
CROSS_DATA = ("classes", "vocabulary", "source")  # the aspects allow_cross_data lets differ
DATA_KEY = "datamodule_hyper_parameters"

log = logging.getLogger(__name__)


def recorded_data(path: str | Path) -> Mapping[str, Any] | None:
    """The data module hyperparameters a checkpoint records (None when it records none)."""
    return read_checkpoint(path).get(DATA_KEY)


def data_set(data: Mapping[str, Any] | None) -> str | None:
    """The data set of a data record: the innermost source's class name (a ``Captioned`` source is the
    source it captions), so that two sources differing only in options (size, split, combinations)
    count as the same data; None when unrecorded."""
    source = None if data is None else data.get("source")
    while isinstance(source, Mapping) and isinstance(source.get("init_args", {}).get("source"), Mapping):
        source = source["init_args"]["source"]
    if not isinstance(source, Mapping) or "class_path" not in source:
        return None
    return str(source["class_path"]).rsplit(".", 1)[-1]


def text_vocabulary(model: Any) -> tuple[str, ...] | None:
    """The caption vocabulary of a model's text encoder, its carried encoder's, or its first stage's
    (cascades, the unCLIP chain's prior); None for a model that reads no captions."""
    for holder in (model, getattr(model, "encoder", None)):
        vocab = getattr(getattr(holder, "text_encoder", None), "vocab", None)
        if vocab is not None:
            return tuple(vocab)
    stages = getattr(model, "stages", None)
    first = stages[0].model if stages else getattr(getattr(model, "prior", None), "model", None)
    return None if first is None else text_vocabulary(first)


@dataclass(frozen=True)
class Trained:
    """A model and what it was trained on: ``name`` says which in messages ("the evaluator (PATH)"),
    ``data`` is the data record of its checkpoint (None when unrecorded: its data set is not compared)."""

    name: str
    model: Any
    data: Mapping[str, Any] | None = None

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        shape = getattr(self.model, "image_shape", None)
        return None if shape is None else tuple(shape)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.model, "num_classes", None)


def _size(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape[1:]))


def differences(other: Trained, subject: Trained, aspects: Sequence[str]) -> dict[str, str]:
    """What differs between ``other`` and ``subject`` among ``aspects``, by aspect ("other vs subject")."""
    found: dict[str, str] = {}
    shapes = other.image_shape, subject.image_shape
    if "image" in aspects and None not in shapes and shapes[0] != shapes[1]:
        details = []
        if shapes[0][1:] != shapes[1][1:]:
            details.append(f"image size {_size(shapes[0])} vs {_size(shapes[1])}")
        if shapes[0][0] != shapes[1][0]:
            details.append(f"channels {shapes[0][0]} vs {shapes[1][0]}")
        found["image"] = ", ".join(details)
    sets = data_set(other.data), data_set(subject.data)
    different_data = None not in sets and sets[0] != sets[1]
    if "source" in aspects and different_data:
        found["source"] = f"data set {sets[0]} vs {sets[1]}"
    classes = other.num_classes, subject.num_classes
    if "classes" in aspects and None not in classes and classes[0] != classes[1]:
        found["classes"] = f"{classes[0]} classes vs {classes[1]}"
    elif "classes" in aspects and other.num_classes is not None and different_data and "source" not in found:
        found["classes"] = f"the classes of {sets[0]} vs those of {sets[1]}"
    vocabularies = text_vocabulary(other.model), text_vocabulary(subject.model)
    if "vocabulary" in aspects and None not in vocabularies and vocabularies[0] != vocabularies[1]:
        extra = sorted(set(vocabularies[0]) - set(vocabularies[1]))[:5]
        missing = sorted(set(vocabularies[1]) - set(vocabularies[0]))[:5]
        found["vocabulary"] = (
            f"caption vocabulary of {len(vocabularies[0])} vs {len(vocabularies[1])} words (only in the "
            f"first: {extra or 'none'}; only in the second: {missing or 'none'})"
        )
    return found


def check_together(
    other: Trained, subject: Trained, aspects: Sequence[str], fix: str, allow_cross_data: bool = False
) -> None:
    """Refuse ``other`` combined with ``subject`` where they differ in ``aspects``, naming both and what
    differs, then ``fix``; with ``allow_cross_data`` only an image shape is refused, the rest logged."""
    unknown = sorted(set(aspects) - set(ASPECTS))
    if unknown:
        raise ConfigError(
            f"unknown compatibility aspect(s) {unknown}; the aspects are: {', '.join(ASPECTS)}."
        )
    found = differences(other, subject, aspects)
    refused = {
        aspect: text for aspect, text in found.items() if not allow_cross_data or aspect not in CROSS_DATA
    }
    what = f"{other.name} was trained on other data than {subject.name}"
    if refused:
        raise ConfigError(f"{what}: {'; '.join(refused.values())}; {fix}")
    if found:
        log.warning("%s (allowed, cross-data on purpose): %s.", what, "; ".join(found.values()))
