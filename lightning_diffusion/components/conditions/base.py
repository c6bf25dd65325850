"""What every condition part is: its keys, its null value ∅, its dropout, what it gives the network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from lightning_diffusion.components.base import check_probabilities
from lightning_diffusion.config import Configurable
from lightning_diffusion.diffusion import CosineSchedule


class NetConditions(NamedTuple):
    """What a denoising network receives besides (z, t): a condition vector and context tokens."""

    vector: Tensor | None = None
    context: Tensor | None = None
    context_mask: Tensor | None = None

    def as_kwargs(self) -> dict[str, Tensor]:
        """Keyword arguments for ``net(x, t, **kwargs)``: only what is present."""
        names = ("cond", "context", "context_mask")
        return {name: value for name, value in zip(names, self, strict=True) if value is not None}


@dataclass(frozen=True)
class NetworkSlots:
    """What a denoising network offers its conditions (the widths of its condition vector and context
    tokens, ``None`` when it has none) and the model around it (image shape, diffusion schedule)."""

    image_shape: tuple[int, ...]
    cond_dim: int | None
    context_dim: int | None
    schedule: CosineSchedule

    @classmethod
    def of(cls, net: nn.Module, image_shape: Sequence[int], schedule: CosineSchedule) -> NetworkSlots:
        """The slots of ``net`` (its ``cond_dim`` and ``context_dim`` attributes) inside a model."""
        return cls(
            tuple(image_shape), getattr(net, "cond_dim", None), getattr(net, "context_dim", None), schedule
        )


class Condition(Configurable, nn.Module):
    """One condition of a diffusion model, a part the ``Conditioner`` combines with others.

    A part says which keys of a condition dict it reads (``keys``), what reaches the network
    (``gives_vector``: it adds to the condition vector; ``gives_tokens``: context tokens;
    ``extra_channels``: channels concatenated to z_t) and which keys other parts must provide
    (``requires``). It is built in two steps: its constructor takes its own options, then ``build``
    (called once by the Conditioner) checks what it needs of the network and makes its layers to the
    network's widths. A ``droppable`` part has a null value ∅ (``null``): during training each sample's
    value becomes ∅ with probability ``p_drop``; parts of one ``group`` share one uniform draw per
    sample, so with equal rates they drop together (classifier-free guidance on their joint condition),
    while parts of different groups (or ``group=None``) drop independently.
    """

    keys: ClassVar[tuple[str, ...]]
    gives_vector: ClassVar[bool] = False
    gives_tokens: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()
    droppable: ClassVar[bool] = False

    def __init__(self, p_drop: float = 0.0, group: str | None = None) -> None:
        super().__init__()
        check_probabilities(p_drop=p_drop)
        self.p_drop = p_drop
        self.group = group

    @property
    def name(self) -> str:
        """The part's name in the conditioner (and its state-dict prefix): its first key."""
        return self.keys[0]

    def build(self, slots: NetworkSlots) -> None:
        """Check what the part needs of the network (a clear ConfigError) and make its layers."""

    def extra_channels(self, image_shape: Sequence[int]) -> int:
        """Channels the part concatenates to z_t at the network's input."""
        return 0

    def null(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        """∅ for a batch, one entry per droppable key (empty for a part that is never dropped)."""
        return {}

    def read(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The part's clean condition of a training or validation batch."""
        raise NotImplementedError

    def drop(self, cond: dict[str, Any], mask: Tensor) -> None:
        """Replace the part's keys of ``cond`` by ∅ where the host (B,) bool ``mask`` is True."""

    def augment(self, cond: dict[str, Any]) -> None:
        """Training-time randomness of the part beyond dropout (e.g. noising a low-res image)."""

    def check(self, cond: Mapping[str, Any]) -> None:
        """Refuse bad values once per run (it may read the device, so never per network call)."""

    def inputs(self, cond: Mapping[str, Any], batch_size: int) -> NetConditions:
        """The part's contribution to the condition vector and context tokens; a missing key means ∅."""
        return NetConditions()

    def channels(self, cond: Mapping[str, Any], z: Tensor) -> Tensor | None:
        """The channels the part concatenates to ``z`` (None when it adds none)."""
        return None
