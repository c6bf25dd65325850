"""The trained components a sweep uses, as a mapping by model role; how they are loaded (``load_models``,
shared by ``evaluate.py`` and the ``GuidanceSweep`` callback); and the checks that they belong together
and fit the sweep's rows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_diffusion import distributed
from lightning_diffusion.compatibility import Trained, check_together, recorded_data
from lightning_diffusion.config import ConfigError
from lightning_diffusion.ema.reconstruct import check_lengths, reconstructed_checkpoint
from lightning_diffusion.metrics import EvaluatorFeatures, FeatureExtractor, FeatureInputs, build_features
from lightning_diffusion.registry import read_checkpoint
from lightning_diffusion.sweep.plans import RowPlan
from lightning_diffusion.sweep.prompts import Prompts
from lightning_diffusion.sweep.roles import get_role, registered_roles

DENOISER = "denoiser"  # the key of the denoiser's own path and data record in ``paths`` and ``data``


@dataclass
class SweepModels(Mapping[str, Any]):
    """The denoiser, the feature ``extractor`` of FID, IS and precision/recall, and the models of the
    sweep's roles by role name (``models["classifier"]``, ``models.get("guide")``: None when not given).

    ``evaluator`` is the evaluator role as a feature extractor (possibly the extractor itself): class
    accuracy comes from its logits, and is None without one (Inception's ImageNet logits know nothing of
    the data's classes). ``paths`` and ``data`` hold, by role (and ``"denoiser"``), the checkpoint paths
    and the data records the models were trained on (for messages, the run config and the compatibility
    checks); ``allow_cross_data`` lets models of different data be combined on purpose. ``snapshots`` is the
    denoiser's post-hoc EMA snapshot folder, from which ``use_ema`` gives it the weights of a row's EMA length
    (``ema``: the length it holds now, None as loaded)."""

    denoiser: Any
    extractor: FeatureExtractor | None
    roles: dict[str, Any] = field(default_factory=dict)
    evaluator: FeatureExtractor | None = None
    paths: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)
    allow_cross_data: bool = False
    snapshots: Any = None
    ema: float | None = None

    def __post_init__(self) -> None:
        for name in self.roles:
            get_role(name)
        self.roles = {name: model for name, model in self.roles.items() if model is not None}

    def __getitem__(self, role: str) -> Any:
        return self.roles[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self.roles)

    def __len__(self) -> int:
        return len(self.roles)

    @property
    def num_classes(self) -> int | None:
        """The classes sampled labels range over: the evaluator's, else the denoiser's, else the noisy
        classifier's (None: no model knows classes)."""
        for model in (self.get("evaluator"), self.denoiser, self.get("classifier")):
            classes = getattr(model, "num_classes", None)
            if classes:
                return classes
        return None

    @property
    def scorer(self) -> Any:
        """The contrastive encoder giving the CLIP score (trained apart from the guiding one), or None."""
        return self.get("clip_scorer")

    @property
    def attribute_evaluator(self) -> Any:
        """The evaluator when it has attribute heads (attribute accuracy from its features), else None."""
        evaluator = self.get("evaluator")
        return evaluator if getattr(evaluator, "attribute_sizes", None) else None

    def use_ema(self, sigma_rel: float | None) -> None:
        """Load the denoiser's weights averaged at EMA length ``sigma_rel`` from its snapshots into it in
        place (samplers built on it follow), rebuilt once and cached on disk by rank 0; None: keep them."""
        if sigma_rel is None or sigma_rel == self.ema:
            return
        averaged = read_checkpoint(averaged_checkpoint(self.snapshots, sigma_rel))
        self.denoiser.load_state_dict(averaged["state_dict"])
        self.ema = sigma_rel

    def trained(self, role: str) -> Trained:
        """The model of ``role`` (or the denoiser) with what it was trained on, named for messages."""
        model = self.denoiser if role == DENOISER else self[role]
        path = self.paths.get(role)
        where = "" if path is None else f" ({', '.join(map(str, path)) if isinstance(path, list) else path})"
        return Trained(f"the {role}{where}", model, self.data.get(role))


def averaged_checkpoint(folder: Any, sigma_rel: float) -> Any:
    """The checkpoint of the snapshots in ``folder`` averaged at ``sigma_rel``: rebuilt and cached by rank 0
    while the other ranks wait, then read from the cache by every rank."""
    if distributed.rank() == 0:
        reconstructed_checkpoint(folder, sigma_rel)
    distributed.barrier()
    return reconstructed_checkpoint(folder, sigma_rel)


def load_models(
    denoiser: Any,
    paths: Mapping[str, Any],
    device: Any,
    *,
    features: str = "evaluator",
    inception_weights: str | None = None,
    denoiser_path: str | None = None,
    denoiser_data: Mapping[str, Any] | None = None,
    allow_cross_data: bool = False,
    loaded: Mapping[str, Any] | None = None,
    extractor: FeatureExtractor | None = None,
) -> SweepModels:
    """The sweep's models on ``device``: ``denoiser`` and a model for each role given a checkpoint path in
    ``paths`` (a list for chains; None: not used), with the ``features`` extractor (``extractor`` when
    already built). ``loaded`` holds models already loaded by role (not loaded again); the data records
    come from the checkpoints, the denoiser's from ``denoiser_data``."""
    paths = {name: path for name, path in paths.items() if path is not None}
    for name, path in paths.items():
        role = get_role(name)
        if role.chain != isinstance(path, (list, tuple)):
            shape = "a list of checkpoints" if role.chain else "one checkpoint path"
            raise ConfigError(f"{role.flag} takes {shape}, got {path!r}; e.g. {role.flag} {role.usage}.")
    loaded = loaded or {}
    models = {
        name: loaded[name] if name in loaded else get_role(name).load(path, device, allow_cross_data)
        for name, path in paths.items()
    }
    inputs = FeatureInputs(models.get("evaluator"), paths.get("evaluator"), inception_weights)
    extractor = build_features(features, inputs) if extractor is None else extractor
    evaluator = extractor if isinstance(extractor, EvaluatorFeatures) else inputs.evaluator_features
    data = {name: recorded_data(path[0] if get_role(name).chain else path) for name, path in paths.items()}
    return SweepModels(
        denoiser,
        extractor,
        models,
        evaluator=evaluator,
        paths={DENOISER: denoiser_path, **{name: _plain(path) for name, path in paths.items()}},
        data={DENOISER: denoiser_data, **data},
        allow_cross_data=allow_cross_data,
    )


def _plain(path: Any) -> Any:
    return list(map(str, path)) if isinstance(path, (list, tuple)) else str(path)


def check_compatible(models: SweepModels, plans: Sequence[RowPlan], prompts: Prompts) -> None:
    """Refuse models trained on other data than the denoiser (per their roles' rules), and any row whose
    method lacks a model it needs or cannot follow the prompts: all before the first sample is drawn."""
    denoiser = models.trained(DENOISER)
    for name in models:
        role = get_role(name)
        check_together(
            models.trained(name), denoiser, role.shares, role.mismatch_fix(), models.allow_cross_data
        )
    for role in registered_roles():
        if role.check is not None and role.name in models:
            role.check(models)
    for plan in plans:
        plan.method.check(models, plan, prompts)
    lengths = list(dict.fromkeys(plan.ema for plan in plans if plan.ema is not None))
    if lengths:
        check_lengths(models.snapshots, lengths, models.paths.get(DENOISER))
