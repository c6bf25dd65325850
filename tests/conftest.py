"""Shared test set-up: tests import helpers from this folder; W&B and matplotlib write to a temp dir."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

_scratch = tempfile.mkdtemp(prefix="lightning-diffusion-tests-")
os.environ.setdefault("WANDB_MODE", "offline")
for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "MPLCONFIGDIR"):
    os.environ.setdefault(variable, _scratch)
