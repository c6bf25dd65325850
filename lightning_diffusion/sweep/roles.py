"""Model roles: every model a sweep can combine with its denoiser is one registered ``Role``.

A role's name is its key in ``SweepModels``, the name a guidance or sweep method lists in ``needs``, the
``evaluate.py`` flag ``--<name>`` and YAML key, and the ``GuidanceSweep`` callback's ``models`` key. The
entry says which component kind its checkpoint holds (or how to load a chain of them), what the flag is
for, and what it must share with the denoiser (``compatibility.ASPECTS``). Adding a role is one
``register_role`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning_diffusion.compatibility import ASPECTS
from lightning_diffusion.config import ConfigError
from lightning_diffusion.named_registry import NamedRegistry
from lightning_diffusion.registry import load_component

if TYPE_CHECKING:
    from lightning_diffusion.sweep.models import SweepModels

Loader = Callable[[Any, Any, bool], Any]  # (checkpoint path or paths, device, allow_cross_data) -> model


@dataclass(frozen=True)
class Role:
    """One model role. ``kind``: the component kind of its checkpoint (a chain's: its stages'); ``what``:
    the model in a sentence ("a noisy classifier"); ``help``: what the sweep uses it for; ``shares``: what
    it must have in common with the denoiser; ``chain``: it takes a list of checkpoints, loaded by
    ``loader``; ``usage``: how to pass it; ``counted``: its network evaluations count in a row's NFE like
    the denoiser's (a guide denoiser); ``check``: a further check of the loaded models, if any."""

    name: str
    kind: str
    what: str
    help: str
    shares: tuple[str, ...] = ("image",)
    chain: bool = False
    usage: str = "PATH"
    loader: Loader | None = None
    counted: bool = False
    check: Callable[[SweepModels], None] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.shares) - set(ASPECTS))
        if unknown or (self.chain and self.loader is None):
            raise ConfigError(
                f"model role {self.name!r}: unknown aspects {unknown} (the aspects are "
                f"{', '.join(ASPECTS)}), or a chain without a loader."
            )

    @property
    def flag(self) -> str:
        """The command-line flag that passes it."""
        return f"--{self.name}"

    def load(self, path: Any, device: Any, allow_cross_data: bool = False) -> Any:
        """The model from its checkpoint (a chain: from its list of checkpoints) on ``device``."""
        if self.loader is not None:
            return self.loader(path, device, allow_cross_data)
        return load_component(path, kind=self.kind, map_location=device)

    def missing(self, method: str) -> str:
        """The refusal of ``method`` run without this role's model, saying how to pass it."""
        checkpoint = "" if self.chain else f" (a {self.kind} checkpoint)"
        return f"method {method} needs {self.what}: pass {self.flag} {self.usage}{checkpoint}."

    def mismatch_fix(self) -> str:
        """What to do about a model of this role trained on other data than the denoiser."""
        return (
            f"pass {self.what} trained on the denoiser's data, or --allow_cross_data to combine models of "
            "different data on purpose."
        )


_roles: NamedRegistry[Role] = NamedRegistry(
    "model role", "roles", hint=" (register a new one with sweep.roles.register_role)"
)


def register_role(role: Role) -> Role:
    """Register ``role`` under its name (a second, different role of that name is refused)."""
    return _roles.register(role.name, role)


def registered_roles() -> list[Role]:
    """Every registered role, in registration order (the order of the flags)."""
    return _roles.entries()


def get_role(name: str) -> Role:
    """The role called ``name``; an unknown name lists the roles and the closest."""
    return _roles.get(name)


def check_roles(owner: str, names: Sequence[str]) -> None:
    """Refuse ``owner`` (a method) declaring a role that is not registered."""
    for name in names:
        _roles.get(name, asked_by=owner)


def _load_cascade(paths: Sequence[str], device: Any, allow_cross_data: bool) -> Any:
    from lightning_diffusion.pipeline import Cascade

    return Cascade.from_checkpoints(paths, map_location=device, allow_cross_data=allow_cross_data)


def _load_unclip(paths: Sequence[str], device: Any, allow_cross_data: bool) -> Any:
    from lightning_diffusion.pipeline import Unclip

    return Unclip.from_checkpoints(paths, map_location=device, allow_cross_data=allow_cross_data)


def _scorer_apart(models: SweepModels) -> None:
    """Refuse scoring with the guiding encoder itself: CLIP guidance would be graded by its own model."""
    from lightning_diffusion.components.base import same_weights

    contrastive, scorer = models.get("contrastive"), models.get("clip_scorer")
    if contrastive is not None and scorer is not None and same_weights(contrastive, scorer):
        raise ConfigError(
            "--clip_scorer is the guiding contrastive encoder (--contrastive); the CLIP score must come from "
            "an encoder trained separately (e.g. the same config with another seed_everything)."
        )


register_role(
    Role(
        "evaluator",
        "evaluator",
        "an evaluator",
        "evaluator checkpoint (features, class accuracy)",
        shares=("image", "classes", "source"),
    )
)
register_role(
    Role(
        "classifier",
        "noisy_classifier",
        "a noisy classifier",
        "noisy classifier (method classifier)",
        shares=("image", "classes"),
    )
)
register_role(
    Role(
        "guide",
        "denoiser",
        "a guide model",
        "weaker denoiser (method autoguidance): a smaller or less-trained denoiser of the same data",
        shares=("image", "classes", "vocabulary"),
        counted=True,
    )
)
register_role(
    Role(
        "contrastive",
        "contrastive_encoder",
        "a noise-aware contrastive encoder",
        "noise-aware contrastive encoder (method clip)",
        shares=("image", "vocabulary"),
    )
)
register_role(
    Role(
        "clip_scorer",
        "contrastive_encoder",
        "a contrastive encoder for the CLIP score",
        "contrastive encoder for the CLIP score, trained apart from the guiding one (another seed)",
        shares=("image", "vocabulary"),
        check=_scorer_apart,
    )
)
register_role(
    Role(
        "cascade",
        "denoiser, upsampler",
        "its stages",
        "method cascade: base denoiser and upsampler checkpoints, lowest resolution first",
        shares=("image", "classes", "source"),
        chain=True,
        usage="'[BASE.ckpt, UPSAMPLER.ckpt]'",
        loader=_load_cascade,
    )
)
register_role(
    Role(
        "unclip",
        "prior, denoiser, upsampler",
        "its stages",
        "method unclip: prior, unCLIP decoder and (optionally) upsampler checkpoints",
        shares=("image", "vocabulary", "source"),
        chain=True,
        usage="'[PRIOR.ckpt, DECODER.ckpt(, UPSAMPLER.ckpt)]'",
        loader=_load_unclip,
    )
)
register_role(
    Role(
        "student",
        "denoiser",
        "a guidance-distilled student",
        "method distilled: a DistilledDenoiser or ProgressiveDenoiser distilled from the denoiser",
        shares=("image", "classes", "source"),
    )
)
