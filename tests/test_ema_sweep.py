"""EMA length as a sweep axis: evaluate.py sweeps (sigma_rel, method, scale) over a folder of post-hoc EMA
snapshots, each length rebuilt once and cached; rows carry an ``ema`` column, frontier.csv chooses length
and scale together, curves.png draws a curve per length; bad input is refused with the reason."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from test_posthoc_ema import train_snapshots
from test_sweep import save_component, tiny_evaluator
from tiny import digits_datamodule, quiet_trainer, tiny_denoiser

import evaluate
from callbacks import GuidanceSweep, PostHocEMA
from lightning_diffusion.config import ConfigError
from lightning_diffusion.ema.reconstruct import reconstructed_checkpoint
from lightning_diffusion.ema.snapshots import write_snapshot
from lightning_diffusion.ema.tracker import PowerEMA
from lightning_diffusion.sweep import read_rows
from lightning_diffusion.sweep.curves import curve_of

COMPARED = ("fid", "inception_score", "precision", "recall", "class_accuracy", "nfe")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ema")
    data = dict(digits_datamodule().hparams)
    train_snapshots(folder / "snapshots", steps=100, data=data)
    train_snapshots(folder / "mixed", steps=50, data=data)
    other = tiny_denoiser(num_classes=5)
    state = PowerEMA(other, [0.05, 0.10]).state_dict()
    write_snapshot(folder / "mixed", 75, {"kind": "denoiser", "spec": other.spec}, data, state, {})
    return {
        "mixed": folder / "mixed",
        "snapshots": folder / "snapshots",
        "evaluator": Path(save_component(tiny_evaluator(), folder / "evaluator.ckpt")),
        "plain": Path(save_component(tiny_denoiser(), folder / "plain.ckpt", with_data=True)),
    }


def ema_args(denoiser: Path, evaluator: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--denoiser", str(denoiser), "--evaluator", str(evaluator), "--out", str(out),
        "--cache_dir", str(out.parent / "cache"), "--methods", "[cfg]", "--scales", "[0,2]",
        "--sampler.steps", "2", "--num_samples", "8", "--batch_size", "8", "--grid_size", "4",
        "--wandb", "false", *extra,
    ]  # fmt: skip


def test_sweep_over_ema_lengths(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    rows = evaluate.main(
        ema_args(inputs["snapshots"], inputs["evaluator"], out, "--ema_lengths", "[0.05,0.1]")
    )
    assert [(row["ema"], row["scale"]) for row in rows] == [(0.05, 0.0), (0.05, 2.0), (0.1, 0.0), (0.1, 2.0)]
    cached = sorted(path.name for path in (inputs["snapshots"] / "reconstructed").iterdir())
    assert len(cached) == 2 and cached[0].startswith("ema0.05-") and cached[1].startswith("ema0.1-")
    # the 0.1 rows are those of a sweep of the rebuilt checkpoint: the weights were swapped in for them
    alone = evaluate.main(
        ema_args(reconstructed_checkpoint(inputs["snapshots"], 0.1), inputs["evaluator"], tmp_path / "alone")
    )
    for ema_row, plain_row in zip(rows[2:], alone, strict=True):
        assert plain_row["ema"] is None
        for key in COMPARED:  # the Inception score draws its splits from the global generator
            assert ema_row[key] == pytest.approx(plain_row[key], rel=1e-5), key
    assert rows[0]["fid"] != rows[2]["fid"]
    with open(out / "frontier.csv") as handle:
        frontier = list(csv.DictReader(handle))
    assert (
        "ema" in frontier[0]
        and (out / "curves.png").is_file()
        and (out / "grid_cfg_ema0.05_s0.png").is_file()
    )
    assert (
        evaluate.main(ema_args(inputs["snapshots"], inputs["evaluator"], out, "--ema_lengths", "[0.05,0.1]"))
        == rows
    )


def test_curve_per_length() -> None:
    assert curve_of({"method": "cfg", "ema": 0.05}) == "cfg σ_rel=0.05"
    assert curve_of({"method": "cfg", "ema": None}) == "cfg"


@pytest.mark.parametrize(
    ("denoiser", "extra", "phrases"),
    [
        (
            "plain",
            ["--ema_lengths", "[0.05]"],
            ["is a plain checkpoint (no snapshots)", "callbacks.PostHocEMA"],
        ),
        ("snapshots", [], ["is a folder of post-hoc EMA snapshots", "--ema_lengths"]),
        ("snapshots", ["--ema_lengths", "[0.0,0.1]"], ["must be a number above 0"]),
        ("snapshots", ["--ema_lengths", "[0.003]"], ["beyond what the", "express sigma_rel"]),
        ("snapshots", ["--ema_lengths", "[0.05]", "--guide_ema_length", "0.05"], ["needs such a folder"]),
        (
            "mixed",
            ["--ema_lengths", "[0.05]"],
            ["mixes snapshots of different runs", "num_classes (5 vs 10)"],
        ),
    ],
)
def test_bad_ema_input_is_refused(
    inputs: dict[str, Path], tmp_path: Path, denoiser: str, extra: list[str], phrases: list[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        evaluate.main(ema_args(inputs[denoiser], inputs["evaluator"], tmp_path / "out", *extra))
    message = str(refused.value.code)
    print(message)
    assert all(phrase in message for phrase in phrases), message


def test_guidance_sweep_sweeps_the_lengths_at_the_end_of_training(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    settings = {"scales": [0, 2], "num_samples": 6, "batch_size": 6, "sampler": {"steps": 2}}
    callback = GuidanceSweep(
        evaluator=str(inputs["evaluator"]), every_n_epochs=1, cache_dir=str(tmp_path / "cache"),
        settings={**settings, "ema_lengths": [0.05, 0.1]},
    )  # fmt: skip
    trainer = quiet_trainer(
        max_steps=8, limit_val_batches=1, val_check_interval=4, check_val_every_n_epoch=None,
        callbacks=[callback, PostHocEMA(every_n_steps=2)], default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(tiny_denoiser(), datamodule=digits_datamodule())
    rows = read_rows(tmp_path / "sweeps" / "posthoc_ema")
    assert [(row["ema"], row["scale"]) for row in rows] == [(0.05, 0.0), (0.05, 2.0), (0.1, 0.0), (0.1, 2.0)]
    assert all(row["ema"] is None for row in read_rows(tmp_path / "sweeps" / "epoch0000"))
    with pytest.raises(ConfigError, match="has no PostHocEMA callback"):
        quiet_trainer(max_steps=1, callbacks=[callback]).fit(tiny_denoiser(), datamodule=digits_datamodule())
