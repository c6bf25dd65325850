"""The base every component derives from, and the pieces components share (checks, optimiser, metrics)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_diffusion.config import ConfigError, Configurable
from lightning_diffusion.registry import CHECKPOINT_KEY

QUARTILES = 4


def warmup_lambda(warmup_steps: int, total_steps: float = math.inf) -> Callable[[int], float]:
    """Learning-rate factor that rises linearly to 1 over ``warmup_steps`` optimizer steps, then stays
    there or, with a finite ``total_steps``, decays to 0 along a cosine by step ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1.0, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def adamw_with_warmup(
    module: nn.Module, lr: float, weight_decay: float, warmup_steps: int, total_steps: float = math.inf
) -> dict[str, Any]:
    """AdamW with a per-step ``warmup_lambda`` schedule, in the form ``configure_optimizers`` returns.

    The update is fused into one kernel when every parameter is on a CUDA device; otherwise torch picks
    its default (multi-tensor foreach ops on accelerators, a loop on the CPU)."""
    if not (math.isfinite(lr) and lr >= 0):
        raise ConfigError(f"the learning rate lr must be a finite number >= 0 (e.g. 2e-4), got {lr}.")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ConfigError(f"weight_decay must be a finite number >= 0 (e.g. 0.01), got {weight_decay}.")
    parameters = list(module.parameters())
    fused = bool(parameters) and all(parameter.is_cuda for parameter in parameters)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_lambda(warmup_steps, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def check_network(net: nn.Module, **expected: Any) -> None:
    """Refuse a network whose attributes (e.g. ``out_dim``) differ from what the component needs;
    attributes the network does not have are not checked. (A network that is not ``Configurable``
    is refused earlier, when the component records its constructor arguments.)"""
    for name, value in expected.items():
        actual = getattr(net, name, value)
        if actual != value:
            raise ConfigError(
                f"the network {type(net).__name__} has {name}={actual} but the model needs {value}; "
                f"set model.init_args.net.init_args.{name} to {value}."
            )


def same_weights(first: nn.Module, second: nn.Module) -> bool:
    """Whether two modules hold the same parameters and buffers (names, shapes and values)."""
    first_state, second_state = first.state_dict(), second.state_dict()
    return first_state.keys() == second_state.keys() and all(
        first_state[key].shape == second_state[key].shape
        and bool((first_state[key] == second_state[key].to(first_state[key].device)).all())
        for key in first_state
    )


def check_probabilities(**probabilities: float) -> None:
    """Refuse any named probability (e.g. a condition-dropout rate) outside [0, 1]."""
    for name, value in probabilities.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} is a probability and must lie in [0, 1], got {value}.")


def classification_outcomes(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample cross-entropy and correctness (1.0 or 0.0): what classifiers log as loss and accuracy."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    return losses, (logits.argmax(dim=1) == labels).float()


class QuartileMeans(nn.Module):
    """Means of a per-sample value over an epoch, overall and per quartile of the noise level t in
    ``[0, t_max]`` (ADM's loss quartiles); torchmetrics reduces them across DDP ranks."""

    def __init__(self, name: str, t_max: float = 1.0) -> None:
        super().__init__()
        self.name = name
        self.t_max = t_max
        self.overall = MeanMetric()
        self.quartiles = nn.ModuleList(MeanMetric() for _ in range(QUARTILES))

    def update(self, values: Tensor, t: Tensor) -> None:
        """Add per-sample ``values`` (B,) observed at noise levels ``t`` (B,)."""
        quartile = (t / self.t_max * QUARTILES).long().clamp(max=QUARTILES - 1)
        self.overall.update(values)
        for q, metric in enumerate(self.quartiles):
            selected = values[quartile == q]
            if selected.numel():
                metric.update(selected)

    def compute_and_reset(self) -> dict[str, Tensor]:
        """``{name: overall mean, name_q0: ..., name_q3: ...}`` (a collective under DDP), then reset."""
        values = {self.name: self.overall.compute()}
        values.update({f"{self.name}_q{q}": metric.compute() for q, metric in enumerate(self.quartiles)})
        for metric in (self.overall, *self.quartiles):
            metric.reset()
        return values


class Component(Configurable, pl.LightningModule):
    """A registered LightningModule whose checkpoints say what kind it is and how to rebuild it."""

    component_kind: ClassVar[str]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record kind and spec for ``load_component``, and the class for LightningCLI's ``--ckpt_path``
        (which reads ``_class_path`` from the hyperparameters to rebuild the model config)."""
        checkpoint[CHECKPOINT_KEY] = {"kind": self.component_kind, "spec": self.spec}
        checkpoint.setdefault("hyper_parameters", {})["_class_path"] = self.spec["class_path"]

    def on_train_start(self) -> None:
        """Give each DDP rank its own random stream for training draws (times, noise, condition dropout):
        ``seed_everything`` seeds every rank alike, so rank r's j-th sample would otherwise draw the same
        noise as every other rank's j-th sample, and a global batch of W x B would hold only B draws."""
        rank = self.trainer.global_rank
        if self.trainer.world_size > 1:
            torch.manual_seed((torch.initial_seed() + rank) % 2**63)

    def log_quartile_means(self, means: QuartileMeans) -> None:
        """Log a ``QuartileMeans``' epoch values, the overall one on the progress bar, and reset it."""
        values = means.compute_and_reset()
        self.log(means.name, values.pop(means.name), prog_bar=True)
        self.log_dict(values)

    def check_datamodule(self, image_shape: Sequence[int], num_classes: int | None) -> None:
        """Refuse, at fit start, a data module whose images or classes (unless ``num_classes`` is None) do
        not match, and images the component's network cannot take (e.g. a U-Net halving them too often)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "image_shape"):
            if tuple(datamodule.image_shape) != tuple(image_shape):
                raise ConfigError(
                    f"the data yields images of shape {tuple(datamodule.image_shape)} but the model is "
                    f"configured for {tuple(image_shape)}; set model.init_args.image_shape to "
                    f"{list(datamodule.image_shape)}."
                )
            if num_classes is not None and datamodule.num_classes != num_classes:
                raise ConfigError(
                    f"the data has {datamodule.num_classes} classes but the model is configured for "
                    f"{num_classes}; set model.init_args.num_classes to {datamodule.num_classes}."
                )
        check_image_size = getattr(getattr(self, "net", None), "check_image_size", None)
        if check_image_size is not None:
            check_image_size(*image_shape[-2:])
