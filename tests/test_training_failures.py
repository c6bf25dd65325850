"""Training that goes wrong stops with the step and the fix: a loss that turns NaN (keeping the last finite
``last.ckpt``), and, at fit start, a data set smaller than one batch, labels the model has no class for,
and images the U-Net cannot halve enough times."""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pytest
import torch
from test_cli import fit_args
from test_no_sync import META, DeviceTraffic
from tiny import REPO, digits_datamodule, quiet_trainer, tiny_denoiser

import train
from callbacks.finite_loss import FiniteLossGuard, TrainingDiverged
from lightning_diffusion.components import Denoiser
from lightning_diffusion.config import ConfigError
from lightning_diffusion.nets import UNet
from lightning_diffusion.registry import read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

NAN_FROM_STEP = 3


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(sys, "argv", ["train.py"])


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch):
    original = Denoiser.training_step

    def diverging_training_step(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * math.nan if self.trainer.global_step + 1 >= NAN_FROM_STEP else loss

    monkeypatch.setattr(Denoiser, "training_step", diverging_training_step)
    root = tmp_path / "run"
    args = fit_args(root, "--trainer.max_steps=10", "--checkpoint.every_n_train_steps=1")

    with pytest.raises(TrainingDiverged) as error:
        train.main(args=args)

    message = str(error.value)
    assert f"became NaN or infinite at step {NAN_FROM_STEP} (epoch 0)" in message
    assert "learning rate too high" in message and "lower model.init_args.lr" in message
    assert "trainer.precision is 32-true" in message and "data" in message
    last = root / "checkpoints" / "last.ckpt"
    assert f"{last} keeps the weights of the last save before it" in message
    checkpoint = read_checkpoint(last)
    assert checkpoint["global_step"] == NAN_FROM_STEP - 1
    assert all(
        value.isfinite().all() for value in checkpoint["state_dict"].values() if value.is_floating_point()
    )


def test_the_guard_reads_nothing_back_from_an_accelerator_per_step():
    """Off the CPU the record stays on the device (meta stands in for it: any read fails there)."""
    guard = FiniteLossGuard()
    trainer = SimpleNamespace(global_step=1, world_size=1)
    with DeviceTraffic():
        for step in range(1, 4):
            trainer.global_step = step
            guard.on_train_batch_end(trainer, None, {"loss": torch.ones((), device=META)}, None, step)
    assert guard._record.device == META


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_guard_never_synchronises_and_stops_within_steps_of_a_nan():
    guard = FiniteLossGuard()
    trainer = SimpleNamespace(global_step=0, world_size=1, optimizers=[], checkpoint_callback=None)
    trainer.current_epoch, trainer.precision = 0, "32-true"
    losses = [torch.ones((), device="cuda")] * 3 + [torch.full((), math.nan, device="cuda")]
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step, loss in enumerate(losses, start=1):
            trainer.global_step = step
            guard.on_train_batch_end(trainer, None, {"loss": loss}, None, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    with pytest.raises(TrainingDiverged, match="at step 4 "):
        for step in range(5, 8):
            trainer.global_step = step
            guard.on_train_batch_end(trainer, None, {"loss": torch.ones((), device="cuda")}, None, step)


def test_a_data_set_smaller_than_one_batch_is_refused_at_fit_start():
    datamodule = digits_datamodule(batch_size=4096)
    with pytest.raises(ConfigError) as error:
        quiet_trainer(max_steps=1).fit(tiny_denoiser(), datamodule=datamodule)
    message = str(error.value)
    assert "has 1347 images, fewer than one batch of 4096" in message
    assert "lower data.init_args.batch_size to at most 1347" in message


def test_labels_the_model_has_no_class_for_are_refused_at_fit_start():
    with pytest.raises(ConfigError) as error:
        quiet_trainer(max_steps=1).fit(tiny_denoiser(num_classes=5), datamodule=digits_datamodule())
    assert (
        "the data has 10 classes but the model is configured for 5; set model.init_args.num_classes to 10"
        in str(error.value)
    )


def test_images_the_unet_cannot_halve_enough_times_are_refused_at_fit_start():
    """12x12 images through four levels (three halvings): 12 is not a multiple of 8."""
    net = UNet(in_channels=1, channels=(8, 8, 8, 8), num_res_blocks=1, attention_levels=(), cond_dim=16)
    model = Denoiser(net, image_shape=(1, 12, 12), num_classes=10)
    with pytest.raises(ConfigError) as error:
        quiet_trainer(max_steps=1).fit(model, datamodule=digits_datamodule(image_size=12))
    message = str(error.value)
    assert "height and width must be multiples of 2**3 = 8, but they are 12x12" in message
    assert "use at most 3 levels in model.init_args.net.init_args.channels" in message
    assert "pad the images to 16x16 (data.init_args.image_size: 16" in message
