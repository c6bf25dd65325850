"""Time budgets that say what they bought: the steps a run reached against the steps its recipe needs.

A run given ``max_time`` stops when the time is up, however few optimizer steps that was; a recipe whose
model saw fewer steps than it needs to learn samples noise. ``BudgetRecord`` is what a run stores in its
checkpoints (``checkpoint["training_budget"]``), so every command that loads the checkpoint to sample
from it (``load_component``) says so too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lightning_diffusion.precision import BF16, FP32, auto_choice

CHECKPOINT_KEY = "training_budget"
DEFAULT_MIN_STEPS = 300  # a few hundred steps: below this no recipe here samples more than blobs


@dataclass(frozen=True)
class BudgetRecord:
    """Steps reached, the recipe's minimum, and whether the time budget ended the run."""

    steps: int
    min_steps: int
    stopped_by_time: bool

    @property
    def too_few(self) -> bool:
        return self.stopped_by_time and self.steps < self.min_steps

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> BudgetRecord | None:
        """The record a checkpoint holds, or None (written before budgets were recorded, or by hand)."""
        record = checkpoint.get(CHECKPOINT_KEY)
        return cls(**record) if isinstance(record, Mapping) else None


def min_steps_for(hparams: Mapping[str, Any], min_steps: int | None = None) -> int:
    """The steps a recipe needs before its samples mean anything: ``min_steps`` when given, else its
    learning-rate warm-up or ``DEFAULT_MIN_STEPS``, whichever is longer."""
    if min_steps is not None:
        return min_steps
    return max(DEFAULT_MIN_STEPS, int(hparams.get("warmup_steps", 0) or 0))


def likely_causes(precision: str, on_cpu: bool, processes: int = 1) -> list[str]:
    """What may have made steps slow here, each with its fix: precision, threads, a busy machine."""
    causes = []
    if on_cpu and precision != FP32:
        choice = auto_choice(cuda=False)
        if choice.precision == FP32:
            causes.append(
                f"precision {precision} on this CPU is slow ({choice.reason}): use --trainer.precision auto"
            )
    elif on_cpu and precision == FP32 and auto_choice(cuda=False).precision == BF16:
        causes.append(
            "precision 32-true, while this CPU computes bf16 natively: --trainer.precision auto is faster"
        )
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    if on_cpu and threads * processes < cores:
        causes.append(
            f"torch uses {threads} thread(s) in each of {processes} process(es) on {cores} cores: unset "
            "OMP_NUM_THREADS or raise torch.set_num_threads"
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > cores:
        causes.append(f"the machine is busy (load average {load:.1f} on {cores} cores): run it alone")
    return causes


def budget_report(record: BudgetRecord, seconds: float, causes: list[str]) -> str:
    """One paragraph: the steps reached in ``seconds``; if too few, why that matters and what to do."""
    rate = record.steps / seconds if seconds > 0 else float("nan")
    reached = f"training reached {record.steps} optimizer steps in {seconds:.0f} s ({rate:.2f} steps/s)"
    if not record.too_few:
        return f"{reached}."
    return (
        f"{reached} before its time budget ran out, fewer than the {record.min_steps} this recipe needs "
        "to learn: its samples will look like noise. Likely causes: "
        f"{'; '.join(causes) or 'none found here (the model is large for this machine)'}. "
        "Give it more time (--trainer.max_time), a GPU, or a smaller recipe."
    )


def checkpoint_warning(checkpoint: Mapping[str, Any]) -> str | None:
    """A warning for sampling from a checkpoint whose time budget bought too few steps, else None."""
    record = BudgetRecord.from_checkpoint(checkpoint)
    if record is None or not record.too_few:
        return None
    return (
        f"this checkpoint trained {record.steps} steps, fewer than the {record.min_steps} its "
        "recipe needs (its time budget ran out): expect noise, not data. Train longer "
        "(--trainer.max_time) and sample again."
    )
