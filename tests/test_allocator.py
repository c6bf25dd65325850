"""Importing lightning_diffusion raises glibc's malloc thresholds (so large tensor buffers are reused, not
mmapped per layer), leaves user-set thresholds alone, and is a silent no-op when opted out or off glibc."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_diffusion import allocator
from lightning_diffusion.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
GLIBC = platform.libc_ver()[0] == "glibc"
BUFFER_BYTES = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MiB)

# In a fresh interpreter: import the package, then malloc one large buffer and report whether glibc
# served it with mmap (mallinfo2's hblkhd counts mmapped bytes).
_PROBE = f"""
import ctypes, json
import lightning_diffusion
from lightning_diffusion import allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblkhd
buffer = libc.malloc({BUFFER_BYTES})
mmapped = libc.mallinfo2().hblkhd - before >= {BUFFER_BYTES}
libc.free(buffer)
print(json.dumps({{"applied": allocator.applied(), "mmapped": mmapped}}))
"""

needs_mallinfo2 = pytest.mark.skipif(
    not GLIBC or not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc >= 2.33 (mallinfo2)"
)


def probe(**environment: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), **environment}
    for variable in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        if variable not in environment:
            env.pop(variable, None)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    assert result.stderr == "", result.stderr
    return json.loads(result.stdout)


@needs_mallinfo2
def test_import_raises_thresholds_so_large_buffers_come_from_the_heap() -> None:
    report = probe(LIGHTNING_DIFFUSION_TUNE_MALLOC="1")
    bytes_ = allocator.THRESHOLD_BYTES
    assert report["applied"] == {"M_MMAP_THRESHOLD": bytes_, "M_TRIM_THRESHOLD": bytes_}
    assert not report["mmapped"]


@needs_mallinfo2
def test_opting_out_keeps_glibc_defaults_silently() -> None:
    report = probe(LIGHTNING_DIFFUSION_TUNE_MALLOC="0")
    assert report == {"applied": {}, "mmapped": True}


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_thresholds_the_user_set_are_left_alone() -> None:
    assert allocator.tune_malloc({"MALLOC_MMAP_THRESHOLD_": "65536"}) == {
        "M_TRIM_THRESHOLD": allocator.THRESHOLD_BYTES
    }
    tunables = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=65536:glibc.malloc.mmap_threshold=65536"}
    assert allocator.tune_malloc(tunables) == {}


def test_without_glibc_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_glibc(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(os, "confstr", no_glibc)
    assert allocator.tune_malloc({}) == {}


def test_where_glibc_refuses_a_high_mmap_threshold_mmap_is_switched_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []

    def old_glibc_mallopt(parameter: int, value: int) -> int:
        calls.append((parameter, value))
        return int(not (parameter == -3 and value > 32 << 20))  # M_MMAP_THRESHOLD capped at 32 MiB

    monkeypatch.setattr(allocator, "_mallopt", lambda: old_glibc_mallopt)
    monkeypatch.setattr(allocator, "_applied", {})  # this process's real settings stay as they were
    bytes_ = allocator.THRESHOLD_BYTES
    assert allocator.tune_malloc({}) == {"M_TRIM_THRESHOLD": bytes_, "M_MMAP_MAX": 0}
    assert calls == [(-1, bytes_), (-3, bytes_), (-4, 0)]
    calls.clear()
    assert allocator.tune_malloc({"MALLOC_MMAP_MAX_": "10"}) == {"M_TRIM_THRESHOLD": bytes_}
    assert calls == [(-1, bytes_), (-3, bytes_)]


def test_a_switch_that_is_not_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"LIGHTNING_DIFFUSION_TUNE_MALLOC='maybe'.*0.*1"):
        allocator.tune_malloc({"LIGHTNING_DIFFUSION_TUNE_MALLOC": "maybe"})
