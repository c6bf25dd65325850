"""A small reader for the IDX files (gzip-compressed or plain) that MNIST-style datasets ship in.

An IDX file starts with a magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
uint32 sizes, then the values. Only unsigned bytes (type ``0x08``), the type of every MNIST-style
image and label file, are supported.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

from lightning_diffusion.config import ConfigError

_UNSIGNED_BYTE = 0x08


def _corrupt(path: Path, problem: str) -> ConfigError:
    return ConfigError(
        f"{str(path)!r} is not a valid IDX file: {problem}; the file is corrupt or of another kind, "
        "so replace it with a fresh copy of the dataset."
    )


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (``.gz`` is decompressed), checking magic number and sizes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:
        raise _corrupt(path, f"it cannot be read ({error})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise _corrupt(path, f"its magic number is {data[:4].hex() or 'missing'}, not 0000<type><ndim>")
    if data[2] != _UNSIGNED_BYTE:
        raise _corrupt(path, f"its value type is 0x{data[2]:02x}, not 0x08 (unsigned byte)")
    file_ndim = data[3]
    if ndim is not None and file_ndim != ndim:
        raise _corrupt(path, f"it has {file_ndim} dimensions where {ndim} are expected")
    header_size = 4 + 4 * file_ndim
    if len(data) < header_size:
        raise _corrupt(path, "its header is truncated")
    shape = struct.unpack(f">{file_ndim}I", data[4:header_size])
    expected, found = math.prod(shape), len(data) - header_size
    if found != expected:
        raise _corrupt(path, f"its header gives shape {shape} ({expected} values) but it holds {found}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file (N, H, W) and its labels file (N,), checking that their counts agree."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise ConfigError(
            f"{str(images_path)!r} holds {len(images)} images but {str(labels_path)!r} holds "
            f"{len(labels)} labels; the two files come from different datasets or one is damaged, "
            "so replace them with a matching pair."
        )
    return images, labels
