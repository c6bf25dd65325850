"""The running power-function averages of a module's parameters, one per tracked profile (no Lightning):
``update`` after each optimizer step, ``state_dict`` to resume them exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.config import ConfigError
from lightning_diffusion.ema.profiles import beta, gamma_of


class PowerEMA:
    """Averages of ``module``'s parameters for each σ_rel in ``sigma_rels`` (γ from σ_rel, EDM2 appendix
    C.2), updated by ``update(step)`` with β_γ(step) = (1 - 1/step)^(γ+1) (EDM2 appendix C.1). ``step`` is the
    number of optimizer steps the averages have seen (0: none yet)."""

    def __init__(self, module: nn.Module, sigma_rels: Sequence[float]) -> None:
        if len(sigma_rels) < 1 or len(set(sigma_rels)) != len(sigma_rels):
            raise ConfigError(
                f"post-hoc EMA tracks distinct EMA lengths, got {list(sigma_rels)}; EDM2 tracks two, "
                "e.g. [0.05, 0.10]."
            )
        self.sigma_rels = tuple(float(value) for value in sigma_rels)
        self.gammas = tuple(gamma_of(value) for value in self.sigma_rels)
        self.module = module
        self.names = [name for name, _ in module.named_parameters()]
        self.averages = [[p.detach().clone() for p in module.parameters()] for _ in self.sigma_rels]
        self.step = 0

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold the module's current parameters (those after optimizer step ``step``) into each average."""
        parameters = [p.detach() for p in self.module.parameters()]
        for gamma, average in zip(self.gammas, self.averages, strict=True):
            torch._foreach_lerp_(average, parameters, 1.0 - beta(step, gamma))
        self.step = step

    def profiles(self) -> list[dict[str, float]]:
        """The tracked profiles as plain values: ``[{"sigma_rel", "gamma"}, ...]``."""
        return [{"sigma_rel": s, "gamma": g} for s, g in zip(self.sigma_rels, self.gammas, strict=True)]

    def average_state_dicts(self) -> list[dict[str, Tensor]]:
        """Each profile's averaged parameters by name (CPU copies, for a snapshot)."""
        return [
            {name: tensor.detach().cpu().clone() for name, tensor in zip(self.names, average, strict=True)}
            for average in self.averages
        ]

    def state_dict(self) -> dict[str, Any]:
        """What resumes the averages exactly: the step, the profiles and the averaged tensors."""
        return {"step": self.step, "profiles": self.profiles(), "averages": self.average_state_dicts()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the averages of ``state`` (from ``state_dict``); another set of profiles or parameters
        is refused."""
        tracked = [profile["sigma_rel"] for profile in state["profiles"]]
        if tracked != list(self.sigma_rels) or any(set(avg) != set(self.names) for avg in state["averages"]):
            raise ConfigError(
                f"the checkpoint's post-hoc EMA tracked sigma_rels {tracked} of other parameters than this "
                f"run's ({list(self.sigma_rels)}); resume with the callback's settings of that run."
            )
        for average, saved in zip(self.averages, state["averages"], strict=True):
            for tensor, name in zip(average, self.names, strict=True):
                tensor.copy_(saved[name])
        self.step = int(state["step"])
