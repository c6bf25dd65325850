"""The kinds of condition a sweep can prompt with, one registered entry each.

A prompt kind is named by its condition key ("label", "caption"): the key of the batch, of each drawn
sample's condition and of the denoiser's condition part that reads it. Its entry says how to name it in
messages, how to read the values samples draw from (from the data module's reference split, or the
models), how to batch the drawn values, and whether a denoiser takes it. Sweeps pick the kind from the
denoiser's condition parts and from what their rows can follow; methods declare the kinds they can follow
by name, checked here. Adding a kind is one ``register_prompt_kind`` call (and its test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.named_registry import NamedRegistry


@dataclass(frozen=True)
class Pool:
    """The values a sweep's samples draw their condition from, with what comes with each value: its class
    label (which joins the condition as "label") and its attributes (targets of attribute accuracy)."""

    values: Sequence[Any]
    labels: Tensor | None = None
    attributes: Tensor | None = None


@dataclass(frozen=True)
class PromptSource:
    """Where a kind reads its pool: the data module, its reference split, and the sweep's models."""

    datamodule: Any
    split: str
    models: Any


def _condition_part(name: str) -> Callable[[Any], bool]:
    """Whether a denoiser has a condition part reading the key ``name`` (in its ``conditioner``)."""

    def takes(denoiser: Any) -> bool:
        conditioner = getattr(denoiser, "conditioner", None)
        return conditioner is not None and any(name in part.keys for part in conditioner.values())

    return takes


@dataclass(frozen=True)
class PromptKind:
    """One kind of condition a sweep can prompt with.

    ``name``: its condition key; ``human``: its plural in messages ("class labels"); ``read``: the pool
    of values samples draw from, given a ``PromptSource`` (refusing, with what to do, where there is none);
    ``collate``: the drawn values (one per sample) as the condition's batch value on a device; ``carries``:
    other condition keys its draws fill too (a caption's label); ``consumed_by``: whether a denoiser takes
    it (default: one of its condition parts reads ``name``); ``refusal``: why a method that contrasts the
    denoiser's conditional and unconditional estimates cannot run on a denoiser that does not take it
    (``{method}`` is the method's name)."""

    name: str
    human: str
    read: Callable[[PromptSource], Pool]
    collate: Callable[[list[Any], torch.device], Any]
    carries: tuple[str, ...] = ()
    consumed_by: Callable[[Any], bool] | None = None
    refusal: str | None = None

    def takes(self, denoiser: Any) -> bool:
        """Whether ``denoiser`` is conditioned on this kind."""
        return (self.consumed_by or _condition_part(self.name))(denoiser)

    def refuse(self, method: str) -> str:
        """Why ``method`` cannot run with these prompts on a denoiser that does not take them."""
        default = f"{{method}} on {self.human} needs a denoiser with a condition part reading {self.name!r}."
        return (self.refusal or default).format(method=method)


_kinds: NamedRegistry[PromptKind] = NamedRegistry(
    "prompt kind", "prompt kinds", hint=" (add one with register_prompt_kind)"
)


def register_prompt_kind(kind: PromptKind) -> PromptKind:
    """Register ``kind`` under its name (a second, different kind of that name is refused)."""
    return _kinds.register(kind.name, kind)


def prompt_kinds() -> list[PromptKind]:
    """The registered prompt kinds, in registration order."""
    return _kinds.entries()


def get_prompt_kind(name: str, owner: str = "a sweep") -> PromptKind:
    """The kind registered as ``name``; an unknown name (as declared by ``owner``) lists the kinds."""
    return _kinds.get(name, asked_by=owner)


def describe(names: Iterable[str]) -> str:
    """The kinds' names for messages: "class labels", "class labels or captions"."""
    return " or ".join(get_prompt_kind(name).human for name in names)


def choose_kind(
    denoiser: Any, followed: Sequence[tuple[str, ...] | None], asked: str | None = None
) -> PromptKind:
    """The kind a sweep prompts with: ``asked`` (the user gave its values), else among the kinds the
    denoiser takes and those a row can follow alone (``followed``: each row's kinds, None for any), the
    one whose draws fill the most of them (a caption, which carries its label, over the label), the first
    registered on a tie; with none of them, the first registered kind (class labels)."""
    if asked is not None:
        return get_prompt_kind(asked)
    alone = {kinds[0] for kinds in followed if kinds is not None and len(kinds) == 1}
    wanted = [kind for kind in _kinds.entries() if kind.takes(denoiser) or kind.name in alone]
    if not wanted:
        return _kinds.entries()[0]
    return max(wanted, key=lambda kind: sum(other.name in (kind.name, *kind.carries) for other in wanted))


def _classes(source: PromptSource) -> Pool:
    classes = source.models.num_classes
    if classes is None:
        raise ConfigError(
            "cannot tell the number of classes to sample: pass an --evaluator or a class-conditional model."
        )
    return Pool(range(classes))


def _captions(source: PromptSource) -> Pool:
    data = source.datamodule
    if not data.has_captions:
        raise ConfigError(
            "the data has no captions to sample; pass --captions or use a captioned source "
            "(Shapes, Captioned)."
        )
    attributes = data.attributes(source.split) if data.attribute_values is not None else None
    return Pool(data.captions(source.split), data.labels(source.split), attributes)


register_prompt_kind(
    PromptKind(
        "label",
        "class labels",
        read=_classes,
        collate=lambda labels, device: torch.tensor(labels, dtype=torch.long, device=device),
        consumed_by=lambda denoiser: getattr(denoiser, "num_classes", None) is not None,
        refusal="{method} needs a class-conditional denoiser, and this one is unconditional; use classifier "
        "with --classifier PATH, or a conditional denoiser.",
    )
)
register_prompt_kind(
    PromptKind(
        "caption",
        "captions",
        read=_captions,
        collate=lambda captions, device: captions,
        carries=("label",),
        refusal="{method} on captions needs a text-conditional denoiser (with a text_encoder); use clip with "
        "--contrastive PATH for this one.",
    )
)
