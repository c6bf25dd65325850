"""Weights & Biases logging that works without an account: offline unless an API key is configured."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def wandb_api_key_available() -> bool:
    """Whether W&B can authenticate: ``WANDB_API_KEY`` or a wandb entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def wandb_mode() -> str:
    """The W&B mode for a run: "disabled" under ``WANDB_MODE=disabled``, else "online" with an API key
    and "offline" without one."""
    if os.environ.get("WANDB_MODE") == "disabled":
        return "disabled"
    return "online" if wandb_api_key_available() else "offline"


class AutoWandbLogger(WandbLogger):
    """``WandbLogger`` that runs offline when no API key is set (``offline: null``); wandb itself prints
    the ``wandb sync <run dir>`` line that uploads an offline run. ``WANDB_MODE=disabled`` disables W&B."""

    def __init__(
        self,
        project: str = "lightning-diffusion",
        save_dir: str = "runs",
        name: str | None = None,
        offline: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            offline = wandb_mode() == "offline"
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, save_dir=save_dir, name=name, offline=offline, **kwargs)
