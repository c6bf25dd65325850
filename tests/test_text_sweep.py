"""Text sweeps through evaluate.py: cfg on a text denoiser vs CLIP guidance, CLIP score from a separate
encoder, attribute accuracy, held-out combinations, explicit captions, and the bad input around them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
from lightning_diffusion.components import ContrastiveEncoder, Denoiser, Evaluator
from lightning_diffusion.data import DiffusionDataModule, Shapes
from lightning_diffusion.nets import ConvClassifier, EncoderUNet, TextTransformer, UNet
from lightning_diffusion.registry import CHECKPOINT_KEY

SHAPES = Shapes(image_size=16, num_train=64, num_test=40)
VOCAB = DiffusionDataModule(SHAPES).vocabulary()


def save(model: torch.nn.Module, path: Path, with_data: bool = False) -> str:
    checkpoint = {
        "state_dict": model.state_dict(),
        CHECKPOINT_KEY: {"kind": model.component_kind, "spec": model.spec},
    }
    if with_data:
        checkpoint["datamodule_hyper_parameters"] = dict(DiffusionDataModule(SHAPES).hparams)
    torch.save(checkpoint, path)
    return str(path)


def text_encoder() -> TextTransformer:
    return TextTransformer(VOCAB, context_length=16, width=16, layers=1, heads=2)


def contrastive(seed: int) -> ContrastiveEncoder:
    torch.manual_seed(seed)
    net = EncoderUNet(in_channels=3, out_dim=8, channels=(8, 16), num_res_blocks=1)
    return ContrastiveEncoder(net, text_encoder(), image_shape=(3, 16, 16), embed_dim=8)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("text")
    torch.manual_seed(0)
    net = UNet(in_channels=3, channels=(8, 16), num_res_blocks=1, cond_dim=16, context_dim=16)
    denoiser = Denoiser(net, image_shape=(3, 16, 16), num_classes=None, text_encoder=text_encoder())
    evaluator_net = ConvClassifier(in_channels=3, num_classes=12, channels=(8, 16), feature_dim=16)
    evaluator = Evaluator(
        evaluator_net, image_shape=(3, 16, 16), num_classes=12, attribute_sizes=[3, 4, 2, 4, 4, 5]
    )
    return {
        "denoiser": save(denoiser, folder / "denoiser.ckpt", with_data=True),
        "evaluator": save(evaluator, folder / "evaluator.ckpt"),
        "contrastive": save(contrastive(1), folder / "contrastive.ckpt"),
        "scorer": save(contrastive(2), folder / "scorer.ckpt"),
    }


def text_args(checkpoints: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [
        "--denoiser", checkpoints["denoiser"], "--evaluator", checkpoints["evaluator"],
        "--contrastive", checkpoints["contrastive"], "--clip_scorer", checkpoints["scorer"],
        "--out", str(out), "--cache_dir", str(out.parent / "cache"), "--methods", "[cfg,clip]",
        "--scales", "[0,2]", "--sampler.steps", "2", "--num_samples", "6", "--batch_size", "4",
        "--wandb", "false", *extra,
    ]  # fmt: skip


def test_glide_table_has_clip_score_and_attribute_accuracy_rows(checkpoints, tmp_path):
    out = tmp_path / "sweep"
    rows = evaluate.main(text_args(checkpoints, out, "--save_samples", "true"))
    assert [(row["method"], row["scale"]) for row in rows] == [
        ("cfg", 0.0),
        ("cfg", 2.0),
        ("clip", 0.0),
        ("clip", 2.0),
    ]
    for row in rows:
        assert 0 <= row["clip_score"] <= 100 and 0 <= row["attribute_accuracy"] <= 1
        assert row["class_accuracy"] is not None
    # CFG at s = 2 batches caption and empty caption (2 rows per step); CLIP guidance runs one pass
    assert [row["nfe"] for row in rows] == [2, 4, 2, 2]
    saved = np.load(out / "samples_cfg_s2.npz")
    train_captions = DiffusionDataModule(SHAPES).captions("train")  # the default reference split
    assert saved["arr_0"].shape == (6, 16, 16, 3) and set(saved["captions"]) <= set(train_captions)
    # unguided CLIP (s = 0) is the unconditional model: the same images as CFG at s = 0
    torch.testing.assert_close(
        torch.from_numpy(np.load(out / "samples_clip_s0.npz")["arr_0"]),
        torch.from_numpy(np.load(out / "samples_cfg_s0.npz")["arr_0"]),
    )


def test_held_out_combinations_and_explicit_captions(checkpoints, tmp_path):
    held_out = str(
        {
            "class_path": "lightning_diffusion.data.Shapes",
            "init_args": {**SHAPES.spec["init_args"], "combinations": "held_out"},
        }
    )
    rows = evaluate.main(
        text_args(
            checkpoints, tmp_path / "held", "--source", held_out, "--methods", "[cfg]", "--scales", "[1]"
        )
    )
    assert rows[0]["attribute_accuracy"] is not None
    captions = ["a small red square at the top", "a large purple circle at the left"]
    with pytest.warns(UserWarning, match=r"mapped to <unk>: \['purple'\]"):
        rows = evaluate.main(
            text_args(
                checkpoints,
                tmp_path / "list",
                "--captions",
                str(captions),
                "--methods",
                "[cfg]",
                "--scales",
                "[1]",
            )
        )
    assert rows[0]["clip_score"] is not None and rows[0]["attribute_accuracy"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--clip_scorer", "contrastive"), "is the guiding contrastive encoder"),
        (("--captions", "[]"), "list of captions is empty"),
        (("--methods", "[classifier]"), "guides towards class labels only, and this sweep samples captions"),
        (("--contrastive", None), "clip needs a noise-aware contrastive encoder: pass --contrastive PATH"),
    ],
)
def test_bad_text_sweeps_are_clear_errors(checkpoints, tmp_path, change, message):
    args = text_args(checkpoints, tmp_path / "bad")
    option, value = change
    if value is None:
        del args[args.index(option) : args.index(option) + 2]
    elif value in checkpoints:
        args[args.index(option) + 1] = checkpoints[value]
    else:
        args += [option, value]
    with pytest.raises(SystemExit, match=message):
        evaluate.main(args)
