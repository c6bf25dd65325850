"""A trained component used frozen inside another: the contrastive encoder of the unCLIP prior, decoder and
image-embedding condition, the CFG teacher of a distilled student.

The holder is configured with the frozen model's checkpoint path. Its own checkpoints are self-contained:
they record the model as a carried record, ``{key: its spec, "trained_from": the path}``, and hold its
weights in their state dict, so ``load_component`` and resuming with ``--ckpt_path`` rebuild it without the
frozen model's file. Its parameters never train and it stays in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lightning_diffusion.config import ConfigError, import_class, instantiate, is_spec
from lightning_diffusion.registry import discover, load_component

Source = str | dict[str, Any]  # a checkpoint path, or the carried record of a holder's own checkpoint


@dataclass(frozen=True)
class CarriedModel:
    """How holders load and record one kind of frozen model: ``key`` names the carried record, ``model``
    the class it must be, ``kind`` its registry kind, ``noun`` and ``use`` its part in messages ("the
    diffusion prior embeds images and captions with the contrastive encoder checkpoint ..."), ``argument``
    the holder's argument that takes it and ``train`` the command that trains one."""

    key: str
    model: type[nn.Module]
    kind: str
    noun: str
    use: str
    argument: str
    train: str

    def load(self, source: Source | nn.Module, role: str) -> Any:
        """The frozen model (eval mode, no gradients) from a checkpoint path, a model, or a carried record
        (built from its spec; the weights come with the holder's state dict). ``role`` names the holder."""
        if isinstance(source, dict):
            model = self._build(source, role)
        elif isinstance(source, self.model):
            model = source
        else:
            model = self._read(str(source), role)
        model.requires_grad_(False)
        return model.eval()

    def record(self, model: nn.Module, trained_from: Source) -> dict[str, Any]:
        """The carried record of ``model``: its spec and the path it was first loaded from."""
        origin = trained_from.get("trained_from") if isinstance(trained_from, dict) else trained_from
        return {self.key: model.spec, "trained_from": None if origin is None else str(origin)}

    def _read(self, path: str, role: str) -> nn.Module:
        if not Path(path).is_file():
            raise ConfigError(
                f"{role} {self.use} the {self.noun} checkpoint {path!r}, which does not exist; train one "
                f"({self.train}) and set {self.argument} to its checkpoints/last.ckpt."
            )
        return load_component(path, kind=self.kind)

    def _build(self, record: dict[str, Any], role: str) -> nn.Module:
        """The model of a carried record (whose spec ``instantiate`` may already have built), untrained until
        the holder's weights are loaded."""
        model = record.get(self.key)
        if is_spec(model) and issubclass(import_class(model["class_path"]), self.model):
            discover()
            model = instantiate(model)
        if not isinstance(model, self.model):
            raise ConfigError(
                f"{role} needs {self.argument} to be the path of a {self.noun} checkpoint (or, as its own "
                f"checkpoints record it, {{{self.key!r}: <{self.model.__name__} spec>, 'trained_from': "
                f"path}}), got a dict with keys {sorted(record)}."
            )
        return model
