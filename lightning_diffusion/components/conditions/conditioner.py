"""The conditioner: one model's condition parts combined (sgm's GeneralConditioner is the model).

The parts' condition vectors are summed, their context tokens (and masks) concatenated, and their extra
channels concatenated to z_t, in the order of the parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.components.base import check_network
from lightning_diffusion.components.conditions.base import Condition, NetConditions, NetworkSlots
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import CosineSchedule


class Conditioner(nn.ModuleDict):
    """The condition parts of a model around ``net``, by name: checks that the network takes what they
    give (condition vector, context tokens, input channels), builds them, and turns a condition dict
    (or a training batch) into the network's inputs."""

    def __init__(
        self, parts: Sequence[Condition], net: nn.Module, image_shape: Sequence[int], schedule: CosineSchedule
    ) -> None:
        super().__init__()
        for part in parts:
            if part.name in self:
                raise ConfigError(
                    f"two conditions read the key {part.name!r}; give each condition once (a ClassLabel "
                    "or Caption in conditions replaces num_classes or text_encoder: set those to null)."
                )
            self[part.name] = part
        provided = {key for part in parts for key in part.keys}
        for part in parts:
            missing = [key for key in part.requires if key not in provided]
            if missing:
                raise ConfigError(
                    f"the {type(part).__name__} condition works on the {', '.join(missing)} condition, which "
                    "no other condition of the model provides; add it (e.g. LowResImage) or remove it."
                )
        slots = NetworkSlots.of(net, image_shape, schedule)
        self._check_slots(slots)
        for part in parts:
            part.build(slots)
        image_channels = image_shape[0]
        extra = sum(part.extra_channels(image_shape) for part in parts)
        check_network(net, in_channels=image_channels + extra, out_channels=image_channels)

    def part(self, name: str) -> Condition | None:
        """The part named ``name`` (its first key), or None."""
        return self._modules.get(name)

    def _names(self, parts: Sequence[Condition]) -> str:
        return ", ".join(part.name.replace("_", " ") for part in parts)

    def _check_slots(self, slots: NetworkSlots) -> None:
        """Refuse a network without the condition vector or context tokens the parts give, or with one
        that no part gives (it would wait for an input that never comes)."""
        vector_parts = [part for part in self.values() if part.gives_vector]
        if vector_parts and slots.cond_dim is None:
            raise ConfigError(
                f"a conditional denoiser ({self._names(vector_parts)}) needs a network with a condition "
                "input: set net.init_args.cond_dim (e.g. 128)."
            )
        if not vector_parts and slots.cond_dim is not None:
            raise ConfigError(
                "an unconditional denoiser (num_classes: null, no text_encoder) needs a network with "
                "cond_dim: null."
            )
        token_parts = [part for part in self.values() if part.gives_tokens]
        if token_parts and slots.context_dim is None:
            raise ConfigError(
                f"the {self._names(token_parts)} condition reaches the network as context tokens for "
                "cross-attention: set net.init_args.context_dim (e.g. 64) and attention_levels."
            )
        if not token_parts and slots.context_dim is not None:
            raise ConfigError(
                "the network has context_dim set but no condition gives it context tokens (no "
                "text_encoder); set context_dim: null."
            )

    def null(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        """∅ of every droppable part, by key (parts that are never dropped are absent)."""
        null: dict[str, Any] = {}
        for part in self.values():
            null.update(part.null(batch_size, device))
        return null

    def check(self, cond: Mapping[str, Any]) -> None:
        """Each part's once-per-run check of ``cond``."""
        for part in self.values():
            part.check(cond)

    def read(self, batch: Mapping[str, Any], drop: Tensor | None = None) -> dict[str, Any]:
        """The condition of a batch; where ``drop`` is True, every droppable part gives ∅."""
        cond: dict[str, Any] = {}
        for part in self.values():
            cond.update(part.read(batch))
        if drop is not None:
            for part in self.values():
                if part.droppable:
                    part.drop(cond, drop)
        return cond

    def training_condition(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch's condition with condition dropout (one uniform per sample and group, drawn on the
        host where captions are dropped, so nothing is read back; a part drops where its draw is below
        its ``p_drop``), then each part's training augmentation."""
        cond = self.read(batch)
        batch_size = batch["image"].shape[0]
        draws: dict[str, Tensor] = {}
        for part in self.values():
            if part.droppable:
                draw = draws.setdefault(part.group or f"part:{part.name}", torch.rand(batch_size))
                part.drop(cond, draw < part.p_drop)
        for part in self.values():
            part.augment(cond)
        return cond

    def inputs(self, cond: Mapping[str, Any] | None, batch_size: int) -> NetConditions:
        """The network's condition vector (the parts' sum) and context tokens and mask (concatenated)."""
        cond = cond or {}
        vectors, tokens, masks = [], [], []
        for part in self.values():
            given = part.inputs(cond, batch_size)
            if given.vector is not None:
                vectors.append(given.vector)
            if given.context is not None:
                tokens.append(given.context)
                masks.append(given.context_mask)
        vector = sum(vectors[1:], vectors[0]) if vectors else None
        if not tokens:
            return NetConditions(vector)
        dtype = tokens[0].dtype
        context = torch.cat([token.to(dtype) for token in tokens], dim=1)
        return NetConditions(vector, context, torch.cat(masks, dim=1))

    def network_input(self, z: Tensor, cond: Mapping[str, Any] | None) -> Tensor:
        """z_t concatenated with the parts' extra channels (e.g. an upsampled low-res image)."""
        extra = [part.channels(cond or {}, z) for part in self.values()]
        extra = [channels for channels in extra if channels is not None]
        return torch.cat([z, *extra], dim=1) if extra else z
