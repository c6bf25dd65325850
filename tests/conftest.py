"""Shared test set-up: tests import helpers from this folder; W&B and matplotlib write to a temp dir."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

_scratch = tempfile.mkdtemp(prefix="lightning-diffusion-tests-")
os.environ.setdefault("WANDB_MODE", "offline")
for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "MPLCONFIGDIR"):
    os.environ.setdefault(variable, _scratch)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Nets this small gain nothing from threads, and on a busy machine spare threads stall them; a
    module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
