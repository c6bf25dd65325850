"""Sweep methods: what one kind of sweep row needs and how it samples.

Every registered guidance method is a sweep method (``GuidedMethod``, the denoiser guided by it); the
chained methods ``cascade`` (base denoiser + upsamplers, the row's scale being the base stage's CFG
scale) and ``unclip`` (prior + unCLIP decoder, the row's scale being the decoder's CFG scale) register
here. A sweep method declares the model roles it needs, the prompt kinds it can follow (by name, checked
against ``prompt_kinds``; None: any the denoiser takes), whether its samples
follow their condition, its options and modifiers, and builds a row's sampler from the row's plan (never
from the settings); the sweep checks all of it before the first sample is drawn.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_diffusion.components.prior import check_candidates
from lightning_diffusion.config import ConfigError, did_you_mean
from lightning_diffusion.guidance.factory import build_guidance
from lightning_diffusion.guidance.registry import GuidanceMethod, get_method, method_names, parse_options
from lightning_diffusion.named_registry import NamedRegistry
from lightning_diffusion.pipeline import Cascade, Unclip
from lightning_diffusion.resampling import check_aug_level
from lightning_diffusion.sampling import CountingModel, generate
from lightning_diffusion.sweep.prompt_kinds import describe, get_prompt_kind, prompt_kinds
from lightning_diffusion.sweep.prompts import Prompts
from lightning_diffusion.sweep.roles import check_roles, get_role

if TYPE_CHECKING:
    from lightning_diffusion.diffusion import SamplerSpec
    from lightning_diffusion.sweep.models import SweepModels
    from lightning_diffusion.sweep.plans import RowPlan

SampleBatch = Callable[[Sequence[torch.Generator], dict[str, Any]], Tensor]


@dataclass(frozen=True)
class RowSampler:
    """How one row samples a batch ``(generators, cond) -> images``, and the network rows it has
    denoised so far (for NFE)."""

    sample_batch: SampleBatch
    evaluations: Callable[[], int]


class SweepMethod(ABC):
    """One kind of sweep row. ``needs`` names the model roles it cannot run without, ``prompts``
    the prompt kinds it can follow ("label", "caption"; None: any), ``options`` the dataclass of its
    options (or None),
    ``modifiers`` the shared modifiers it accepts and ``required`` those it cannot run without."""

    name: str
    needs: tuple[str, ...] = ()
    prompts: tuple[str, ...] | None = None
    options: type | None = None
    modifiers: tuple[str, ...] = ()
    required: tuple[str, ...] = ()

    @property
    def option_names(self) -> tuple[str, ...]:
        return () if self.options is None else tuple(f.name for f in dataclasses.fields(self.options))

    def parse_options(self, values: Mapping[str, Any]) -> Any:
        """The options dataclass from a mapping; unknown keys are refused, listing the known ones."""
        return parse_options(f"method {self.name}", self.options, values)

    @abstractmethod
    def check_modifiers(self, given: Mapping[str, Any]) -> None:
        """Refuse a modifier the method does not use, or the lack of one it requires."""

    def follows(self, kind: str) -> bool:
        """Whether the method can follow prompts of ``kind`` (a registered prompt kind's name)."""
        return self.prompts is None or kind in self.prompts

    def check(self, models: SweepModels, plan: RowPlan, prompts: Prompts) -> None:
        """Refuse a row in which this method cannot run: prompts it cannot follow or a missing model."""
        for name in self.prompts or ():
            get_prompt_kind(name, f"method {self.name}")
        kind = prompts.kind
        if not self.follows(kind):
            takers = [name for name in sweep_method_names() if get_sweep_method(name).follows(kind)]
            sampled = describe([kind])
            raise ConfigError(
                f"method {self.name} guides towards {describe(self.prompts)} only, and this sweep "
                f"samples {sampled}; with {sampled} use one of: {', '.join(takers)}."
            )
        for role in self.needs:
            if models.get(role) is None:
                raise ConfigError(get_role(role).missing(self.name))

    @abstractmethod
    def conditioned(self, models: SweepModels) -> bool:
        """Whether samples follow their label or caption (so class accuracy means something)."""

    @abstractmethod
    def sampler(self, models: SweepModels, plan: RowPlan, scale: float) -> RowSampler:
        """The row's sampler at ``scale``."""


class GuidedMethod(SweepMethod):
    """A registered guidance method on the sweep's denoiser."""

    def __init__(self, method: GuidanceMethod) -> None:
        check_roles(f"guidance method {method.name}", method.needs)
        self.method = method
        self.name, self.needs, self.prompts = method.name, method.needs, method.prompts
        self.options, self.modifiers, self.required = method.options, method.modifiers, method.required

    def parse_options(self, values: Mapping[str, Any]) -> Any:
        return self.method.parse_options(values)

    def check_modifiers(self, given: Mapping[str, Any]) -> None:
        self.method.check_modifiers(given)

    def check(self, models: SweepModels, plan: RowPlan, prompts: Prompts) -> None:
        super().check(models, plan, prompts)
        if self.method.composes and prompts.parts is None:
            raise ConfigError(
                f"{self.name} composes several weighted captions per sample: sample composed prompts, e.g. "
                "--compose and (or not) on Shapes data."
            )
        kind = prompts.prompt_kind
        if self.method.conditional_denoiser and not kind.takes(models.denoiser):
            raise ConfigError(kind.refuse(self.name))
        if self.method.renoises and not plan.sampler.solver.renoises:
            raise ConfigError(
                f"{self.name} renoises with another estimate than it steps to, which the "
                f"{plan.sampler.name} sampler cannot do; use a sampler that can (e.g. ddim)."
            )

    def conditioned(self, models: SweepModels) -> bool:
        return self.method.follows_condition or any(kind.takes(models.denoiser) for kind in prompt_kinds())

    def sampler(self, models: SweepModels, plan: RowPlan, scale: float) -> RowSampler:
        """The guided denoiser at ``scale``; NFE counts the denoiser's rows and those of every role whose
        network evaluations count (the guide of autoguidance)."""
        counted = [CountingModel(models.denoiser)]
        extra = {}
        for role in self.needs:
            model = models[role]
            if get_role(role).counted:
                model = CountingModel(model)
                counted.append(model)
            extra[role] = model
        guidance = build_guidance(self.method, scale, models=extra, options=plan.options, **plan.modifiers)
        guidance.check_model(models.denoiser)

        def sample_batch(generators: Sequence[torch.Generator], cond: dict[str, Any]) -> Tensor:
            return generate(counted[0], guidance, generators, cond, plan.sampler)

        return RowSampler(sample_batch, lambda: sum(model.rows for model in counted))


@dataclass(frozen=True)
class CascadeOptions:
    """``aug_level``: augmentation level of each upsampler's low-res input; ``upsampler_scale``: the CFG
    scale of the upsampler stages."""

    aug_level: float = 0.0
    upsampler_scale: float = 1.0

    def __post_init__(self) -> None:
        check_aug_level(self.aug_level)


@dataclass(frozen=True)
class UnclipOptions:
    """``upsampler_scale``: CFG scale of the upsampler stages; ``prior_scale``: CFG scale of the prior;
    ``prior_candidates``: prior samples per caption, the best by C_T · C_I kept; ``decoder_method`` and
    ``decoder_options``: the decoder's guidance at the row's scale (default cfg; e.g. multi_cfg with
    ``{scales: {image_embedding: 3}}`` guides the caption at the row's scale on top of the embedding at 3,
    Brooks et al. 2023)."""

    upsampler_scale: float = 1.0
    prior_scale: float = 1.0
    prior_candidates: int = 1
    decoder_method: str = "cfg"
    decoder_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_candidates(self.prior_candidates)


class ChainedMethod(SweepMethod):
    """A method sampling through a chain of stages, each with its own classifier-free guidance: the
    shared modifiers do not apply to it."""

    def check_modifiers(self, given: Mapping[str, Any]) -> None:
        for modifier, value in given.items():
            if value is not None:
                raise ConfigError(
                    f"method {self.name} does not use {modifier}: its stages sample with their own "
                    "classifier-free guidance (the row's scale sets one stage's); remove it from its rows."
                )


class CascadeMethod(ChainedMethod):
    name, needs, prompts, options = "cascade", ("cascade",), ("label",), CascadeOptions

    def conditioned(self, models: SweepModels) -> bool:
        return models["cascade"].num_classes is not None

    def sampler(self, models: SweepModels, plan: RowPlan, scale: float) -> RowSampler:
        options = plan.options
        cascade = configured_cascade(
            models["cascade"], plan.sampler, scale, options.aug_level, options.upsampler_scale
        )
        return RowSampler(cascade.generate, lambda: cascade.rows)


class UnclipMethod(ChainedMethod):
    name, needs, prompts, options = "unclip", ("unclip",), ("caption",), UnclipOptions

    def conditioned(self, models: SweepModels) -> bool:
        return True

    def sampler(self, models: SweepModels, plan: RowPlan, scale: float) -> RowSampler:
        """The unCLIP chain with its decoder at ``scale``; NFE counts image rows only (the prior's are
        embedding vectors)."""
        options, unclip = plan.options, models["unclip"]
        prior = replace(
            unclip.prior,
            guidance_scale=options.prior_scale,
            candidates=options.prior_candidates,
            sampler=plan.sampler,
        )
        cascade = configured_cascade(unclip.cascade, plan.sampler, scale, 0.0, options.upsampler_scale)
        decoder = replace(
            cascade.stages[0], method=options.decoder_method, method_options=options.decoder_options
        )
        chain = Unclip(prior, Cascade([decoder, *cascade.stages[1:]]))
        return RowSampler(chain.generate, lambda: chain.rows)


def configured_cascade(
    cascade: Cascade, sampler: SamplerSpec, scale: float, aug_level: float, upsampler_scale: float
) -> Cascade:
    """``cascade`` sampled with the row's ``sampler``, its base stage at CFG ``scale`` and its upsamplers
    at ``upsampler_scale`` and ``aug_level``."""
    return Cascade(
        [
            replace(
                stage,
                sampler=sampler,
                guidance_scale=scale if index == 0 else upsampler_scale,
                aug_level=0.0 if index == 0 else aug_level,
            )
            for index, stage in enumerate(cascade.stages)
        ]
    )


_chained: NamedRegistry[SweepMethod] = NamedRegistry("chained method", "chained methods")


def register_sweep_method(method: SweepMethod) -> SweepMethod:
    """Register a sweep method that is not a guidance method of the denoiser (a chain of stages); a second,
    different method of that name is refused."""
    return _chained.register(method.name, method)


register_sweep_method(CascadeMethod())
register_sweep_method(UnclipMethod())
from lightning_diffusion.sweep import distilled  # noqa: E402, F401 - registers the method distilled


def chained_methods() -> list[SweepMethod]:
    return _chained.entries()


def sweep_method_names() -> list[str]:
    """Every method a sweep can run: the registered guidance methods and the chained ones."""
    return sorted({*method_names(), *_chained})


def get_sweep_method(name: str) -> SweepMethod:
    """The sweep method called ``name``; an unknown name lists them all and the closest."""
    if name in _chained:
        return _chained.get(name)
    if name in method_names():
        return GuidedMethod(get_method(name))
    known = sweep_method_names()
    raise ConfigError(
        f"unknown guidance method {name!r}{did_you_mean(name, known)}; the methods are: {', '.join(known)}."
    )


def methods_taking(option: str) -> list[str]:
    """The chained methods with ``option`` among their options."""
    return [method.name for method in _chained.entries() if option in method.option_names]
