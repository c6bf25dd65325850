"""Files survive SIGKILL at a random moment of their write: a reader finds the previous complete version
or the new one, never a torn file (``last.ckpt``, ``sweep.json``, the reference feature cache).

Each round forks a writer that rewrites the file in a loop, kills it after a random delay (most kills land
mid-write: a write takes milliseconds) and reads the file back; 20 rounds per file.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lightning_diffusion.checkpoint_io import SafeCheckpointIO
from lightning_diffusion.registry import read_checkpoint
from lightning_diffusion.sweep import read_rows, reference_features, write_rows

pytestmark = pytest.mark.usefixtures("one_thread")

ROUNDS = 20
MAX_DELAY_S = 0.03
FORK = multiprocessing.get_context("fork")  # the test process's imports are reused: a round costs ms


def rewrite_forever(write: Callable[[int], None], first: int) -> None:
    """The writer: versions ``first``, ``first + 1``, ... until it is killed."""
    version = first
    while True:
        write(version)
        version += 1


def kill_writers(write: Callable[[int], None], read: Callable[[], int], seed: int) -> list[int]:
    """Write version 0, then ROUNDS times: fork a writer, SIGKILL it at a random moment, read the file.
    Returns the versions read, each checked complete by ``read``; they never go back."""
    write(0)
    rng = random.Random(seed)
    versions = [read()]
    for _ in range(ROUNDS):
        writer = FORK.Process(target=rewrite_forever, args=(write, versions[-1] + 1), daemon=True)
        writer.start()
        time.sleep(rng.uniform(0.0, MAX_DELAY_S))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(timeout=10)
        assert writer.exitcode == -signal.SIGKILL
        versions.append(read())
        assert versions[-1] >= versions[-2]
    return versions


def test_last_checkpoint_survives_sigkill_mid_save(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io = SafeCheckpointIO()

    def write(version: int) -> None:
        weights = torch.full((512, 512), float(version))  # 1 MiB
        checkpoint_io.save_checkpoint({"global_step": version, "state_dict": {"w": weights}}, path)

    def read() -> int:
        checkpoint = read_checkpoint(path)
        assert bool((checkpoint["state_dict"]["w"] == checkpoint["global_step"]).all())
        return checkpoint["global_step"]

    versions = kill_writers(write, read, seed=0)
    assert versions[-1] > 0  # the writers got somewhere
    assert list(path.parent.glob(".last.ckpt.*.tmp"))  # and some were killed mid-write, leaving a temp file


def test_sweep_json_survives_sigkill_mid_write(tmp_path: Path) -> None:
    def write(version: int) -> None:
        write_rows(tmp_path, [{"method": "cfg", "scale": float(version), "seed": i} for i in range(3000)])

    def read() -> int:
        rows = read_rows(tmp_path)
        assert len(rows) == 3000 and len({row["scale"] for row in rows}) == 1
        return int(rows[0]["scale"])

    versions = kill_writers(write, read, seed=1)
    assert versions[-1] > 0


class ScaledPixels:
    """A feature extractor whose features are the pixels times a version: each cache file says which
    write made it."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.name = f"scaled-pixels-{version}"

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images.flatten(1) * self.version, images.new_zeros(len(images), 1)


IMAGES = torch.rand(512, 1, 16, 16)  # 512 x 256 float features: 0.5 MiB a cache file


def test_reference_feature_cache_survives_sigkill_mid_write(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "real.pt"

    def compute(version: int) -> torch.Tensor:
        return reference_features(lambda: [IMAGES], ScaledPixels(version), cache, 256, torch.device("cpu"))

    def write(version: int) -> None:
        cache.unlink(missing_ok=True)  # the cache is written only when missing
        compute(version)

    def read() -> int:
        if not cache.is_file():  # killed between removing the old file and writing the new one
            return read.last
        features = torch.load(cache, weights_only=True)["features"]  # the record: features and checksum
        assert features.shape == (512, 256)
        version = round(float(features[0, 0] / IMAGES[0, 0, 0, 0]))
        torch.testing.assert_close(features, IMAGES.flatten(1) * version)
        torch.testing.assert_close(compute(version), features)  # and the sweep reads it back as cached
        read.last = version
        return version

    read.last = 0
    versions = kill_writers(write, read, seed=2)
    assert versions[-1] > 0
