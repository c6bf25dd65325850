"""Guidance method registry: every method is one ``GuidanceMethod`` saying what it needs and how to build it.

A method's file ends with its ``register_method(GuidanceMethod(...))`` call; third-party packages add
theirs through the ``lightning_diffusion.methods`` entry-point group, whose entries point at a
``GuidanceMethod`` (registered as it is) or at a module that registers its methods itself. Sweeps,
``build_guidance`` and the command line look methods up with ``get_method``. A method names the extra
models it needs by role ("classifier", "guide", "contrastive", ...) and gets them in a mapping by role:
the roles themselves (their checkpoints, flags and compatibility rules) are registered by the sweep, in
``sweep/roles.py``, so that adding one touches neither this file nor ``build_guidance``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from lightning_diffusion.config import ConfigError, did_you_mean
from lightning_diffusion.guidance.base import Guidance
from lightning_diffusion.named_registry import NamedRegistry

ENTRY_POINT_GROUP = "lightning_diffusion.methods"
MODIFIERS = ("interval", "schedule", "rescale", "threshold")

_methods: NamedRegistry[GuidanceMethod] = NamedRegistry("guidance method", "guidance methods", sort=True)
_discovered = False


@dataclass(frozen=True)
class GuidanceInputs:
    """What ``GuidanceMethod.build`` gets: the scale, ``models`` (the models of the roles the method
    ``needs``, by role name; read as ``inputs.models["guide"]`` or ``inputs.guide``) and its ``options``
    (an instance of the method's options dataclass, or None)."""

    scale: float
    models: Mapping[str, Any] = field(default_factory=dict)
    options: Any = None

    def __getattr__(self, role: str) -> Any:
        models = self.__dict__.get("models", {})
        if role in models:
            return models[role]
        raise AttributeError(f"GuidanceInputs has no field or model role {role!r}")


@dataclass(frozen=True)
class GuidanceMethod:
    """One guidance method and what it asks of a sweep.

    ``build(inputs)`` makes its ``Guidance``; ``needs`` names the roles of the extra models; ``options``
    is the dataclass of its own settings (None: it has none); ``prompts`` the condition keys it can guide
    towards (e.g. ``("label",)``; None: any the denoiser takes), prompt kinds the sweep checks by name;
    ``follows_condition`` whether samples follow their condition even with an unconditional denoiser
    (gradient guidance); ``conditional_denoiser`` whether it needs a denoiser that takes the condition
    (CFG contrasts its conditional and unconditional estimates); ``renoises`` whether it needs a sampler
    that renoises with another estimate (CFG++); ``composes`` whether it reads composed prompts (several
    weighted captions per sample, ``Prompts.parts``); ``modifiers`` the shared modifiers it accepts,
    ``required`` those it cannot run without (``cfg_interval``), ``refusals`` why it refuses a modifier,
    by name."""

    name: str
    build: Callable[[GuidanceInputs], Guidance]
    needs: tuple[str, ...] = ()
    options: type | None = None
    prompts: tuple[str, ...] | None = None
    follows_condition: bool = False
    conditional_denoiser: bool = True
    renoises: bool = False
    composes: bool = False
    modifiers: tuple[str, ...] = MODIFIERS
    required: tuple[str, ...] = ()
    refusals: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown_modifiers = sorted((set(self.modifiers) | set(self.required)) - set(MODIFIERS))
        if unknown_modifiers:
            raise ConfigError(
                f"guidance method {self.name!r} declares unknown modifiers {unknown_modifiers}; the "
                f"modifiers are {list(MODIFIERS)}."
            )
        if self.prompts is not None and (
            isinstance(self.prompts, str) or not all(isinstance(kind, str) for kind in self.prompts)
        ):
            raise ConfigError(
                f"guidance method {self.name!r}: prompts is a tuple of condition keys (e.g. ('label',)) or "
                f"None for any, got {self.prompts!r}."
            )
        if isinstance(self.needs, str) or not all(isinstance(role, str) for role in self.needs):
            raise ConfigError(
                f"guidance method {self.name!r}: needs is a tuple of model role names, got {self.needs!r}."
            )
        if self.options is not None and not dataclasses.is_dataclass(self.options):
            raise ConfigError(f"guidance method {self.name!r}: options must be a dataclass type.")

    def requiring(self, modifier: str) -> GuidanceMethod:
        """The variant ``<name>_<modifier>`` that cannot run without ``modifier`` (e.g. ``cfg_interval``)."""
        return dataclasses.replace(self, name=f"{self.name}_{modifier}", required=(*self.required, modifier))

    def parse_options(self, values: Mapping[str, Any] | None) -> Any:
        """The method's options from a mapping (defaults for keys left out); unknown keys are refused."""
        return parse_options(f"guidance method {self.name}", self.options, values)

    def check_modifiers(self, given: Mapping[str, Any]) -> None:
        """Refuse a modifier the method does not use, or the lack of one it requires, with the reason."""
        for modifier, value in given.items():
            if value is not None and modifier not in self.modifiers:
                reason = self.refusals.get(modifier, f"it accepts {', '.join(self.modifiers) or 'none'}")
                raise ConfigError(f"guidance method {self.name} does not use {modifier}: {reason}.")
        for modifier in self.required:
            if given.get(modifier) is None:
                raise ConfigError(
                    f"{self.name} needs the {modifier} it is named after, e.g. --interval '[0.28,2.9]' "
                    "(noise levels (sigma_min, sigma_max] as EDM's sigma/alpha in which to guide)."
                    if modifier == "interval"
                    else f"{self.name} needs a {modifier}."
                )

    def check_models(self, available: Mapping[str, Any]) -> None:
        """Refuse building without a model the method needs, saying how to pass it."""
        for role in self.needs:
            if available.get(role) is None:
                raise ConfigError(
                    f"guidance method {self.name} needs a model in the role {role!r}: pass it, e.g. "
                    f"build_guidance({self.name!r}, scale, {role}=MODEL) (in a sweep: --{role} PATH)."
                )


def register_method(method: GuidanceMethod) -> GuidanceMethod:
    """Register ``method`` under its name (a second, different method of that name is refused)."""
    return _methods.register(method.name, method)


def discover() -> None:
    """Import the built-in methods and every plug-in's entry point (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    importlib.import_module("lightning_diffusion.guidance")
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry_point.load()
        if isinstance(loaded, GuidanceMethod):
            register_method(loaded)


def method_names() -> list[str]:
    """The registered method names, plug-ins included, sorted."""
    discover()
    return _methods.names()


def get_method(name: str) -> GuidanceMethod:
    """The method registered as ``name``; an unknown name lists the registered ones and the closest."""
    discover()
    return _methods.get(name)


def parse_options(owner: str, options: type | None, values: Mapping[str, Any] | None) -> Any:
    """An ``options`` dataclass instance from a mapping (defaults for keys left out), or None for an owner
    without options; a key that is no field is refused, naming the closest and listing them all."""
    values = dict(values or {})
    if options is None:
        if values:
            raise ConfigError(f"{owner} takes no options, got {sorted(values)}.")
        return None
    known = [option.name for option in dataclasses.fields(options)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{owner} has no option(s) {unknown}{did_you_mean(unknown[0], known)}; its options are: "
            f"{', '.join(known)}."
        )
    return options(**values)


def with_options(cls: Callable[..., Guidance]) -> Callable[[GuidanceInputs], Guidance]:
    """``build`` for a Guidance class constructed as ``cls(scale, **options)``."""

    def build(inputs: GuidanceInputs) -> Guidance:
        options = {} if inputs.options is None else dataclasses.asdict(inputs.options)
        return cls(inputs.scale, **options)

    return build
