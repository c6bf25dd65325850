"""Checkpoints are self-contained (a prior or unCLIP decoder carries its frozen encoder), plain data
(they load with ``weights_only=True``, resuming included) and safe (pickled code is refused, not run)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_cli import SMALL_NET, encoder_checkpoint_for, quiet
from tiny import REPO

import train
from lightning_diffusion.atomic import atomic_write
from lightning_diffusion.checkpoint_io import SafeCheckpointIO
from lightning_diffusion.config import ConfigError
from lightning_diffusion.registry import load_component

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = REPO / "configs" / "shapes"
SMALL_SHAPES = [
    "--data.init_args.source.init_args.num_train=64",
    "--data.init_args.source.init_args.num_test=8",
    "--data.init_args.batch_size=8",
    "--trainer.precision=32-true",
    "--trainer.limit_val_batches=0",
]
SMALL_NETS = {
    "unclip_decoder": [*SMALL_NET, "--model.init_args.text_encoder.init_args.layers=1"],
    "prior": ["--model.init_args.net.init_args.width=32", "--model.init_args.net.init_args.layers=1"],
}


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(sys, "argv", ["train.py"])


def fit(config: str, root: Path, encoder: str, *extra: str) -> Path:
    """Fit the shapes ``config`` (small nets and data) on ``encoder``; the run's ``last.ckpt``."""
    path = SHAPES / f"{config}.yaml"
    args = ["fit", "--config", str(path), *quiet(root), *SMALL_SHAPES, *SMALL_NETS[config]]
    train.main(args=[*args, "--model.init_args.encoder", encoder, *extra])
    return root / "checkpoints" / "last.ckpt"


def probe(model: torch.nn.Module) -> torch.Tensor:
    """The denoiser's estimate for fixed noisy inputs and captions (identical weights, identical output)."""
    generator = torch.Generator().manual_seed(0)
    captions = ["a small red circle at the top", "a large blue square at the left"]
    shape = (2, *model.sample_shape)
    with torch.no_grad():
        return model.denoise(
            torch.randn(shape, generator=generator), torch.tensor([0.3, 0.8]), {"caption": captions}
        )


@pytest.mark.parametrize("config", ["unclip_decoder", "prior"])
def test_a_checkpoint_carries_its_frozen_encoder_and_needs_not_its_file(config, tmp_path):
    content = yaml.safe_load((SHAPES / f"{config}.yaml").read_text())
    encoder = encoder_checkpoint_for(
        SHAPES / f"{config}.yaml", content["model"]["init_args"], tmp_path / "e.ckpt"
    )
    last = fit(config, tmp_path / "run", encoder, "--trainer.max_steps=2")
    before = load_component(last)
    original_encoder = load_component(encoder)

    os.remove(encoder)
    after = load_component(last)

    torch.testing.assert_close(probe(after), probe(before), rtol=0, atol=0)
    for key, value in original_encoder.state_dict().items():  # EMA rounds the frozen weights: 3e-8 apart
        torch.testing.assert_close(after.encoder.state_dict()[key], value, rtol=0, atol=1e-6)
    assert after.spec["init_args"]["encoder"]["trained_from"] == encoder

    resumed = fit(config, tmp_path / "run", encoder, "--trainer.max_steps=3", "--ckpt_path=last")
    assert torch.load(resumed, weights_only=True)["global_step"] == 3


def test_a_missing_encoder_file_is_still_refused_when_training_starts(tmp_path):
    """(jsonargparse wraps the model's ConfigError in a ValueError listing what it tried.)"""
    with pytest.raises(ValueError, match="does not exist; train one"):
        fit("prior", tmp_path / "run", str(tmp_path / "nowhere.ckpt"), "--trainer.max_steps=1")


def test_checkpoints_of_a_run_and_its_resume_are_plain_data(tmp_path, caplog):
    """train.py writes and resumes weights-only checkpoints (EMA callback state included), and never
    leaves Lightning to default ``weights_only``."""
    content = yaml.safe_load((SHAPES / "unclip_decoder.yaml").read_text())
    encoder = encoder_checkpoint_for(
        SHAPES / "unclip_decoder.yaml", content["model"]["init_args"], tmp_path / "e.ckpt"
    )
    with caplog.at_level(logging.INFO):
        fit("unclip_decoder", tmp_path / "run", encoder, "--trainer.max_steps=2")
        last = fit("unclip_decoder", tmp_path / "run", encoder, "--trainer.max_steps=3", "--ckpt_path=last")
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 3 and checkpoint["callbacks"]
    assert "weights_only` was not set" not in caplog.text


def write_witness(path: str) -> None:
    Path(path).touch()


class WritesAFile:
    """Pickled code: unpickling it (``weights_only=False``) would call ``write_witness(path)``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (write_witness, (str(self.path),))


def pickled_code_checkpoint(path: Path, witness: Path) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": {"hook": WritesAFile(witness)}}, path)
    return path


def test_a_checkpoint_holding_pickled_code_is_refused_and_not_run(tmp_path):
    witness = tmp_path / "ran.txt"
    path = pickled_code_checkpoint(tmp_path / "evil.ckpt", witness)
    with pytest.raises(ConfigError) as error:
        load_component(path)
    message = str(error.value)
    assert str(path) in message and "pickled Python objects (test_checkpoints.write_witness)" in message
    assert "will not execute them" in message and "pass a checkpoint written by train.py" in message
    assert not witness.exists()


def test_resuming_from_a_checkpoint_holding_pickled_code_is_refused_and_not_run(tmp_path):
    witness = tmp_path / "ran.txt"
    path = pickled_code_checkpoint(tmp_path / "evil.ckpt", witness)
    args = ["fit", "--config", str(REPO / "configs" / "digits" / "denoiser.yaml"), *quiet(tmp_path)]
    with pytest.raises(ConfigError, match="holds pickled Python objects"):
        train.main(args=[*args, *SMALL_NET, "--trainer.max_steps=1", f"--ckpt_path={path}"])
    with pytest.raises(ConfigError, match="holds pickled Python objects"):
        SafeCheckpointIO().load_checkpoint(path)
    assert not witness.exists()


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path):
    path = tmp_path / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, path)

    def fail_halfway(handle) -> None:
        handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail_halfway)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
