"""Guidance distillation, stage 1 (Meng et al. 2023, "On distillation of guided diffusion models", Sec. 4.1):
a student that takes the guidance scale s as a condition and reproduces a frozen classifier-free-guided
teacher's estimate in one network pass,

    D_student(z_t, t, c, s) ~ D~_s(z_t, t, c) = D(z_t, t, ∅) + s (D(z_t, t, c) - D(z_t, t, ∅))

(the project's convention: s = 1 conditional, s = 0 unconditional), for s drawn uniformly from a range.

The student is a ``Denoiser`` built from the teacher's own arguments plus a ``GuidanceScale`` part and
initialised from the teacher's weights (the scale's embedding starts at zero, so the initial student is the
conditional teacher). It carries the teacher as the prior carries its encoder: its checkpoints record the
teacher's spec (``carried_teacher``) and hold its weights, so they load after the teacher's file is gone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from lightning_diffusion.components.carried import CarriedModel, Source
from lightning_diffusion.components.conditions import GuidanceScale
from lightning_diffusion.components.conditions.guidance_scale import KEY as SCALE_KEY
from lightning_diffusion.components.denoiser import Denoiser
from lightning_diffusion.config import ConfigError, instantiate, is_spec
from lightning_diffusion.diffusion import SamplerSpec, loss_weight, noised
from lightning_diffusion.diffusion.parameterization import broadcast_to
from lightning_diffusion.guidance.classifier_free import conditional_and_unconditional
from lightning_diffusion.registry import register

CARRIED_TEACHER = CarriedModel(
    key="carried_teacher",
    model=Denoiser,
    kind="denoiser",
    noun="teacher",
    use="is distilled from",
    argument="teacher",
    train="python train.py fit --config configs/<data>/denoiser.yaml",
)
DENOISER_ARGUMENTS = (
    "net",
    "image_shape",
    "num_classes",
    "text_encoder",
    "p_uncond",
    "prediction",
    "loss_weighting",
    "schedule",
    "conditions",
)


def load_teacher(teacher: Source | Denoiser, role: str) -> Denoiser:
    """The frozen teacher from a checkpoint path, a denoiser, or the ``carried_teacher`` record of a
    student's checkpoint (``CarriedModel.load``); ``role`` names the student in messages."""
    return CARRIED_TEACHER.load(teacher, role)


def _built(value: Any) -> Any:
    """Specs (also inside lists) as objects; other values as they are."""
    if is_spec(value):
        return instantiate(value)
    return [_built(item) for item in value] if isinstance(value, list) else value


@register("denoiser")
class DistilledDenoiser(Denoiser):
    """Stage 1: a student of the frozen class-conditional CFG ``teacher`` (a denoiser checkpoint path, or
    the record its own checkpoints carry) that takes the scale s in ``scale_range`` as a condition
    (``GuidanceScale``, ``scale_features`` Fourier features) and matches D~_s in one pass. Training draws
    t ~ U(0, 1), s ~ U(scale_range) and noise per sample and regresses the student's D on the teacher's
    guided D with the teacher's loss weighting. It samples with any sampler: ``steps`` is None."""

    steps: ClassVar[int | None] = None
    role: ClassVar[str] = "the distilled student"

    def __init__(
        self,
        teacher: Source,  # a path, or (in its own checkpoints) the carried teacher
        scale_range: Sequence[float] = (1.0, 5.0),
        scale_features: int = 32,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
    ) -> None:
        frozen = load_teacher(teacher, self.role)
        check_cfg_teacher(frozen, teacher)
        arguments = {name: frozen.spec["init_args"][name] for name in DENOISER_ARGUMENTS}
        scale = GuidanceScale(scale_range, scale_features)
        arguments["conditions"] = [*arguments["conditions"], scale.spec]
        self._become_student(frozen, arguments, lr, weight_decay, warmup_steps)
        self.save_hyperparameters(self.spec["init_args"])

    def _become_student(
        self, teacher: Denoiser, arguments: dict[str, Any], lr: float, weight_decay: float, warmup_steps: int
    ) -> None:
        """Build the student from ``arguments`` (the Denoiser's, as spec values), take the teacher's weights
        and carry the frozen teacher."""
        Denoiser.__init__(
            self,
            **{name: _built(value) for name, value in arguments.items()},
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
        )
        self.student_arguments = arguments
        self.teacher = teacher
        _copy_student_weights(self, teacher)

    @property
    def spec(self) -> dict[str, Any]:
        """The student's spec with ``teacher`` as the ``carried_teacher`` record (once it is built)."""
        spec = super().spec
        teacher = self.__dict__.get("_modules", {}).get("teacher")
        if teacher is None:
            return spec
        carried = CARRIED_TEACHER.record(teacher, spec["init_args"]["teacher"])
        return {**spec, "init_args": {**spec["init_args"], "teacher": carried}}

    @property
    def scale_range(self) -> tuple[float, float]:
        """The [low, high] guidance scales the student was distilled for."""
        return self.conditioner[SCALE_KEY].scale_range

    def check_scales(self, scales: Sequence[float]) -> None:
        """Refuse scales outside the trained range, naming it."""
        outside = [scale for scale in scales if not self.scale_range[0] <= scale <= self.scale_range[1]]
        if outside:
            raise self.conditioner[SCALE_KEY].refusal(", ".join(f"{scale:g}" for scale in outside))

    def check_sampler(self, sampler: SamplerSpec) -> None:
        """Refuse a sampler the student was not distilled for (a stage-1 student takes any)."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the carried teacher also in the hyperparameters, which resuming (``--ckpt_path``) reads."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["hyper_parameters"].update(self.spec["init_args"])

    def train(self, mode: bool = True) -> DistilledDenoiser:
        super().train(mode)
        self.teacher.eval()
        return self

    def _times(self, batch_size: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
        """Training times: t ~ U(0, 1)."""
        return torch.rand(batch_size, device=device, generator=generator)

    def target(self, z: Tensor, t: Tensor, cond: Mapping[str, Any], scales: Tensor) -> Tensor:
        """The teacher's guided D~_s = D(∅) + s (D(c) - D(∅)) (Ho & Salimans 2021 in the project's
        convention), one batched pass, per-sample scales."""
        conditional, unconditional = conditional_and_unconditional(self.teacher, z, t, cond)
        return unconditional + broadcast_to(scales, z) * (conditional - unconditional)

    def distillation_losses(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-sample losses w(lambda_t) ||D_student(z_t, t, c, s) - target||^2 (the teacher's weighting of
        the x0 error) and their times, at s ~ U(scale_range), noise and t drawn from ``generator``."""
        y = batch["image"]
        size, device = y.shape[0], y.device
        cond = self.teacher.batch_condition(batch)
        t = self._times(size, device, generator)
        noise = torch.randn(y.shape, device=device, generator=generator)
        low, high = self.scale_range
        scales = low + (high - low) * torch.rand(size, device=device, generator=generator)
        z = noised(y, noise, t, self.schedule)
        with torch.no_grad():
            target = self.target(z, t, cond, scales)
        estimate = self.denoise(z, t, {**cond, SCALE_KEY: scales})
        error = (estimate.float() - target.float()).square().flatten(1).mean(dim=1)
        return loss_weight(self.schedule.logsnr(t), self.loss_weighting) * error, t

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        loss = self.distillation_losses(batch)[0].mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """The distillation loss on a fixed draw per batch, overall and per noise-level quartile."""
        generator = torch.Generator(device=batch["image"].device).manual_seed(batch_idx)
        self.val_loss.update(*self.distillation_losses(batch, generator))


def check_cfg_teacher(teacher: Denoiser, source: Any) -> None:
    """Refuse a teacher whose classifier-free guided estimate does not exist: not a plain class-conditional
    ``Denoiser`` (an upsampler, a decoder, a student already), or trained without condition dropout."""
    where = f" {source!r}" if isinstance(source, (str, Path)) else ""
    if isinstance(teacher, DistilledDenoiser):
        raise ConfigError(
            f"the teacher{where} is a distilled student already; to halve its sampling steps distil it "
            "with ProgressiveDenoiser (configs/<data>/distilled_progressive.yaml)."
        )
    if type(teacher) is not Denoiser or teacher.num_classes is None:
        raise ConfigError(
            f"the teacher{where} is not a class-conditional Denoiser ({type(teacher).__name__}, num_classes "
            f"{teacher.num_classes}): guidance distillation matches D(∅) + s (D(c) - D(∅)) of a "
            "class-conditional teacher; train one with configs/<data>/denoiser.yaml (num_classes set)."
        )
    if teacher.conditioner["label"].p_drop == 0:
        raise ConfigError(
            f"the teacher{where} was trained without condition dropout (p_uncond 0), so its unconditional "
            "estimate D(∅) was never learned and its guided estimate means nothing; train the teacher with "
            "p_uncond > 0 (e.g. 0.1)."
        )


def _copy_student_weights(student: Denoiser, teacher: Denoiser) -> None:
    """Initialise the student from the teacher's own weights (not those of a teacher the teacher carries);
    only the student's new parts (the scale embedding) and its carried teacher are left out."""
    state = {key: value for key, value in teacher.state_dict().items() if not key.startswith("teacher.")}
    result = student.load_state_dict(state, strict=False)
    new = ("teacher.", f"conditioner.{SCALE_KEY}.")
    missing = [key for key in result.missing_keys if not key.startswith(new)]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"the student does not match its teacher's network (missing {missing[:3]}, unexpected "
            f"{result.unexpected_keys[:3]}); distil from the teacher checkpoint itself."
        )
