"""``precision: auto``: bf16 autocast only where the hardware computes bf16 natively, fp32 elsewhere.

bf16 autocast halves a step's time on CPUs with AVX512_BF16 or AMX and on Ampere-or-newer GPUs, but on
CPUs with AVX2 only every bf16 op is emulated, and a training step of the Fashion-MNIST U-Net takes about
14x longer than in fp32. ``resolve_precision`` turns ``"auto"`` into a Lightning precision string once, at
start-up, with the reason it chose it.
"""

from __future__ import annotations

import platform
import time
from functools import cache
from pathlib import Path
from typing import NamedTuple

import torch

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32-true"
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 dot products
PROBE_SIZE = 256
PROBE_REPEATS = 5


class PrecisionChoice(NamedTuple):
    """What ``auto`` resolved to and why (one line, for the log)."""

    precision: str
    reason: str

    def message(self) -> str:
        return f"precision auto → {self.precision}: {self.reason}"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux), or None where they cannot be read."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def matmul_seconds(dtype: torch.dtype, size: int = PROBE_SIZE, repeats: int = PROBE_REPEATS) -> float:
    """Best-of-``repeats`` seconds of one ``size`` x ``size`` CPU matmul in ``dtype`` (after one warm-up)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def cpu_choice(
    capability: str | None = None, flags: set[str] | None = None, machine: str | None = None
) -> PrecisionChoice:
    """bf16-mixed on a CPU that computes bf16 natively, else 32-true.

    On x86 that needs the AVX512_BF16 or AMX instructions and torch running its AVX512 kernels
    (``torch.backends.cpu.get_cpu_capability()``, which ``ATEN_CPU_CAPABILITY`` can lower). Where the
    flags cannot be read (no ``/proc/cpuinfo``, or not x86), a sub-second probe times a bf16 and an fp32
    matmul and keeps bf16 only if it is the faster."""
    capability = capability if capability is not None else torch.backends.cpu.get_cpu_capability()
    machine = (machine if machine is not None else platform.machine()).lower()
    flags = flags if flags is not None else cpu_flags()
    if flags is not None and machine in ("x86_64", "amd64", "i686", "x86"):
        native = sorted(set(X86_BF16_FLAGS) & flags)
        if native and capability.startswith("AVX512"):
            return PrecisionChoice(BF16, f"this CPU computes bf16 natively ({', '.join(native)})")
        if native:
            reason = f"torch runs its {capability} kernels here, which emulate bf16 (the CPU has {native[0]})"
            return PrecisionChoice(FP32, reason)
        return PrecisionChoice(FP32, f"this CPU ({capability}) has no native bf16")
    bf16, fp32 = matmul_seconds(torch.bfloat16), matmul_seconds(torch.float32)
    timing = f"a {PROBE_SIZE}x{PROBE_SIZE} matmul: {bf16 * 1e3:.2f} ms in bf16, {fp32 * 1e3:.2f} ms in fp32"
    if bf16 < fp32:
        return PrecisionChoice(BF16, f"bf16 is the faster on this CPU ({capability}; {timing})")
    return PrecisionChoice(FP32, f"bf16 is emulated on this CPU ({capability}; {timing})")


def cuda_choice(device: int | None = None) -> PrecisionChoice:
    """bf16-mixed on a CUDA device that supports bf16 (compute capability 8.0 or newer), else 32-true."""
    index = torch.cuda.current_device() if device is None else device
    name = torch.cuda.get_device_name(index)
    major, minor = torch.cuda.get_device_capability(index)
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return PrecisionChoice(BF16, f"{name} (compute capability {major}.{minor}) computes bf16 natively")
    return PrecisionChoice(FP32, f"{name} (compute capability {major}.{minor}) has no native bf16")


def uses_cuda(accelerator: object) -> bool:
    """Whether a Trainer/Fabric ``accelerator`` setting will run on CUDA devices."""
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    if name in ("gpu", "cuda") or "cuda" in name:
        return True
    return name == "auto" and torch.cuda.is_available()


@cache
def auto_choice(cuda: bool) -> PrecisionChoice:
    """The choice for ``auto`` on this machine's CUDA devices or CPU (computed once per process)."""
    return cuda_choice() if cuda else cpu_choice()


def resolve_precision(
    precision: object, accelerator: object = "auto"
) -> tuple[object, PrecisionChoice | None]:
    """``precision`` as Lightning takes it: ``"auto"`` resolved for ``accelerator`` (with its reason),
    anything else passed through unchanged (reason None)."""
    if precision != AUTO:
        return precision, None
    choice = auto_choice(uses_cuda(accelerator))
    return choice.precision, choice
