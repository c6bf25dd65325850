"""Inception-V3 features through torch-fidelity: the sweep end to end with a weights file the test writes
(torch-fidelity's architecture, random weights), the reference cache, and the offline error."""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import pytest
import torch
from test_sweep import save_component, tiny_evaluator
from tiny import digits_datamodule, quiet_trainer, tiny_denoiser

import evaluate
from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import FeatureInputs, build_features
from lightning_diffusion.metrics.features import inception_weights_url
from lightning_diffusion.sweep import read_rows

COMPLETE = ("fid", "inception_score", "precision", "recall", "nfe", "seconds")


def write_random_inception_weights(path: Path) -> str:
    """torch-fidelity's Inception-V3 with He-initialised random weights (activations keep their scale
    through the 90 layers), saved as the state dict its ``feature_extractor_weights_path`` loads."""
    from torch_fidelity import feature_extractor_inceptionv3 as inception

    with pytest.MonkeyPatch.context() as patch:  # build the architecture without loading any weights
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: None)
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        model = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            fan_in = module.weight[0].numel()
            module.weight.data = torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("inception")
    return {
        "weights": write_random_inception_weights(folder / "inception.pth"),
        "denoiser": save_component(tiny_denoiser(), folder / "denoiser.ckpt", with_data=True),
        "evaluator": save_component(tiny_evaluator(), folder / "evaluator.ckpt"),
    }


def inception_sweep(
    files: dict[str, str], out: Path, *extra: str, weights: bool = True, scales: str = "[0,2]"
) -> list[str]:
    return [
        "--features", "inception", *(["--inception_weights", files["weights"]] if weights else []),
        "--denoiser", files["denoiser"],
        "--out", str(out), "--cache_dir", str(out.parent / "cache"), "--scales", scales,
        "--sampler.steps", "2", "--num_samples", "8", "--num_real", "8", "--batch_size", "8",
        "--wandb", "false", *extra,
    ]  # fmt: skip


def test_inception_sweep_rows_are_complete_and_a_second_run_encodes_no_real_image(files, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lightning_diffusion.sweep")
    first = evaluate.main(inception_sweep(files, tmp_path / "first", "--evaluator", files["evaluator"]))
    assert "reference features: 8 real images encoded with inception-v3:" in caplog.text
    assert [(row["method"], row["scale"]) for row in first] == [("cfg", 0.0), ("cfg", 2.0)]
    for row in first:
        assert all(row[key] is not None for key in (*COMPLETE, "class_accuracy")), row
        assert row["fid"] > 0 and row["inception_score"] >= 1
    cached = list((tmp_path / "cache").glob("real_*.pt"))
    assert len(cached) == 1 and torch.load(cached[0], weights_only=True)["features"].shape == (8, 2048)
    stamp = cached[0].stat().st_mtime_ns

    caplog.clear()
    second = evaluate.main(inception_sweep(files, tmp_path / "second", scales="[2]"))  # and no evaluator
    assert "reference features: cache hit (0 real images encoded)" in caplog.text
    assert [p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("real_*.pt")] == [stamp]
    (row,) = second
    assert row["fid"] == pytest.approx(first[1]["fid"])  # the same samples against the cached reference
    assert row["class_accuracy"] is None  # Inception's ImageNet logits know no digit classes


def test_inception_features_offline_without_weights_name_both_ways_out(files, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty hub cache

    def unreachable(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(inception_sweep(files, tmp_path / "sweep", weights=False))
    message = str(exit_info.value.code)
    assert "\n" not in message and "Name or service not known" in message
    assert inception_weights_url() in message and "--feature_weights PATH" in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in message  # where to put the file
    assert "network" in message  # or run once where the download works


@pytest.mark.parametrize(
    ("name", "inputs", "message"),
    [
        ("clipp", {}, r"'clipp' \(did you mean clip\?\); choose from evaluator, inception, dinov2, clip"),
        ("evaluator", {}, "pass --evaluator PATH"),
        ("inception", {"weights": "missing.pth"}, "'missing.pth' is not a file"),
    ],
)
def test_bad_feature_choices_are_clear_errors(name, inputs, message):
    with pytest.raises(ConfigError, match=message):
        build_features(name, FeatureInputs(**inputs))


def test_retrained_evaluator_at_the_same_path_is_another_reference(tmp_path):
    path = tmp_path / "evaluator.ckpt"
    names = []
    for seed in (1, 2):
        evaluator = tiny_evaluator()
        torch.manual_seed(seed)
        evaluator.net.head.weight.data.normal_()
        save_component(evaluator, path)
        names.append(build_features("evaluator", FeatureInputs(evaluator, path)).name)
    assert names[0] != names[1]


def test_guidance_sweep_callback_takes_inception_features(files, tmp_path):
    from callbacks import GuidanceSweep

    callback = GuidanceSweep(
        features="inception", inception_weights=files["weights"], every_n_epochs=1,
        cache_dir=str(tmp_path / "cache"),
        settings={"scales": [1], "num_samples": 4, "sampler": {"steps": 2}},
    )  # fmt: skip
    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, callbacks=[callback],
        default_root_dir=str(tmp_path), num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(tiny_denoiser(), datamodule=digits_datamodule())
    (row,) = read_rows(tmp_path / "sweeps" / "epoch0000")
    assert all(row[key] is not None for key in COMPLETE) and row["class_accuracy"] is None
    cache_file = next((tmp_path / "cache").glob("real_*.pt"))
    assert torch.load(cache_file, weights_only=True)["features"].shape == (4, 2048)
