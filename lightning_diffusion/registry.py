"""Component registry: every LightningModule of the framework registers under a kind and a name.

Built-in components register when ``lightning_diffusion.components`` is imported; third-party
packages add theirs through the ``lightning_diffusion.components`` entry-point group, whose entries
point at a component class (registered under the entry-point name) or at a module that registers
its classes itself. ``load_component`` rebuilds any component from its checkpoint.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from lightning_diffusion.budget import checkpoint_warning
from lightning_diffusion.config import ConfigError, class_path_of, did_you_mean, import_class, instantiate

if TYPE_CHECKING:
    from lightning_diffusion.components.base import Component

KINDS = ("denoiser", "noisy_classifier", "contrastive_encoder", "prior", "upsampler", "evaluator")
ENTRY_POINT_GROUP = "lightning_diffusion.components"
CHECKPOINT_KEY = "lightning_diffusion"

_registry: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
_discovered = False

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class ComponentInfo:
    kind: str
    name: str
    class_path: str


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown component kind {kind!r}; the kinds are: {', '.join(KINDS)}.")


def register(kind: str, name: str | None = None) -> Callable[[T], T]:
    """Class decorator: register a component class under ``kind`` and ``name`` (default: class name)."""
    _check_kind(kind)

    def decorate(cls: T) -> T:
        registered_name = name or cls.__name__
        existing = _registry[kind].get(registered_name)
        if existing is not None and existing is not cls:
            raise ConfigError(
                f"two {kind} components are named {registered_name!r}: "
                f"{class_path_of(existing)} and {class_path_of(cls)}; rename one."
            )
        cls.component_kind = kind
        _registry[kind][registered_name] = cls
        return cls

    return decorate


def discover() -> None:
    """Import the built-in components and every plug-in's entry point (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    importlib.import_module("lightning_diffusion.components")
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry_point.load()
        if isinstance(loaded, type):
            kind = getattr(loaded, "component_kind", None)
            if kind is None:
                raise ConfigError(
                    f"plug-in entry point {entry_point.name!r} ({entry_point.value}) names a class "
                    "without a component kind; derive it from a lightning_diffusion component."
                )
            register(kind, entry_point.name)(loaded)


def list_components() -> list[ComponentInfo]:
    """Every registered component, plug-ins included, sorted by kind and name."""
    discover()
    return [
        ComponentInfo(kind, name, class_path_of(cls))
        for kind in KINDS
        for name, cls in sorted(_registry[kind].items())
    ]


def get_component(kind: str, name: str) -> type:
    """The class registered as ``name`` (or with that ``class_path``) under ``kind``."""
    _check_kind(kind)
    discover()
    for registered_name, cls in _registry[kind].items():
        if name in (registered_name, class_path_of(cls)):
            return cls
    known = ", ".join(sorted(_registry[kind])) or "none"
    raise ConfigError(
        f"no {kind} component is named {name!r}{did_you_mean(name, _registry[kind])}; the registered "
        f"{kind} components are: {known}."
    )


def check_component_name(name: str) -> None:
    """Refuse a configured component (``model: class_path``) that is neither a registered name nor an
    importable class path, naming the closest registered one and listing them all."""
    discover()
    names = {registered: cls for kind in KINDS for registered, cls in _registry[kind].items()}
    if name in names or name in {class_path_of(cls) for cls in names.values()}:
        return
    if "." in name:
        try:
            import_class(name)
            return
        except ConfigError:
            pass
    raise ConfigError(
        f"no component is named {name!r}{did_you_mean(name, names)}; the registered components are: "
        f"{', '.join(sorted(names))} (or give a full class_path, e.g. "
        f"{class_path_of(next(iter(names.values())))})."
    )


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint file as a dict of tensors and plain values (``weights_only``: never unpickling
    code), with a clear error when it is missing, unreadable or holds pickled objects."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"checkpoint {str(path)!r} is a directory, not a checkpoint file; pass a file in it, e.g. "
            f"{str(path / 'checkpoints' / 'last.ckpt')!r}."
        )
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist; train a component first (train.py fit).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds for a corrupt or foreign file
        raise unreadable_checkpoint(path, error) from None


def unreadable_checkpoint(path: str | Path, error: Exception) -> ConfigError:
    """The one-paragraph error for a checkpoint ``torch.load(weights_only=True)`` refused with ``error``
    (torch's own messages run to several paragraphs advising ``weights_only=False``)."""
    text = str(error).strip()
    pickled = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", text, re.IGNORECASE)
    if pickled is not None:
        return ConfigError(
            f"cannot read checkpoint {str(path)!r}: it holds pickled Python objects ({pickled.group(1)}), "
            "which could run code when loaded, so lightning-diffusion will not execute them (its own "
            "checkpoints hold only tensors and plain values); pass a checkpoint written by train.py, or "
            "re-save the state_dict of one you trust."
        )
    detail = type(error).__name__
    first_line = text.splitlines()[0] if text else ""
    if first_line and "weights only" not in first_line.lower():
        detail += f": {first_line}"
    return ConfigError(
        f"cannot read checkpoint {str(path)!r}: it is not a PyTorch checkpoint or it is damaged ({detail}); "
        "pass a checkpoint written by train.py."
    )


def checkpoint_kind(checkpoint: dict[str, Any], path: str | Path = "checkpoint") -> dict[str, Any]:
    """The ``{"kind", "spec"}`` record a component writes into its checkpoints."""
    record = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(record, dict) or "kind" not in record:
        raise ConfigError(
            f"{str(path)!r} is not a lightning-diffusion component checkpoint (it has no "
            f"{CHECKPOINT_KEY!r} record); pass a checkpoint written by train.py."
        )
    return record


def load_component(
    path: str | Path, kind: str | None = None, map_location: Any = "cpu", eval_mode: bool = True
) -> Component:
    """Rebuild a component from its checkpoint (EMA weights where it was trained with EMA).

    With ``kind`` given, a checkpoint of another kind is refused with a message naming its kind; one whose
    time budget bought too few steps to learn is loaded with a warning.
    """
    if kind is not None:
        _check_kind(kind)
    checkpoint = read_checkpoint(path, map_location)
    record = checkpoint_kind(checkpoint, path)
    if kind is not None and record["kind"] != kind:
        raise ConfigError(
            f"{str(path)!r} is a checkpoint of kind {record['kind']!r} ({record['spec']['class_path']}), "
            f"not of kind {kind!r}; pass a {kind!r} checkpoint here, or use this one where a "
            f"{record['kind']!r} is expected."
        )
    under_trained = checkpoint_warning(checkpoint)
    if under_trained is not None:
        logging.getLogger(__name__).warning("%s: %s", path, under_trained)
    discover()
    component = instantiate(record["spec"])
    component.load_state_dict(checkpoint["state_dict"])
    if isinstance(map_location, (str, torch.device)):
        component.to(map_location)
    return component.eval() if eval_mode else component
