"""Keep glibc's malloc from handing large tensor buffers back to the kernel after every layer.

CPU inference frees and re-allocates activation buffers of tens to hundreds of MiB each layer. glibc
serves blocks above its mmap threshold (128 KiB, rising with use to at most 32 MiB) with mmap and
returns them with munmap, and it gives the heap's free top back above its trim threshold; either way
every layer faults its buffers in again, and a CPU guidance sweep spends as long in the kernel as in
user code. Raising both thresholds to 1 GiB at start-up keeps freed buffers in the heap for reuse; the
process keeps up to its peak memory instead of returning it between layers. Older glibc refuses an
mmap threshold above 32 MiB; there mmap is switched off for the heap instead (M_MMAP_MAX = 0).

Applied when ``lightning_diffusion`` is imported (so in every entry point, DDP process and DataLoader
worker). A no-op without glibc (macOS, musl, Windows); it leaves alone any threshold the user set
through glibc's environment variables, and ``LIGHTNING_DIFFUSION_TUNE_MALLOC=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping

from lightning_diffusion.config import ConfigError

OPT_OUT_VARIABLE = "LIGHTNING_DIFFUSION_TUNE_MALLOC"
THRESHOLD_BYTES = 1 << 30

# mallopt parameter numbers from glibc's <malloc.h>, and the variables through which a user sets the
# same parameter at start-up (the legacy alias, the GLIBC_TUNABLES name).
_PARAMETERS = {
    "M_TRIM_THRESHOLD": (-1, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"),
    "M_MMAP_THRESHOLD": (-3, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
    "M_MMAP_MAX": (-4, "MALLOC_MMAP_MAX_", "glibc.malloc.mmap_max"),
}
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

_applied: dict[str, int] = {}


def tune_malloc(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """Raise glibc's trim and mmap thresholds to ``THRESHOLD_BYTES`` through ``mallopt``, leaving alone
    those the user set in ``environ``; returns what it set (empty without glibc or when opted out)."""
    if not _enabled(environ) or (mallopt := _mallopt()) is None:
        return {}
    tunables = environ.get("GLIBC_TUNABLES", "")
    user_set = {
        name for name, (_, alias, tunable) in _PARAMETERS.items() if alias in environ or tunable in tunables
    }
    done: dict[str, int] = {}

    def set_parameter(name: str, value: int) -> bool:
        if name in user_set or mallopt(_PARAMETERS[name][0], value) != 1:
            return False
        done[name] = value
        return True

    set_parameter("M_TRIM_THRESHOLD", THRESHOLD_BYTES)
    if "M_MMAP_THRESHOLD" not in user_set and not set_parameter("M_MMAP_THRESHOLD", THRESHOLD_BYTES):
        set_parameter("M_MMAP_MAX", 0)  # older glibc refuses thresholds above 32 MiB: no mmap at all instead
    _applied.update(done)
    return done


def applied() -> dict[str, int]:
    """The mallopt parameters this process set (name -> value), so tests and reports can read them."""
    return dict(_applied)


def _enabled(environ: Mapping[str, str]) -> bool:
    value = environ.get(OPT_OUT_VARIABLE, "1").strip().lower()
    if value not in _ON + _OFF:
        raise ConfigError(
            f"{OPT_OUT_VARIABLE}={environ[OPT_OUT_VARIABLE]!r} is not a switch; set it to 0 (keep glibc's "
            f"malloc defaults) or 1 (raise its thresholds, the default). Known values: {_ON + _OFF}"
        )
    return value in _ON


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where the C library is not glibc (macOS, musl, Windows)."""
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, ValueError, OSError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
