"""torch.compile and memory-format speed-ups for a component's networks: one place that the
``GPUSpeedups`` callback (training) and the sampling entry points (``evaluate.py --compile``,
``python -m lightning_diffusion sample --compile``) share.

Networks compile in place (``nn.Module.compile``), so state_dict keys keep no ``_orig_mod`` prefix and
checkpoints load with or without compilation. Shapes are static (``dynamic=False``): sampling feeds a
network two batch sizes at most (B rows, and 2B for classifier-free guidance), each compiled once.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from lightning_diffusion.config import ConfigError

# The attributes components keep their networks in: ``net`` (denoiser, upsampler, unCLIP decoder,
# prior, noisy classifier, evaluator) and ``image_net`` (the contrastive encoder's image tower). Text
# encoders take lists of strings (tokenised on the host) and stay eager.
NETWORK_ATTRIBUTES = ("net", "image_net")
MATMUL_PRECISIONS = ("highest", "high", "medium")


def compile_modes() -> tuple[str, ...]:
    """The ``mode`` values torch.compile accepts (``default``, ``reduce-overhead``, ``max-autotune``, ...)."""
    import torch._inductor

    return tuple(torch._inductor.list_mode_options())


def check_compile_mode(mode: str) -> str:
    """``mode`` if torch.compile knows it, else a ConfigError listing the modes."""
    modes = compile_modes()
    if mode not in modes:
        raise ConfigError(f"unknown compile mode {mode!r}; choose one of {', '.join(modes)}.")
    return mode


def check_matmul_precision(precision: str) -> str:
    """``precision`` if ``torch.set_float32_matmul_precision`` takes it ("high" allows TF32), else a
    ConfigError listing the choices."""
    if precision not in MATMUL_PRECISIONS:
        raise ConfigError(
            f"unknown matmul precision {precision!r}; choose one of {', '.join(MATMUL_PRECISIONS)} "
            "('high' uses TF32 on GPUs that have it)."
        )
    return precision


@functools.cache
def _compiler_error(device_type: str) -> str | None:
    """Why a tiny compiled function fails on ``device_type`` (None when it runs): checked once per process."""
    probe = torch.compile(lambda x: torch.sin(x) + 1.0, dynamic=False)
    try:
        probe(torch.ones(4, device=device_type))
    except Exception as error:  # any failure of the toolchain means "cannot compile"
        first_line = next(iter(str(error).strip().splitlines()), "")
        return f"{type(error).__name__}: {first_line}"
    return None


def check_compiler(device: torch.device | str) -> None:
    """Raise a ConfigError saying what to do when torch.compile cannot build code for ``device`` (no C++
    compiler for inductor on the CPU, no triton on the GPU, an unsupported platform, ...)."""
    device_type = torch.device(device).type
    error = _compiler_error(device_type)
    if error is not None:
        needs = "a working triton (pip install triton)" if device_type == "cuda" else "a C++ compiler (g++)"
        raise ConfigError(
            f"compile: true, but torch.compile cannot build code for the {device_type} here ({error}). "
            f"Install {needs} for torch's inductor backend, or set compile: false (--compile false)."
        )


def networks_of(component: nn.Module) -> dict[str, nn.Module]:
    """The component's networks by attribute name (see ``NETWORK_ATTRIBUTES``); a ConfigError when it
    has none."""
    networks = {
        name: getattr(component, name)
        for name in NETWORK_ATTRIBUTES
        if isinstance(getattr(component, name, None), nn.Module)
    }
    if not networks:
        raise ConfigError(
            f"{type(component).__name__} keeps no network in {' or '.join(NETWORK_ATTRIBUTES)}; "
            "there is nothing to compile."
        )
    return networks


def is_compiled(network: nn.Module) -> bool:
    """Whether ``network`` has been compiled in place."""
    return getattr(network, "_compiled_call_impl", None) is not None


def compile_networks(
    component: nn.Module, mode: str = "default", device: torch.device | str | None = None
) -> list[str]:
    """Compile the component's networks in place with static shapes, after checking the compiler works
    on ``device`` (default: where the component's parameters are); returns the names compiled.
    Compiling twice is a no-op."""
    check_compile_mode(mode)
    networks = networks_of(component)
    check_compiler(device if device is not None else next(component.parameters()).device)
    for network in networks.values():
        if not is_compiled(network):
            network.compile(mode=mode, dynamic=False)
    return list(networks)


def is_convolutional(network: nn.Module) -> bool:
    """Whether ``network`` holds a 2-d convolution (where the channels-last layout pays)."""
    return any(isinstance(module, nn.Conv2d) for module in network.modules())


def use_channels_last(component: nn.Module) -> list[str]:
    """Store the weights of the component's convolutional networks channels-last (NHWC), the layout
    tensor cores read without transposes; returns the names converted."""
    converted = []
    for name, network in networks_of(component).items():
        if is_convolutional(network):
            network.to(memory_format=torch.channels_last)
            converted.append(name)
    return converted


def apply_speedups(
    component: nn.Module,
    compile: bool = True,
    compile_mode: str = "default",
    channels_last: bool = True,
    matmul_precision: str = "high",
    device: torch.device | str | None = None,
) -> None:
    """Everything the ``GPUSpeedups`` callback does, for any training loop: the float32 matmul precision
    ("high" allows TF32), channels-last convolution weights, then in-place compilation for ``device``."""
    torch.set_float32_matmul_precision(check_matmul_precision(matmul_precision))
    if channels_last:
        use_channels_last(component)
    if compile:
        compile_networks(component, compile_mode, device)


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process so far (one per network and input shape): the
    difference over a run counts its compilations and recompilations."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
