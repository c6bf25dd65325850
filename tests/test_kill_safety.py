"""Files survive SIGKILL at every point of their write: a reader finds the previous complete version or the
new one, never a torn file (``last.ckpt``, ``sweep.json``/``sweep.csv``, the reference feature cache).

No timing: a forked writer kills itself at a chosen point of ``atomic_write`` (after the first byte, half
of the data or all but the last byte; after the fsync, before the rename; after the rename), so the test
holds on a machine of any speed. A kill mid-data leaves its partial temporary file behind, which proves
the kill landed mid-write; the next write to the same path removes it.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_diffusion.atomic as atomic
from lightning_diffusion import checkpoint_io
from lightning_diffusion.registry import read_checkpoint
from lightning_diffusion.sweep import outputs, read_rows, reference, reference_features, write_rows

pytestmark = pytest.mark.usefixtures("one_thread")

FORK = multiprocessing.get_context("fork")  # the test process's imports are reused: a round costs ms
MID_DATA = ("first byte", "half", "all but the last byte")
AFTER_DATA = ("before rename", "after rename")
WRITERS = (checkpoint_io, outputs, reference)  # the modules that write through atomic_write


def partial_size(point: str, size: int) -> int:
    """The bytes of a ``size``-byte file that a writer killed mid-data at ``point`` has written."""
    return {"first byte": 1, "half": size // 2, "all but the last byte": size - 1}[point]


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DyingHandle:
    """A file handle that lets ``limit`` bytes (characters in text mode) through, flushes them to the
    file and kills its process: the write callback dies in the middle of its data."""

    def __init__(self, handle: Any, limit: int) -> None:
        self.handle, self.limit, self.written = handle, limit, 0

    def write(self, data: Any) -> int:
        if self.written + len(data) >= self.limit:
            self.handle.write(data[: self.limit - self.written])
            self.handle.flush()
            die()
        self.written += len(data)
        return self.handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


def die_at(path: Path, point: str, size: int) -> None:
    """Make this (forked) process kill itself at ``point`` of its next ``atomic_write`` to ``path``,
    whose new file has ``size`` bytes (writes to other paths go through)."""
    if point in MID_DATA:
        limit = partial_size(point, size)

        def dying_write(target: Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
            if Path(target) == path:
                return atomic.atomic_write(target, lambda handle: write(DyingHandle(handle, limit)), mode)
            return atomic.atomic_write(target, write, mode)

        for module in WRITERS:
            module.atomic_write = dying_write
    else:
        replace = os.replace

        def dying_replace(source: Path, target: Path) -> None:
            if Path(target) != path:
                return replace(source, target)
            if point == "after rename":
                replace(source, target)
            die()

        atomic.os.replace = dying_replace


def write_and_die(write: Callable[[int], None], version: int, path: Path, point: str, size: int) -> None:
    die_at(path, point, size)
    write(version)


def temporaries(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def kill_at_every_point(path: Path, write: Callable[[int], None], read: Callable[[], int]) -> None:
    """Write version 0, then for each kill point fork a writer of the next version that kills itself
    there, and read the file: the previous version when the kill came before the rename (with the partial
    or complete temporary file left behind), the new one after it. The next write removes the leftovers."""
    write(0)
    assert read() == 0 and not temporaries(path)
    size = path.stat().st_size
    version = 0
    for point in (*MID_DATA, *AFTER_DATA):
        writer = FORK.Process(target=write_and_die, args=(write, version + 1, path, point, size), daemon=True)
        writer.start()
        writer.join(timeout=120)
        assert writer.exitcode == -signal.SIGKILL, point  # it died at the point, not after the write
        if point == "after rename":
            version += 1
            assert not temporaries(path)
        else:
            (left,) = temporaries(path)
            whole = point == "before rename"
            assert left.stat().st_size == (size if whole else partial_size(point, size)), point
        assert read() == version, point
    write(version + 1)  # removes the temporary files of the killed writers
    assert read() == version + 1 and not temporaries(path)


def test_last_checkpoint_survives_sigkill_at_every_point_of_a_save(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    saver = checkpoint_io.SafeCheckpointIO()

    def write(version: int) -> None:
        weights = torch.full((128, 128), float(version))
        saver.save_checkpoint({"global_step": version, "state_dict": {"w": weights}}, path)

    def read() -> int:
        checkpoint = read_checkpoint(path)
        assert bool((checkpoint["state_dict"]["w"] == checkpoint["global_step"]).all())
        return checkpoint["global_step"]

    kill_at_every_point(path, write, read)


@pytest.mark.parametrize("name", ["sweep.json", "sweep.csv"])
def test_sweep_table_survives_sigkill_at_every_point_of_a_write(tmp_path: Path, name: str) -> None:
    def write(version: int) -> None:
        write_rows(tmp_path, [{"method": "cfg", "scale": float(i), "nfe": version} for i in range(300)])

    def read() -> int:
        """The version of the file under test; both files hold 300 rows of one version."""
        json_versions = {row["nfe"] for row in read_rows(tmp_path)}
        with open(tmp_path / "sweep.csv", newline="") as handle:
            csv_rows = list(csv.DictReader(handle))
        csv_versions = {int(row["nfe"]) for row in csv_rows}
        assert len(read_rows(tmp_path)) == len(csv_rows) == 300
        assert len(json_versions) == len(csv_versions) == 1
        return (json_versions if name == "sweep.json" else csv_versions).pop()

    kill_at_every_point(tmp_path / name, write, read)


class ScaledPixels:
    """A feature extractor whose features are the pixels times a version: each cache file says which
    write made it."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.name = f"scaled-pixels-{version}"

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images.flatten(1) * self.version, images.new_zeros(len(images), 1)


IMAGES = torch.rand(64, 1, 8, 8) + 1  # no zero pixel: the first feature tells the version


def test_reference_feature_cache_survives_sigkill_at_every_point_of_a_write(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "real.pt"

    def compute(version: int) -> torch.Tensor:
        return reference_features(lambda: [IMAGES], ScaledPixels(version), cache, 64, torch.device("cpu"))

    def write(version: int) -> None:
        cache.unlink(missing_ok=True)  # the cache is written only when missing
        compute(version)

    def read() -> int:
        if not cache.is_file():  # killed before the rename of a new cache: none, never a torn one
            return read.last
        features = torch.load(cache, weights_only=True)["features"]  # the record: features and checksum
        version = round(float(features[0, 0] / IMAGES[0, 0, 0, 0]))
        torch.testing.assert_close(features, IMAGES.flatten(1) * version)
        torch.testing.assert_close(compute(version), features)  # and the sweep reads it back as cached
        read.last = version
        return version

    read.last = 0
    kill_at_every_point(cache, write, read)


def test_a_write_removes_only_the_temporary_files_of_writers_that_are_gone(tmp_path: Path) -> None:
    finished = FORK.Process(target=os.getpid)
    finished.start()
    finished.join()
    path = tmp_path / "last.ckpt"
    stale = tmp_path / f".last.ckpt.{finished.pid}-0123abcd.tmp"
    live = tmp_path / f".last.ckpt.{os.getpid()}-4567cdef.tmp"  # a concurrent writer that still runs
    other = tmp_path / f".other.ckpt.{finished.pid}-0123abcd.tmp"  # another file's
    for leftover in (stale, live, other):
        leftover.write_bytes(b"partial")
    atomic.atomic_write_text(path, "new")
    assert path.read_text() == "new" and not stale.exists() and live.exists() and other.exists()
