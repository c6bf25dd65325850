"""``precision: auto`` on mocked hardware (AVX2, AVX512_BF16, AMX, CUDA with and without bf16), the shipped
configs resolving it, and the time-budget report (a run stopped by ``max_time`` before its recipe learns
says so, in the log, in its checkpoint and when sampling from it)."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Timer
from test_cli import DIGITS, SMALL_NET, quiet
from tiny import REPO

import train
from callbacks.budget import TrainingBudget
from lightning_diffusion import precision
from lightning_diffusion.__main__ import main as lightning_diffusion_main
from lightning_diffusion.budget import (
    CHECKPOINT_KEY,
    DEFAULT_MIN_STEPS,
    BudgetRecord,
    budget_report,
    checkpoint_warning,
    min_steps_for,
)
from lightning_diffusion.precision import (
    BF16,
    FP32,
    PrecisionChoice,
    cpu_choice,
    cpu_flags,
    resolve_precision,
)
from lightning_diffusion.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

X86 = "x86_64"
AVX2_FLAGS = {"sse4_2", "avx", "avx2", "fma"}


def test_avx2_cpu_trains_in_fp32():
    choice = cpu_choice("AVX2", AVX2_FLAGS, X86)
    assert choice.precision == FP32
    assert choice.message() == "precision auto → 32-true: this CPU (AVX2) has no native bf16"


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_avx512_bf16_or_amx_cpu_trains_in_bf16(flag):
    choice = cpu_choice("AVX512", {*AVX2_FLAGS, "avx512f", flag}, X86)
    assert choice.precision == BF16 and flag in choice.reason


def test_bf16_hardware_behind_avx2_kernels_trains_in_fp32():
    """ATEN_CPU_CAPABILITY=avx2 makes torch run its AVX2 kernels: bf16 is emulated whatever the CPU has."""
    choice = cpu_choice("AVX2", {*AVX2_FLAGS, "amx_bf16"}, X86)
    assert choice.precision == FP32 and "AVX2" in choice.reason


@pytest.mark.parametrize(("bf16_ms", "fp32_ms", "expected"), [(0.1, 1.0, BF16), (14.0, 1.0, FP32)])
def test_unreadable_flags_fall_back_to_a_matmul_probe(monkeypatch, bf16_ms, fp32_ms, expected):
    seconds = {torch.bfloat16: bf16_ms / 1e3, torch.float32: fp32_ms / 1e3}
    monkeypatch.setattr(precision, "matmul_seconds", lambda dtype: seconds[dtype])
    assert cpu_choice("DEFAULT", None, "arm64").precision == expected
    monkeypatch.setattr(precision, "cpu_flags", lambda: None)
    assert cpu_choice("AVX2", None, X86).precision == expected


def test_matmul_probe_is_a_positive_time():
    assert 0 < precision.matmul_seconds(torch.bfloat16, size=16, repeats=2) < 10


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") is None


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA device whose bf16 support the test sets (``fake_cuda(True)``)."""

    def install(bf16: bool, name: str = "Fake GPU", capability: tuple[int, int] = (8, 0)) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
        precision.auto_choice.cache_clear()

    yield install
    precision.auto_choice.cache_clear()


def test_cuda_with_bf16_trains_in_bf16(fake_cuda):
    fake_cuda(True, "NVIDIA H100", (9, 0))
    resolved, choice = resolve_precision("auto", "gpu")
    assert resolved == BF16 and "NVIDIA H100" in choice.reason


def test_cuda_without_bf16_trains_in_fp32(fake_cuda):
    fake_cuda(False, "Tesla V100", (7, 0))
    resolved, choice = resolve_precision("auto", "auto")
    assert resolved == FP32 and "7.0" in choice.reason


def test_auto_on_a_cpu_accelerator_ignores_the_gpu(fake_cuda, monkeypatch):
    fake_cuda(False)
    monkeypatch.setattr(precision, "cpu_choice", lambda: PrecisionChoice(BF16, "mocked CPU"))
    assert resolve_precision("auto", "cpu") == (BF16, PrecisionChoice(BF16, "mocked CPU"))


def test_a_fixed_precision_is_passed_through():
    assert resolve_precision("bf16-mixed", "cpu") == ("bf16-mixed", None)
    assert resolve_precision(None, "cpu") == (None, None)


@pytest.fixture
def mocked_cpu(monkeypatch):
    """``auto`` on a CPU the test describes (``mocked_cpu(BF16)``), logged as it would be."""

    def install(choice: str) -> PrecisionChoice:
        mocked = PrecisionChoice(choice, f"mocked CPU that prefers {choice}")
        monkeypatch.setattr(precision, "auto_choice", lambda cuda: mocked)
        return mocked

    return install


@pytest.mark.parametrize("choice", [FP32, BF16])
def test_trainer_resolves_auto_and_logs_the_reason(mocked_cpu, choice, caplog):
    mocked = mocked_cpu(choice)
    with caplog.at_level("INFO"):
        trainer = Trainer(precision="auto", accelerator="cpu", logger=False, enable_progress_bar=False)
    assert trainer.precision == choice
    assert trainer.precision_choice == mocked
    assert mocked.message() in caplog.text


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(sys, "argv", ["train.py"])


SHIPPED_AUTO = sorted(
    path.relative_to(REPO / "configs")
    for path in REPO.glob("configs/**/*.yaml")
    if "precision: auto" in path.read_text(encoding="utf-8")
)


def test_every_shipped_config_that_autocasts_chooses_by_the_hardware():
    texts = {path: path.read_text(encoding="utf-8") for path in REPO.glob("configs/**/*.yaml")}
    assert not [path for path, text in texts.items() if "precision: bf16" in text]
    assert Path("fashion_mnist/denoiser.yaml") in SHIPPED_AUTO and Path("trainer/gpu.yaml") in SHIPPED_AUTO


@pytest.mark.parametrize("choice", [FP32, BF16])
def test_the_fashion_mnist_recipe_trains_in_what_auto_chooses(mocked_cpu, choice, in_tmp_dir, tmp_path):
    mocked_cpu(choice)
    config = REPO / "configs" / "fashion_mnist" / "denoiser.yaml"
    cli = train.main(["--config", str(config), *quiet(tmp_path)], run=False)
    assert cli.trainer.precision == choice


def timer(seconds: float) -> Timer:
    """A Timer of a ``seconds`` budget that has not started: its remaining time is ``seconds``."""
    return Timer(duration=timedelta(seconds=seconds))


def budget_of(callback: TrainingBudget, steps: int, budget_seconds: float | None, warmup: int = 0):
    callbacks = [] if budget_seconds is None else [timer(budget_seconds)]
    trainer = SimpleNamespace(callbacks=callbacks, global_step=steps)
    return callback.record(trainer, SimpleNamespace(hparams={"warmup_steps": warmup}))


def test_budget_record_says_when_the_time_budget_bought_too_few_steps():
    callback = TrainingBudget()
    assert budget_of(callback, 24, None) is None  # no time budget: nothing to report
    assert budget_of(callback, 24, 0.0) == BudgetRecord(24, DEFAULT_MIN_STEPS, stopped_by_time=True)
    assert budget_of(callback, 24, 0.0).too_few
    assert not budget_of(callback, 24, 3600.0).too_few  # stopped by its step or epoch limit
    assert not budget_of(callback, DEFAULT_MIN_STEPS, 0.0).too_few
    assert budget_of(TrainingBudget(min_steps=10), 24, 0.0).min_steps == 10
    assert budget_of(callback, 24, 0.0, warmup=5000).min_steps == 5000


def test_min_steps_is_the_warmup_or_a_few_hundred_unless_given():
    assert min_steps_for({"warmup_steps": 100}) == DEFAULT_MIN_STEPS
    assert min_steps_for({"warmup_steps": 1000}) == 1000
    assert min_steps_for({}, 50) == 50
    with pytest.raises(ValueError, match="min_steps"):
        TrainingBudget(min_steps=-1)


def test_budget_report_names_steps_causes_and_the_fix():
    record = BudgetRecord(24, 300, stopped_by_time=True)
    report = budget_report(record, 480.0, ["precision bf16-mixed on this CPU is slow"])
    assert "24 optimizer steps in 480 s (0.05 steps/s)" in report
    assert "fewer than the 300 this recipe needs" in report and "noise" in report
    assert "precision bf16-mixed on this CPU is slow" in report and "--trainer.max_time" in report
    assert budget_report(BudgetRecord(400, 300, True), 10.0, []).endswith("(40.00 steps/s).")


def test_a_run_out_of_time_warns_and_its_checkpoint_warns_the_sampler(in_tmp_dir, tmp_path, caplog):
    """A one-second budget against a recipe that needs a billion steps: too few on any machine."""
    args = ["fit", "--config", str(DIGITS), *quiet(tmp_path), *SMALL_NET, "--trainer.limit_val_batches", "1"]
    budget = ["--trainer.max_epochs", "-1", "--trainer.max_time", "00:00:00:01"]
    budget += ["--budget.min_steps", str(10**9)]
    with pytest.warns(UserWarning, match=r"reached \d+ optimizer steps .* fewer than the 1000000000 this"):
        train.main([*args, *budget])
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    record = torch.load(checkpoint, map_location="cpu", weights_only=True)[CHECKPOINT_KEY]
    assert record["stopped_by_time"] and record["min_steps"] == 10**9 and record["steps"] >= 1
    lightning_diffusion_main(
        [
            "sample",
            str(checkpoint),
            "--out",
            str(tmp_path / "samples"),
            "--scales",
            "1",
            "--per_class",
            "1",
            "--sampler.steps",
            "2",
        ]
    )
    warning = f"{checkpoint}: this checkpoint trained {record['steps']} steps, fewer than the 1000000000"
    assert warning in caplog.text


def test_checkpoints_without_a_budget_record_sample_quietly():
    assert checkpoint_warning({}) is None
    assert checkpoint_warning({CHECKPOINT_KEY: BudgetRecord(5000, 300, True).as_dict()}) is None
