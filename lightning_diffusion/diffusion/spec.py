"""The sampler spec: one value object (solver, steps, noise-level grid, solver options) that travels from
YAML / the command line to every place that samples, checks itself, and reports its network evaluations.

    SamplerSpec(name="dpmpp_2m", steps=20, grid="logsnr").sample(denoise, noise, schedule, generators)

In YAML it is a mapping (``sampler: {name: ddim, steps: 25}``), on the command line nested options
(``--sampler.name dpmpp_2m --sampler.steps 20``). Options a solver does not take (``eta`` on a
deterministic one, ``S_churn`` off ``edm``) are refused, never ignored. Solvers live in one registry,
``samplers.SOLVERS`` (name -> function, order, evaluations per step, noise, options): adding one is one
entry there.

Cooperation with guidance: ``denoise(z, t)`` returns D, or a ``Denoised(data, renoise)`` when guidance
wants the sampler to renoise with another estimate than the one it steps to (CFG++ renoises with the
unconditional D). Samplers that can (``ddim``) take eps from ``renoise``; the others refuse it. So such
guidance plugs in without changing any signature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError, did_you_mean, unknown_name
from lightning_diffusion.diffusion.grids import GRIDS, noise_grid
from lightning_diffusion.diffusion.samplers import SOLVERS, Denoise, Solver
from lightning_diffusion.diffusion.schedule import CosineSchedule

OPTIONS = ("eta", "S_churn", "S_tmin", "S_tmax", "S_noise")
MAX_CHURN_PER_STEP = math.sqrt(2) - 1  # Karras et al. 2022, Algorithm 2: gamma_i <= sqrt(2) - 1


@dataclass(frozen=True)
class SamplerSpec:
    """How to sample: solver ``name`` (``SOLVERS``), ``steps``, noise-level ``grid`` (``uniform_t``,
    ``logsnr``, ``edm``) from ``sigma_max`` (sigma / alpha at the first step; None: the schedule's
    highest) to ``sigma_min`` (the last level before 0; None: the grid's default), and solver options,
    None meaning the solver's default: ``eta`` (ddim: 0, dpmpp_2m_sde: 1) and EDM's ``S_churn``,
    ``S_tmin``, ``S_tmax``, ``S_noise`` (Karras et al. 2022, Algorithm 2)."""

    name: str = "ddim"
    steps: int = 50
    grid: str = "uniform_t"
    sigma_max: float | None = None
    sigma_min: float | None = None
    eta: float | None = None
    S_churn: float | None = None
    S_tmin: float | None = None
    S_tmax: float | None = None
    S_noise: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def of(cls, value: SamplerSpec | str | Mapping[str, Any]) -> SamplerSpec:
        """A spec from a spec, a solver name (its defaults otherwise) or a mapping of fields."""
        if isinstance(value, SamplerSpec):
            return value
        if isinstance(value, str):
            return cls(name=value)
        if isinstance(value, Mapping):
            known = {field.name for field in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ConfigError(
                    f"unknown sampler setting(s) {unknown}{did_you_mean(unknown[0], known)}; the settings "
                    f"are {sorted(known)}."
                )
            return cls(**value)
        raise ConfigError(
            f"a sampler is a SamplerSpec, a solver name or a mapping, not {type(value).__name__}."
        )

    @property
    def solver(self) -> Solver:
        return SOLVERS[self.name]

    def validate(self) -> SamplerSpec:
        """Return self, after refusing an unknown solver or grid, too few steps, an option the solver
        does not take, or an option value out of range, each with what to do instead."""
        if self.name not in SOLVERS:
            raise unknown_name("sampler", self.name, SOLVERS)
        if self.grid not in GRIDS:
            raise unknown_name("noise-level grid", self.grid, GRIDS)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < self.solver.order:
            raise ConfigError(
                f"the {self.name} sampler needs an integer number of steps of at least {self.solver.order} "
                f"(its order), got {self.steps!r}."
            )
        self._check_levels()
        self._check_options()
        return self

    def _check_levels(self) -> None:
        for name in ("sigma_max", "sigma_min"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                raise ConfigError(
                    f"{name} (a noise level sigma / alpha) must be positive and finite, got {value}."
                )
        if self.sigma_max is not None and self.sigma_min is not None and self.sigma_min >= self.sigma_max:
            raise ConfigError(f"sigma_min={self.sigma_min} must be below sigma_max={self.sigma_max}.")

    def _check_options(self) -> None:
        given = {name: getattr(self, name) for name in OPTIONS if getattr(self, name) is not None}
        refused = sorted(set(given) - set(self.solver.options))
        if refused:
            takes = ", ".join(self.solver.options) or "no options"
            raise ConfigError(
                f"the {self.name} sampler does not use {', '.join(refused)} (it takes {takes}); remove "
                f"{'it' if len(refused) == 1 else 'them'} or choose a sampler that does "
                f"({self._samplers_taking(refused[0])})."
            )
        negative = [name for name, value in given.items() if not 0 <= value < math.inf]
        if negative:
            raise ConfigError(
                f"{', '.join(negative)} must not be negative (and must be finite), got {given}."
            )
        options = self.options
        if "S_churn" in options:
            most = self.steps * MAX_CHURN_PER_STEP
            if options["S_churn"] > most:
                raise ConfigError(
                    f"S_churn={options['S_churn']} is out of range for {self.steps} steps: Algorithm 2 caps "
                    f"the churn per step at sqrt(2) - 1, so S_churn above steps * 0.414 = {most:.3g} would "
                    "be ignored; lower it or take more steps."
                )
            if not options["S_tmin"] < options["S_tmax"]:
                raise ConfigError(f"S_tmin={options['S_tmin']} must be below S_tmax={options['S_tmax']}.")
            if options["S_noise"] <= 0:
                raise ConfigError(f"S_noise must be positive, got {options['S_noise']}.")

    @staticmethod
    def _samplers_taking(option: str) -> str:
        return ", ".join(name for name, solver in SOLVERS.items() if option in solver.options)

    @property
    def options(self) -> dict[str, float]:
        """The solver's options, each given value or else the solver's default."""
        return {
            name: default if getattr(self, name) is None else getattr(self, name)
            for name, default in self.solver.options.items()
        }

    @property
    def nfe(self) -> int:
        """Network evaluations per sample (before guidance multiplies them): steps, or 2 steps - 1 for
        Heun-type solvers (no second evaluation at sigma = 0)."""
        per_step = self.solver.evaluations_per_step
        return per_step * self.steps - (per_step - 1)

    def times(self, schedule: CosineSchedule) -> Tensor:
        """The grid of N + 1 decreasing times, ending at 0, this spec samples along."""
        return noise_grid(schedule, self.steps, self.grid, self.sigma_max, self.sigma_min)

    def sample(
        self,
        denoise: Denoise,
        noise: Tensor,
        schedule: CosineSchedule,
        generators: Sequence[torch.Generator] | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Samples from ``noise`` (standard normal, one row per sample): the solver run along this spec's
        grid, drawing any noise from ``generators`` (one per sample)."""
        return self.solver.function(
            denoise, noise, schedule, self.times(schedule), generators, progress, **self.options
        )
