"""Lightning's Trainer with ``precision="auto"``: bf16-mixed where the hardware computes bf16, else fp32."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
from lightning.fabric.connector import _PRECISION_INPUT
from lightning.pytorch.utilities import rank_zero_info

from lightning_diffusion.precision import resolve_precision


class Trainer(pl.Trainer):
    """``pl.Trainer`` whose ``precision`` also takes ``"auto"``, resolved once for the trainer's
    accelerator (``lightning_diffusion.precision``) and logged with the reason; every other argument is
    Lightning's."""

    def __init__(self, *, precision: Literal["auto"] | _PRECISION_INPUT | None = None, **kwargs: Any) -> None:
        resolved, choice = resolve_precision(precision, kwargs.get("accelerator", "auto"))
        if choice is not None:
            rank_zero_info(choice.message())
        self.precision_choice = choice
        super().__init__(precision=resolved, **kwargs)
