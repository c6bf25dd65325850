"""The GPU path on the CPU: ``GPUSpeedups`` keeps checkpoints plain and refuses what it cannot do, and
``scripts/gpu_check.sh --smoke`` runs end to end (so the GPU check cannot rot), sampling without
recompiling once warm."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from tiny import REPO, tiny_denoiser

from callbacks import GPUSpeedups
from lightning_diffusion import compilation
from lightning_diffusion.compilation import compile_networks, is_compiled, networks_of, use_channels_last
from lightning_diffusion.config import ConfigError


class _Strategy:
    root_device = torch.device("cpu")


class _Trainer:
    strategy = _Strategy()


@pytest.fixture
def matmul_precision():
    """Restore the process-wide float32 matmul precision a test sets."""
    precision = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(precision)


def test_speedups_compile_in_place_and_keep_state_dict_keys(monkeypatch, matmul_precision):
    monkeypatch.setattr(compilation, "_compiler_error", lambda device: None)  # the probe compiles slowly
    model = tiny_denoiser()
    keys = list(model.state_dict())
    GPUSpeedups(compile=True).setup(_Trainer(), model, "fit")
    assert is_compiled(model.net)
    assert list(model.state_dict()) == keys  # no _orig_mod prefix: checkpoints load either way
    assert torch.get_float32_matmul_precision() == "high"


def test_channels_last_applies_to_convolutional_networks_only():
    model = tiny_denoiser()
    assert use_channels_last(model) == ["net"]
    four_d = [p for p in model.net.parameters() if p.ndim == 4]
    assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)


def test_a_component_without_a_network_is_refused():
    with pytest.raises(ConfigError, match="keeps no network in net or image_net"):
        networks_of(torch.nn.Linear(2, 2))


def test_compile_without_a_working_compiler_says_what_to_do(monkeypatch):
    monkeypatch.setattr(compilation, "_compiler_error", lambda device: "CalledProcessError: g++ not found")
    with pytest.raises(ConfigError, match=r"cannot build code for the cpu.*C\+\+ compiler.*compile: false"):
        compile_networks(tiny_denoiser())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compile_mode": "fastest"}, "unknown compile mode 'fastest'; choose one of default"),
        ({"matmul_precision": "tf32"}, "unknown matmul precision 'tf32'; choose one of highest, high"),
    ],
)
def test_bad_speedup_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        GPUSpeedups(**options)


@pytest.mark.slow
def test_gpu_check_smoke_prints_its_table_and_warm_sampling_builds_no_graph():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for row in ("train plain loop eager", "train Lightning fit compiled", "set_sync_debug_mode(error)"):
        assert row in result.stdout
    # once warm, sampling builds no graph: CFG's 2B-row graph and the interval's B-row graph are reused
    for row in ("sample CFG compiled", "sample CFG-interval compiled"):
        assert re.search(rf"{row}\s+[\d.]+\s+[\d.]+\s+0 \(warm-up \d\)", result.stdout), result.stdout
