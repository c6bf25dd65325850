"""Captions for labelled sources: each image's class name put into a sentence, for text conditioning.

``Captioned(FashionMNIST())`` turns label 7 into "a photo of a trainer" or "a sneaker": a template and
a synonym of the class chosen per image, deterministically, so a text-conditional model can train on
any labelled data set and its sampled captions can be scored by class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from lightning_diffusion.config import ConfigError
from lightning_diffusion.data.sources import SPLITS, DataSource, ImageSet

PLACEHOLDER = "{}"
DEFAULT_TEMPLATES = [
    "a photo of {}",
    "a picture of {}",
    "a black and white photo of {}",
    "a small photo of {}",
    "a close-up photo of {}",
    "an image of {}",
    "{}",
]
FASHION_MNIST_SYNONYMS = {
    "T-shirt/top": ["t-shirt", "top", "tee"],
    "Trouser": ["pair of trousers", "pair of pants"],
    "Pullover": ["pullover", "sweater", "jumper"],
    "Dress": ["dress", "frock"],
    "Coat": ["coat", "jacket", "overcoat"],
    "Sandal": ["sandal", "strappy sandal"],
    "Shirt": ["shirt", "blouse", "button-up shirt"],
    "Sneaker": ["sneaker", "trainer", "running shoe"],
    "Bag": ["bag", "handbag", "purse"],
    "Ankle boot": ["ankle boot", "boot"],
}


def with_article(noun: str) -> str:
    """``noun`` with its indefinite article by its first letter: "an ankle boot", "a sneaker"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


class Captioned(DataSource):
    """Another source's images, labels (and attributes) with captions made from its class names.

    Image i of a split gets one of ``templates`` and one of the synonyms of its class, chosen by a
    generator seeded by ``(seed, split, i)``. ``{}`` in a template stands for the noun phrase with its
    article ("a photo of {}" -> "a photo of an ankle boot"). ``synonyms`` maps class names to nouns
    (default: ``FASHION_MNIST_SYNONYMS``); classes without synonyms use their lower-cased name."""

    def __init__(
        self,
        source: DataSource,
        templates: Sequence[str] | None = None,
        synonyms: dict[str, list[str]] | None = None,
        seed: int = 0,
    ) -> None:
        if seed < 0:
            raise ConfigError(f"Captioned seed must be 0 or more, got {seed}.")
        if templates is not None:
            bad = [t for t in templates if not isinstance(t, str) or t.count(PLACEHOLDER) != 1]
            if isinstance(templates, str) or not templates or bad:
                raise ConfigError(
                    f"templates must be a non-empty list of strings that each contain {PLACEHOLDER} exactly "
                    f'once, where the class noun goes (e.g. "a photo of {{}}"); got {templates!r}.'
                )
        if synonyms is not None:
            bad = [
                name
                for name, nouns in synonyms.items()
                if isinstance(nouns, str)
                or not nouns
                or not all(isinstance(n, str) and n.strip() for n in nouns)
            ]
            if bad:
                raise ConfigError(
                    "synonyms must map class names to non-empty lists of nouns (e.g. "
                    f'{{"Sneaker": ["sneaker", "trainer"]}}); fix the entries for {bad}.'
                )
        self.source = source
        self.templates = list(DEFAULT_TEMPLATES if templates is None else templates)
        self.synonyms = synonyms
        self.seed = seed

    @property
    def name(self) -> str:
        """``"captioned:<source name>"``."""
        return f"captioned:{self.source.name}"

    def phrases(self, class_names: Sequence[str]) -> list[list[str]]:
        """The noun phrases (with article) that may stand for each class, in label order."""
        if self.synonyms is None:
            table = FASHION_MNIST_SYNONYMS
        else:
            table = self.synonyms
            unknown = sorted(set(table) - set(class_names))
            if unknown:
                raise ConfigError(
                    f"synonyms name classes {unknown} that {self.source.name} does not have; its classes "
                    f"are {list(class_names)}."
                )
        return [[with_article(noun) for noun in table.get(name, [name.lower()])] for name in class_names]

    def _load(self, split: str) -> ImageSet:
        data = self.source.load(split)
        phrases = self.phrases(data.class_names)
        captions = []
        for index, label in enumerate(data.labels.tolist()):
            rng = np.random.default_rng((self.seed, SPLITS.index(split), index))
            template = self.templates[rng.integers(len(self.templates))]
            captions.append(template.replace(PLACEHOLDER, phrases[label][rng.integers(len(phrases[label]))]))
        return dataclasses.replace(data, captions=captions)
