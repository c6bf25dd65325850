"""Post-hoc EMA (EDM2 sec. 3, appendix C): the profile math against closed forms, reconstruction from
snapshots (a tracked profile exactly, a held-out one within a stated tolerance), the callback's snapshots
and an interrupted run resumed from last.ckpt continuing the profiles exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny import quiet_trainer, run_module, tiny_denoiser
from torch import nn
from torch.utils.data import DataLoader, Dataset

from callbacks import PostHocEMA
from lightning_diffusion.checkpoint_io import SafeCheckpointIO
from lightning_diffusion.components import Denoiser
from lightning_diffusion.config import ConfigError
from lightning_diffusion.ema.profiles import gamma_of, sigma_rel_of, solve_weights, step_weights
from lightning_diffusion.ema.reconstruct import reconstruct, reconstructed_checkpoint
from lightning_diffusion.ema.snapshots import load_snapshot, read_snapshots, thin_snapshots, write_snapshot
from lightning_diffusion.ema.tracker import PowerEMA
from lightning_diffusion.registry import read_checkpoint

HELD_OUT_TOLERANCE = 0.02  # ‖rebuilt - tracked‖ / ‖tracked - nearest snapshot profile‖ for sigma_rel 0.07


class Scalar(nn.Module):
    """A "model" of one float64 parameter, set by hand to a known sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros((), dtype=torch.float64))


def test_gamma_matches_edm2_and_round_trips() -> None:
    # EDM2 sec. 3.1: sigma_rel 0.05 is gamma 16.97, 0.10 is gamma 6.94
    assert gamma_of(0.05) == pytest.approx(16.97, abs=0.01)
    assert gamma_of(0.10) == pytest.approx(6.94, abs=0.01)
    for sigma_rel in (0.01, 0.05, 0.2, 0.28):
        assert sigma_rel_of(gamma_of(sigma_rel)) == pytest.approx(sigma_rel, rel=1e-9)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.2])
def test_scalar_sequence_gives_the_power_function_average(sigma_rel: float) -> None:
    """theta = 1 for the first k steps, then 0: the average at t is (k/t)^(gamma+1) exactly; theta = tau:
    the average tends to the continuous profile's mean (gamma+1)/(gamma+2) t."""
    gamma, t, k = gamma_of(sigma_rel), 400, 300
    step_model, linear_model = Scalar(), Scalar()
    step_ema, linear_ema = PowerEMA(step_model, [sigma_rel]), PowerEMA(linear_model, [sigma_rel])
    for tau in range(1, t + 1):
        with torch.no_grad():
            step_model.theta.fill_(1.0 if tau <= k else 0.0)
            linear_model.theta.fill_(float(tau))
        step_ema.update(tau)
        linear_ema.update(tau)
    assert step_ema.averages[0][0].item() == pytest.approx((k / t) ** (gamma + 1), rel=1e-9)
    assert linear_ema.averages[0][0].item() == pytest.approx((gamma + 1) / (gamma + 2) * t, rel=2e-3)
    assert step_weights(t, gamma).sum() == pytest.approx(1.0)


def test_solve_weights_is_exact_on_a_snapshot_profile() -> None:
    weights, error = solve_weights([100, 200, 100, 200], [6.94, 6.94, 16.97, 16.97], 200, 16.97)
    assert weights == pytest.approx([0, 0, 0, 1], abs=1e-6) and error < 1e-6


def train_snapshots(
    folder: Path, steps: int = 400, every: int = 25, extra: float | None = None, data: dict | None = None
) -> dict:
    """A tiny denoiser whose weights random-walk (like SGD) for ``steps`` steps, snapshots of profiles 0.05
    and 0.10 every ``every`` steps in ``folder`` (``data``: their data record); returns the last tracked
    averages (and an ``extra`` profile tracked beside them, not in the snapshots)."""
    model = tiny_denoiser()
    tracked = PowerEMA(model, [0.05, 0.10])
    held_out = PowerEMA(model, [extra]) if extra is not None else None
    generator = torch.Generator().manual_seed(1)
    component = {"kind": "denoiser", "spec": model.spec}
    parameters = {name for name, _ in model.named_parameters()}
    for step in range(1, steps + 1):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
        tracked.update(step)
        if held_out is not None:
            held_out.update(step)
        if step % every == 0:
            buffers = {n: b for n, b in model.state_dict().items() if n not in parameters}
            record = {"source": "test"} if data is None else data
            write_snapshot(folder, step, component, record, tracked.state_dict(), buffers)
    return {
        "tracked": tracked.average_state_dicts(),
        "held_out": held_out.average_state_dicts()[0] if held_out is not None else None,
    }


def distance(first: dict, second: dict) -> float:
    return math.sqrt(sum(float((first[name] - second[name]).double().pow(2).sum()) for name in second))


def test_reconstructing_a_tracked_profile_is_exact(tmp_path: Path) -> None:
    averages = train_snapshots(tmp_path)["tracked"]
    for index, sigma_rel in enumerate((0.05, 0.10)):
        rebuilt = reconstruct(tmp_path, sigma_rel).state_dict()
        for name, tensor in averages[index].items():
            torch.testing.assert_close(rebuilt[name], tensor, rtol=1e-5, atol=1e-6)


def test_held_out_profile_is_rebuilt_from_the_two_tracked_ones(tmp_path: Path) -> None:
    result = train_snapshots(tmp_path, extra=0.07)
    rebuilt = reconstruct(tmp_path, 0.07).state_dict()
    nearest = min(distance(average, result["held_out"]) for average in result["tracked"])
    error = distance(rebuilt, result["held_out"]) / nearest
    print(f"held-out sigma_rel 0.07: error {error:.4f} of the gap to the nearest tracked profile")
    assert error < HELD_OUT_TOLERANCE
    assert distance(reconstruct(tmp_path, 0.10).state_dict(), result["held_out"]) > 5 * distance(
        rebuilt, result["held_out"]
    )  # the test can fail: another length is far off


def test_reconstruction_is_cached_and_self_describing(tmp_path: Path) -> None:
    train_snapshots(tmp_path, steps=100)
    path = reconstructed_checkpoint(tmp_path, 0.07)
    assert path.parent == tmp_path / "reconstructed" and "ema0.07-" in path.name
    modified = path.stat().st_mtime_ns
    assert reconstructed_checkpoint(tmp_path, 0.07) == path and path.stat().st_mtime_ns == modified
    checkpoint = read_checkpoint(path)
    assert checkpoint["lightning_diffusion"]["kind"] == "denoiser"
    assert checkpoint["posthoc_ema_reconstruction"]["sigma_rel"] == 0.07


@pytest.mark.parametrize(
    ("sigma_rel", "phrase"),
    [(0.0, "above 0"), (-0.1, "above 0"), (0.35, "wider than any"), (0.003, "beyond what the")],
)
def test_lengths_outside_the_snapshots_are_refused(tmp_path: Path, sigma_rel: float, phrase: str) -> None:
    train_snapshots(tmp_path, steps=100)
    with pytest.raises(ConfigError, match=phrase) as refused:
        reconstruct(tmp_path, sigma_rel)
    if phrase == "beyond what the":
        assert "express sigma_rel 0.0" in str(refused.value)


def test_folders_without_or_with_mixed_snapshots_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no post-hoc EMA snapshots"):
        reconstruct(tmp_path, 0.05)
    train_snapshots(tmp_path, steps=50)
    other = tiny_denoiser(num_classes=5)
    state = PowerEMA(other, [0.05, 0.10]).state_dict()
    write_snapshot(tmp_path, 75, {"kind": "denoiser", "spec": other.spec}, {"source": "test"}, state, {})
    with pytest.raises(ConfigError, match=r"mixes snapshots of different runs.*num_classes \(5 vs 10\)"):
        reconstruct(tmp_path, 0.05)


def test_thinning_keeps_the_first_and_last(tmp_path: Path) -> None:
    train_snapshots(tmp_path, steps=200)
    removed = thin_snapshots(tmp_path, keep=3)
    assert len(removed) == 5
    assert [snapshot.step for snapshot in read_snapshots(tmp_path)] == [25, 125, 200]


class Repeated(Dataset):
    """The same 8 digits-shaped images every epoch (one batch), so a resumed run sees the batches an
    uninterrupted one does."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        return {"image": torch.rand(1, 8, 8, generator=generator) * 2 - 1, "label": torch.tensor(index % 10)}


class SeededDenoiser(Denoiser):
    """A denoiser whose training draws (times, noise, dropout) depend on the step only, so an interrupted
    run's weights follow an uninterrupted run's exactly."""

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        torch.manual_seed(1000 + self.global_step)
        return super().training_step(batch, batch_index)


def fit_run(root: Path, max_steps: int, ckpt_path: str | None = None) -> Path:
    torch.manual_seed(0)
    model = SeededDenoiser(tiny_denoiser().net, image_shape=(1, 8, 8), num_classes=10)
    folder = root / "snapshots"
    trainer = quiet_trainer(
        max_steps=max_steps,
        enable_checkpointing=True,
        callbacks=[PostHocEMA(every_n_steps=4, dirpath=str(folder)), ModelCheckpoint(root, save_last=True)],
        plugins=[SafeCheckpointIO()],
        default_root_dir=root,
    )
    trainer.fit(model, DataLoader(Repeated(), batch_size=8), ckpt_path=ckpt_path)
    return folder


def test_resumed_run_continues_the_profiles_exactly(tmp_path: Path) -> None:
    whole = fit_run(tmp_path / "whole", 10)
    fit_run(tmp_path / "parts", 6)  # stopped between the snapshots of steps 4 and 8
    parts = fit_run(tmp_path / "parts", 10, ckpt_path=str(tmp_path / "parts" / "last.ckpt"))
    assert [s.step for s in read_snapshots(whole)] == [4, 8, 10]
    assert [s.step for s in read_snapshots(parts)] == [4, 6, 8, 10]  # and the interrupted run's last step
    for step in (8, 10):
        first = load_snapshot(whole / f"snapshot-{step:09d}.pt")["posthoc_ema"]
        second = load_snapshot(parts / f"snapshot-{step:09d}.pt")["posthoc_ema"]
        assert first["step"] == second["step"] == step and first["profiles"] == second["profiles"]
        for average, resumed in zip(first["averages"], second["averages"], strict=True):
            for name, tensor in average.items():
                torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0)


def test_callback_snapshots_are_self_describing(tmp_path: Path) -> None:
    folder = fit_run(tmp_path, 4)
    content = read_checkpoint(folder / "snapshot-000000004.pt")
    assert content["lightning_diffusion"]["kind"] == "denoiser"
    assert [profile["sigma_rel"] for profile in content["posthoc_ema"]["profiles"]] == [0.05, 0.10]
    assert content["posthoc_ema"]["profiles"][0]["gamma"] == pytest.approx(16.97, abs=0.01)


def test_thin_snapshots_command(tmp_path: Path) -> None:
    train_snapshots(tmp_path, steps=100)
    reconstructed_checkpoint(tmp_path, 0.07)
    done = run_module("thin-snapshots", str(tmp_path), "--keep", "2")
    assert done.returncode == 0 and "removed 2 snapshots" in done.stdout, done.stderr
    assert [s.step for s in read_snapshots(tmp_path)] == [25, 100]
    assert not (tmp_path / "reconstructed").exists()
    refused = run_module("thin-snapshots", str(tmp_path / "none"), "--keep", "2")
    assert refused.returncode == 1 and "is not a folder of post-hoc EMA snapshots" in refused.stderr
