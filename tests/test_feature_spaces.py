"""DINOv2 and CLIP feature spaces through timm (``metrics.vit_features``): a sweep row end to end under
``--features dinov2`` and ``--features clip`` with weights files the test writes (the real architectures
shrunk to one block of width 32, random weights, saved as the hub's safetensors), the reference cache keyed
by space and weights, and the message when there are neither weights nor network."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_sweep import save_component
from tiny import tiny_denoiser

import evaluate
from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import FeatureInputs, build_features
from lightning_diffusion.metrics.vit_features import VIT_SPACES

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2}  # the ViT-L/14 definitions, one narrow block
COLUMNS = ("fid", "fid_inf", "kid", "cmmd", "precision", "recall")


def write_random_vit_weights(space: str, path: Path) -> str:
    """The space's timm architecture shrunk to ``TINY`` at its pretrained input size with random weights of
    unit gain (layer scales 1, linear maps N(0, 1 / fan-in): the CLS token then depends on the image), saved
    as safetensors (loading resamples the position embedding to the space's input size)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(VIT_SPACES[space].architecture, pretrained=False, **TINY)
    for name, parameter in model.named_parameters():
        if name.endswith("gamma"):  # DINOv2's layer scale starts at 1e-5: the blocks would add nothing
            parameter.data.fill_(1.0)
        elif parameter.ndim >= 2 and "embed" not in name.split(".")[-1]:
            parameter.data.normal_(0, parameter[0].numel() ** -0.5)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(autouse=True)
def tiny_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    for space in ("dinov2", "clip"):
        monkeypatch.setitem(VIT_SPACES, space, replace(VIT_SPACES[space], overrides=TINY))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("vit")
    return {
        "dinov2": write_random_vit_weights("dinov2", folder / "dinov2.safetensors"),
        "clip": write_random_vit_weights("clip", folder / "clip.safetensors"),
        "denoiser": save_component(tiny_denoiser(), folder / "denoiser.ckpt", with_data=True),
    }


def sweep(files: dict[str, str], space: str, out: Path, *weights: str) -> list[str]:
    return [
        "--features", space, *weights, "--denoiser", files["denoiser"],
        "--out", str(out), "--cache_dir", str(out.parent / "cache"), "--scales", "[2]",
        "--sampler.steps", "2", "--num_samples", "8", "--num_real", "8", "--batch_size", "8",
        "--wandb", "false",
    ]  # fmt: skip


@pytest.mark.parametrize(("space", "width"), [("dinov2", 32), ("clip", 768)])
def test_a_sweep_row_under_each_vit_feature_space_is_complete_and_cached(
    files, tmp_path, caplog, space, width
):
    caplog.set_level(logging.INFO, logger="lightning_diffusion.sweep")
    (row,) = evaluate.main(sweep(files, space, tmp_path / "first", "--feature_weights", files[space]))
    assert all(row[key] is not None and math.isfinite(row[key]) for key in COLUMNS), row
    assert row["inception_score"] is None  # no class logits in this feature space: no score
    assert row["fid"] > 1e-3 and row["cmmd"] > 0  # the features see the images
    assert f"8 real images encoded with {space}:{VIT_SPACES[space].architecture}" in caplog.text
    (cached,) = (tmp_path / "cache").glob("real_*.pt")
    features = torch.load(cached, weights_only=True)["features"]
    assert features.shape == (8, width)  # CLIP: the projection's 768, whatever the tiny width
    if space == "clip":
        torch.testing.assert_close(features.norm(dim=1), torch.ones(8))  # unit-length embeddings

    caplog.clear()  # the alias, the same weights: the same reference
    (again,) = evaluate.main(sweep(files, space, tmp_path / "second", "--inception_weights", files[space]))
    assert "reference features: cache hit (0 real images encoded)" in caplog.text
    assert again["fid"] == pytest.approx(row["fid"]) and again["cmmd"] == pytest.approx(row["cmmd"])


def test_other_weights_are_another_reference(files, tmp_path):
    names = {build_features(space, FeatureInputs(weights=files[space])).name for space in ("dinov2", "clip")}
    assert len(names) == 2 and all(name.split(":")[0] in ("dinov2", "clip") for name in names)


def test_no_weights_and_no_network_is_one_paragraph_with_the_ways_out(files, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args: object, **kwargs: object) -> None:
        raise LocalEntryNotFoundError("Cannot find the requested files in the local cache.")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(sweep(files, "dinov2", tmp_path / "sweep"))
    message = str(exit_info.value.code)
    print(message)
    assert "\n" not in message and "local cache" in message
    url = "https://huggingface.co/timm/vit_large_patch14_dinov2.lvd142m/resolve/main/model.safetensors"
    assert url in message and "--feature_weights PATH" in message and "HF_HOME" in message


@pytest.mark.parametrize(
    ("space", "inputs", "message"),
    [
        ("clip", {"weights": "missing.safetensors"}, "'missing.safetensors' is not a file"),
        ("evaluator", {"weights": "x.pth"}, "is for --features inception, dinov2 or clip"),
    ],
)
def test_bad_weights_are_clear_errors(space, inputs, message):
    with pytest.raises(ConfigError, match=message):
        build_features(space, FeatureInputs(**inputs))
