"""Guidance sweeps: outputs, resume, DDP equivalence, exact sample counts and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import REPO, digits_datamodule, tiny_denoiser

import evaluate
from lightning_diffusion.components import Evaluator, NoisyClassifier
from lightning_diffusion.config import ConfigError
from lightning_diffusion.nets import ConvClassifier, EncoderUNet
from lightning_diffusion.registry import CHECKPOINT_KEY
from lightning_diffusion.sweep import ROW_KEYS, SweepSettings, read_rows

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: spare threads only stall them

METRICS = ("fid", "inception_score", "precision", "recall", "class_accuracy", "nfe")


def save_component(model: torch.nn.Module, path: Path, with_data: bool = False) -> str:
    """Write the parts of a checkpoint ``load_component`` and evaluate.py read (no Trainer needed)."""
    record = {"kind": model.component_kind, "spec": model.spec}
    checkpoint = {"state_dict": model.state_dict(), CHECKPOINT_KEY: record}
    if with_data:
        checkpoint["datamodule_hyper_parameters"] = dict(digits_datamodule().hparams)
    torch.save(checkpoint, path)
    return str(path)


def tiny_evaluator(num_classes: int = 10) -> Evaluator:
    torch.manual_seed(1)
    net = ConvClassifier(in_channels=1, num_classes=num_classes, channels=(8, 16), feature_dim=16)
    return Evaluator(net, image_shape=(1, 8, 8), num_classes=num_classes)


def tiny_classifier() -> NoisyClassifier:
    torch.manual_seed(2)
    net = EncoderUNet(in_channels=1, out_dim=10, channels=(8, 16), num_res_blocks=1)
    return NoisyClassifier(net, image_shape=(1, 8, 8), num_classes=10)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "denoiser": save_component(tiny_denoiser(), folder / "denoiser.ckpt", with_data=True),
        "guide": save_component(tiny_denoiser(seed=5), folder / "guide.ckpt", with_data=True),
        "evaluator": save_component(tiny_evaluator(), folder / "evaluator.ckpt"),
        "evaluator5": save_component(tiny_evaluator(5), folder / "evaluator5.ckpt"),
        "classifier": save_component(tiny_classifier(), folder / "classifier.ckpt"),
    }


def sweep_args(checkpoints: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [
        "--denoiser", checkpoints["denoiser"], "--evaluator", checkpoints["evaluator"],
        "--classifier", checkpoints["classifier"],
        "--out", str(out), "--cache_dir", str(out.parent / "cache"),
        "--sampler.steps", "3", "--num_samples", "12", "--batch_size", "5", "--wandb", "false", *extra,
    ]  # fmt: skip


def test_sweep_writes_rows_table_curves_grids_and_samples(checkpoints, tmp_path):
    out = tmp_path / "sweep"
    args = sweep_args(checkpoints, out, "--methods", "[cfg,classifier]", "--scales", "[0,1,2]")
    args += ["--save_samples", "true"]
    rows = evaluate.main(args)
    expected = [(method, scale) for method in ("cfg", "classifier") for scale in (0.0, 1.0, 2.0)]
    assert [(row["method"], row["scale"]) for row in rows] == expected
    written = json.loads((out / "sweep.json").read_text())
    assert written == rows and all(set(row) == set(ROW_KEYS) for row in written)
    assert all(np.isfinite(row[key]) for row in rows for key in METRICS)
    assert [row["nfe"] for row in rows[:3]] == [3, 3, 6]  # CFG batches conditional + null at s > 1
    assert (out / "sweep.csv").read_text().count("\n") == 7
    assert (out / "curves.png").stat().st_size > 0
    for tag in ("cfg_s0", "cfg_s2", "classifier_s1"):
        assert (out / f"grid_{tag}.png").is_file()
    samples = np.load(out / "samples_cfg_s2.npz")  # guided-diffusion's batch format
    assert samples["arr_0"].shape == (12, 8, 8, 1) and samples["arr_0"].dtype == np.uint8
    assert samples["arr_1"].shape == (12,) and samples["arr_1"].max() < 10


def test_every_scale_sees_the_same_labels_and_noise(checkpoints, tmp_path):
    """Common random numbers: CFG at s = 1 and classifier guidance at s = 0 are both plain conditional
    sampling, so with the same labels and noise they give identical samples."""
    out = tmp_path / "sweep"
    evaluate.main(sweep_args(checkpoints, out, "--methods", "[cfg,classifier]", "--scales",
                             "{cfg: [1], classifier: [0]}", "--save_samples", "true"))  # fmt: skip
    cfg, classifier = np.load(out / "samples_cfg_s1.npz"), np.load(out / "samples_classifier_s0.npz")
    np.testing.assert_array_equal(cfg["arr_1"], classifier["arr_1"])
    np.testing.assert_array_equal(cfg["arr_0"], classifier["arr_0"])


def test_a_killed_sweep_resumes_without_losing_finished_scales(checkpoints, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    import lightning_diffusion.sweep.outputs as sweep_module

    real_write = sweep_module.write_rows

    def write_then_die(folder, rows):
        real_write(folder, rows)
        if len(rows) == 2:
            raise KeyboardInterrupt("killed after two rows")

    monkeypatch.setattr(sweep_module, "write_rows", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(sweep_args(checkpoints, out, "--methods", "[cfg]", "--scales", "[0,1,2,3]"))
    finished = read_rows(out)
    assert [row["scale"] for row in finished] == [0.0, 1.0]
    monkeypatch.setattr(sweep_module, "write_rows", real_write)
    rows = evaluate.main(sweep_args(checkpoints, out, "--methods", "[cfg]", "--scales", "[0,1,2,3]"))
    assert [row["scale"] for row in rows] == [0.0, 1.0, 2.0, 3.0]
    assert rows[:2] == finished  # kept as they were, not recomputed


def test_real_reference_features_are_cached_on_disk(checkpoints, tmp_path):
    evaluate.main(sweep_args(checkpoints, tmp_path / "a", "--scales", "[1]"))
    cached = list((tmp_path / "cache").glob("real_*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    evaluate.main(sweep_args(checkpoints, tmp_path / "b", "--scales", "[1]"))
    assert [p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("real_*.pt")] == [stamp]
    evaluate.main(sweep_args(checkpoints, tmp_path / "c", "--scales", "[1]", "--num_real", "20"))
    assert len(list((tmp_path / "cache").glob("real_*.pt"))) == 2  # another N is another reference


def test_autoguidance_and_interval_rows(checkpoints, tmp_path):
    out = tmp_path / "sweep"
    rows = evaluate.main(
        sweep_args(checkpoints, out, "--guide", checkpoints["guide"], "--scales", "[1,2]",
                   "--methods", "[autoguidance,cfg_interval]", "--interval", "[0.5,3.0]")
    )  # fmt: skip
    nfe = {(row["method"], row["scale"]): row["nfe"] for row in rows}
    assert nfe[("autoguidance", 1.0)] == 3  # s = 1 skips the guide
    assert nfe[("autoguidance", 2.0)] == 6  # the guide is a second network
    assert 3 < nfe[("cfg_interval", 2.0)] < 6  # two passes only inside the interval


def run_evaluate(args: list[str], devices: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), *args, "--devices", str(devices), "--accelerator", "cpu"],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip


def test_two_cpu_processes_give_the_same_sweep_as_one(checkpoints, tmp_path):
    """N = 37 with batch 8 over 2 DDP processes: 37 samples, each as on 1 process, same metrics (1e-6)."""
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"devices{devices}"
        args = sweep_args(checkpoints, out, "--methods", "[cfg,classifier]", "--scales", "[0,2]",
                          "--num_samples", "37", "--batch_size", "8", "--save_samples", "true")  # fmt: skip
        done = run_evaluate(args, devices)
        assert done.returncode == 0, done.stderr[-3000:]
        results[devices] = out
    one, two = read_rows(results[1]), read_rows(results[2])
    assert len(one) == len(two) == 4
    for row_one, row_two in zip(one, two, strict=True):
        assert (row_one["method"], row_one["scale"]) == (row_two["method"], row_two["scale"])
        for key in METRICS:
            assert row_two[key] == pytest.approx(row_one[key], abs=1e-6, rel=1e-6), key
    for tag in ("cfg_s0", "cfg_s2", "classifier_s2"):
        a, b = np.load(results[1] / f"samples_{tag}.npz"), np.load(results[2] / f"samples_{tag}.npz")
        assert a["arr_0"].shape[0] == b["arr_0"].shape[0] == 37
        np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
        np.testing.assert_array_equal(a["arr_1"], b["arr_1"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scales", "[]"], "scales"),
        (["--methods", "[cfg,magic]"], "magic"),
        (["--num_samples", "0"], "num_samples"),
        (["--num_samples", "-3"], "num_samples"),
        (["--sampler.name", "euler"], "unknown sampler 'euler'; choose one of ddim"),
        (["--sampler.name", "heun", "--sampler.eta", "0.5"], "heun sampler does not use eta"),
    ],
)
def test_bad_sweep_settings_are_clear_errors(checkpoints, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(sweep_args(checkpoints, tmp_path / "sweep", *extra))
    assert exit_info.value.code != 0
    error = capsys.readouterr().err + str(exit_info.value.code)
    assert message in error and "Traceback" not in error


def test_a_denoiser_passed_as_classifier_names_its_kind(checkpoints, tmp_path):
    args = sweep_args(checkpoints, tmp_path / "sweep")
    args[args.index("--classifier") + 1] = checkpoints["denoiser"]
    with pytest.raises(SystemExit, match=r"kind 'denoiser'.*not of kind 'noisy_classifier'"):
        evaluate.main(args)


def test_an_evaluator_of_another_data_set_is_refused(checkpoints, tmp_path):
    args = sweep_args(checkpoints, tmp_path / "sweep")
    args[args.index("--evaluator") + 1] = checkpoints["evaluator5"]
    with pytest.raises(
        SystemExit,
        match=r"the evaluator \(.*evaluator5.ckpt\) was trained on other data than the denoiser "
        r"\(.*denoiser.ckpt\): 5 classes vs 10; pass an evaluator trained on the denoiser's data, or "
        "--allow_cross_data",
    ):
        evaluate.main(args)


def test_settings_validation_lists_methods():
    with pytest.raises(ConfigError, match="apg, autoguidance, autoguidance_interval, cascade, cfg,"):
        SweepSettings(methods=["nope"]).validate()


def test_guidance_sweep_callback_runs_the_sweep_during_training(checkpoints, tmp_path, monkeypatch):
    from tiny import quiet_trainer

    import callbacks.guidance_sweep as callback_module
    from callbacks import GuidanceSweep

    calls = []
    real_run_sweep = callback_module.run_sweep

    def counting_run_sweep(*args, **kwargs):
        calls.append(1)
        return real_run_sweep(*args, **kwargs)

    monkeypatch.setattr(callback_module, "run_sweep", counting_run_sweep)
    callback = GuidanceSweep(
        evaluator=checkpoints["evaluator"], every_n_epochs=1, cache_dir=str(tmp_path / "cache"),
        settings={"scales": [0, 2], "num_samples": 6, "batch_size": 6, "sampler": {"steps": 2}},
    )  # fmt: skip
    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, callbacks=[callback],
        default_root_dir=str(tmp_path), num_sanity_val_steps=1,
    )  # fmt: skip
    trainer.fit(tiny_denoiser(), datamodule=digits_datamodule())
    rows = read_rows(tmp_path / "sweeps" / "epoch0000")
    assert [(row["method"], row["scale"]) for row in rows] == [("cfg", 0.0), ("cfg", 2.0)]
    assert len(calls) == 1  # not during the sanity check


def tiny_cascade_stages(folder: Path, base_size: int) -> list[str]:
    """A tiny class-conditional base at ``base_size`` and an upsampler from 4x4 to 8x8, saved."""
    from tiny import COND_DIM, tiny_unet

    from lightning_diffusion.components import Denoiser, Upsampler
    from lightning_diffusion.nets import UNet

    torch.manual_seed(0)
    base = Denoiser(tiny_unet(), image_shape=(1, base_size, base_size), num_classes=10)
    net = UNet(in_channels=2, out_channels=1, channels=(8, 16), num_res_blocks=1, cond_dim=COND_DIM)
    upsampler = Upsampler(net, image_shape=(1, 8, 8), low_res_size=4)
    return [save_component(base, folder / "base.ckpt"), save_component(upsampler, folder / "up.ckpt")]


def test_cascade_rows_sit_next_to_the_final_resolution_denoiser(checkpoints, tmp_path):
    stages = tiny_cascade_stages(tmp_path, base_size=4)
    extra = ["--methods", "[cfg,cascade]", "--scales", "[1,2]", "--cascade", f"[{','.join(stages)}]"]
    rows = evaluate.main(sweep_args(checkpoints, tmp_path / "sweep", *extra, "--aug_level", "0.2"))
    assert [(row["method"], row["scale"]) for row in rows] == [
        ("cfg", 1.0), ("cfg", 2.0), ("cascade", 1.0), ("cascade", 2.0)
    ]  # fmt: skip
    # 3 steps per stage: the base doubles its rows under CFG (s = 2), the upsampler runs at s = 1
    assert [row["nfe"] for row in rows[2:]] == [3 + 3, 6 + 3]
    assert all(row["class_accuracy"] is not None for row in rows)


def test_a_cascade_whose_stages_do_not_chain_is_refused(checkpoints, tmp_path):
    stages = tiny_cascade_stages(tmp_path, base_size=2)
    with pytest.raises(SystemExit, match=r"stage 1 \(Upsampler, 1x8x8\) takes low-res images of shape"):
        evaluate.main(
            sweep_args(checkpoints, tmp_path / "s", "--methods", "[cascade]", "--cascade", str(stages))
        )


def test_class_accuracy_of_cascade_rows_follows_the_cascade_base_not_the_denoiser():
    from types import SimpleNamespace

    from lightning_diffusion.sweep import SweepModels, get_sweep_method

    conditional, unconditional = SimpleNamespace(num_classes=10), SimpleNamespace(num_classes=None)
    models = SweepModels(conditional, None, {"cascade": unconditional})
    assert get_sweep_method("cfg").conditioned(models) and not get_sweep_method("cascade").conditioned(models)
