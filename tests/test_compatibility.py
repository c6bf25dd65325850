"""Models that belong together: every model a sweep or a pipeline combines with another is refused when it
was trained on other data (image size, channels, classes, caption vocabulary, data set), naming both sides
and what differs, unless cross-data use is allowed on purpose (never for another image shape)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tiny import COND_DIM, digits_datamodule, tiny_denoiser

import evaluate
from lightning_diffusion.components import (
    ContrastiveEncoder,
    Denoiser,
    Evaluator,
    NoisyClassifier,
    Prior,
    UnclipDecoder,
    Upsampler,
)
from lightning_diffusion.config import ConfigError
from lightning_diffusion.nets import ConvClassifier, EncoderUNet, PriorMLP, TextTransformer, UNet
from lightning_diffusion.pipeline import Cascade, Unclip
from lightning_diffusion.registry import CHECKPOINT_KEY
from lightning_diffusion.sweep import check_compatible, load_models, registered_roles
from lightning_diffusion.sweep.prompts import Prompts

DIGITS = dict(digits_datamodule().hparams)
FASHION = {**DIGITS, "source": {"class_path": "lightning_diffusion.data.FashionMNIST", "init_args": {}}}
VOCAB = ["a", "circle", "red", "square"]
OTHER_VOCAB = ["a", "blue", "circle", "triangle"]


def save(model: torch.nn.Module, path: Path, data: dict | None = DIGITS) -> str:
    checkpoint = {
        "state_dict": model.state_dict(),
        CHECKPOINT_KEY: {"kind": model.component_kind, "spec": model.spec},
    }
    if data is not None:
        checkpoint["datamodule_hyper_parameters"] = data
    torch.save(checkpoint, path)
    return str(path)


def text(vocab: list[str]) -> TextTransformer:
    return TextTransformer(vocab, context_length=8, width=16, layers=1, heads=2)


def evaluator(shape=(1, 8, 8), classes: int = 10) -> Evaluator:
    net = ConvClassifier(in_channels=shape[0], num_classes=classes, channels=(8, 16), feature_dim=16)
    return Evaluator(net, image_shape=shape, num_classes=classes)


def classifier(shape=(1, 8, 8), classes: int = 10) -> NoisyClassifier:
    net = EncoderUNet(in_channels=shape[0], out_dim=classes, channels=(8, 16), num_res_blocks=1)
    return NoisyClassifier(net, image_shape=shape, num_classes=classes)


def denoiser(shape=(1, 8, 8), classes: int | None = 10, vocab: list[str] | None = None) -> Denoiser:
    context = 16 if vocab is not None else None
    net = UNet(
        in_channels=shape[0], channels=(8, 16), num_res_blocks=1, cond_dim=COND_DIM, context_dim=context
    )
    return Denoiser(
        net, image_shape=shape, num_classes=classes, text_encoder=None if vocab is None else text(vocab)
    )


def contrastive(shape=(1, 8, 8), vocab: list[str] = VOCAB) -> ContrastiveEncoder:
    net = EncoderUNet(in_channels=shape[0], out_dim=8, channels=(8, 16), num_res_blocks=1)
    return ContrastiveEncoder(net, text(vocab), image_shape=shape, embed_dim=8)


LABEL_CASES = [  # (role, model, its data, what differs) against a 1x8x8 digits denoiser of 10 classes
    ("evaluator", lambda: evaluator((1, 16, 16)), DIGITS, "image size 16x16 vs 8x8"),
    ("evaluator", lambda: evaluator((3, 8, 8)), DIGITS, "channels 3 vs 1"),
    ("evaluator", lambda: evaluator(classes=5), DIGITS, "5 classes vs 10"),
    ("evaluator", evaluator, FASHION, "data set FashionMNIST vs Digits"),
    ("classifier", lambda: classifier((1, 16, 16)), DIGITS, "image size 16x16 vs 8x8"),
    ("classifier", lambda: classifier((3, 8, 8)), DIGITS, "channels 3 vs 1"),
    ("classifier", lambda: classifier(classes=5), DIGITS, "5 classes vs 10"),
    ("classifier", classifier, FASHION, "the classes of FashionMNIST vs those of Digits"),
    ("guide", lambda: denoiser((1, 16, 16)), DIGITS, "image size 16x16 vs 8x8"),
    ("guide", lambda: denoiser((3, 8, 8)), DIGITS, "channels 3 vs 1"),
    ("guide", lambda: denoiser(classes=5), DIGITS, "5 classes vs 10"),
    ("guide", denoiser, FASHION, "the classes of FashionMNIST vs those of Digits"),
    ("contrastive", lambda: contrastive((1, 16, 16)), DIGITS, "image size 16x16 vs 8x8"),
    ("clip_scorer", lambda: contrastive((3, 8, 8)), DIGITS, "channels 3 vs 1"),
]
TEXT_CASES = [  # against a 1x8x8 text denoiser with VOCAB
    ("guide", lambda: denoiser(classes=None, vocab=OTHER_VOCAB), "caption vocabulary of 4 vs 4 words"),
    ("contrastive", lambda: contrastive(vocab=OTHER_VOCAB), "only in the first: ['blue', 'triangle']"),
    ("clip_scorer", lambda: contrastive(vocab=OTHER_VOCAB), "only in the second: ['red', 'square']"),
]


def sweep_models(tmp_path: Path, subject: Denoiser, role: str, model, data: dict, allow: bool = False):
    """The sweep's models loaded from tiny checkpoints: ``model`` in ``role`` (with a matching evaluator
    for the features when the role is another)."""
    torch.manual_seed(0)
    subject_path = save(subject, tmp_path / "denoiser.ckpt")
    paths = {role: save(model, tmp_path / f"{role}.ckpt", data)}
    if role != "evaluator":
        paths["evaluator"] = save(evaluator(), tmp_path / "evaluator.ckpt")
    return load_models(
        subject, paths, "cpu", denoiser_path=subject_path, denoiser_data=DIGITS, allow_cross_data=allow
    )


@pytest.mark.parametrize(("role", "build", "data", "differs"), LABEL_CASES)
def test_a_model_of_other_data_is_refused_naming_both_and_what_differs(tmp_path, role, build, data, differs):
    models = sweep_models(tmp_path, tiny_denoiser(), role, build(), data)
    with pytest.raises(ConfigError) as refused:
        check_compatible(models, [], Prompts(num_classes=10))
    message = str(refused.value)
    assert f"the {role} ({tmp_path / role}.ckpt) was trained on other data than the denoiser (" in message
    assert differs in message and "--allow_cross_data" in message


@pytest.mark.parametrize(("role", "build", "data", "differs"), LABEL_CASES)
def test_cross_data_on_purpose_allows_all_but_another_image_shape(tmp_path, role, build, data, differs):
    models = sweep_models(tmp_path, tiny_denoiser(), role, build(), data, allow=True)
    if "image size" in differs or "channels" in differs:
        with pytest.raises(ConfigError, match=differs):
            check_compatible(models, [], Prompts(num_classes=10))
    else:
        check_compatible(models, [], Prompts(num_classes=10))


@pytest.mark.parametrize(("role", "build", "differs"), TEXT_CASES)
def test_a_caption_model_of_another_vocabulary_is_refused(tmp_path, role, build, differs):
    subject = denoiser(classes=None, vocab=VOCAB)
    models = sweep_models(tmp_path, subject, role, build(), DIGITS)
    with pytest.raises(
        ConfigError, match=rf"the {role} .* other data than the denoiser .*{re.escape(differs)}"
    ):
        check_compatible(models, [], Prompts(captions=["a red circle"]))


def test_models_of_the_same_data_pass_and_unrecorded_data_is_not_compared(tmp_path):
    models = sweep_models(tmp_path, tiny_denoiser(), "classifier", classifier(), None)
    check_compatible(models, [], Prompts(num_classes=10))
    assert models.data["classifier"] is None and models.data["evaluator"] == DIGITS


def cascade_stages(
    folder: Path, upsampler_data: dict, upsampler_classes: int | None = 10, vocab=None, base_data=DIGITS
) -> list:
    """A 4x4 base of 10 classes on digits and an upsampler to 8x8 (with captions when ``vocab``)."""
    torch.manual_seed(0)
    base = denoiser((1, 4, 4), classes=10, vocab=None if vocab is None else VOCAB)
    context = None if vocab is None else 16
    net = UNet(
        in_channels=2,
        out_channels=1,
        channels=(8, 16),
        num_res_blocks=1,
        cond_dim=COND_DIM,
        context_dim=context,
    )
    upsampler = Upsampler(
        net, image_shape=(1, 8, 8), low_res_size=4, num_classes=upsampler_classes,
        text_encoder=None if vocab is None else text(vocab),
    )  # fmt: skip
    return [save(base, folder / "base.ckpt", base_data), save(upsampler, folder / "up.ckpt", upsampler_data)]


@pytest.mark.parametrize(
    ("data", "classes", "vocab", "differs"),
    [
        (FASHION, 10, None, "data set FashionMNIST vs Digits"),
        (DIGITS, 5, None, "5 classes vs 10"),
        (DIGITS, 10, OTHER_VOCAB, "caption vocabulary of 4 vs 4 words"),
    ],
)
def test_a_cascade_stage_of_other_data_is_refused(tmp_path, data, classes, vocab, differs):
    paths = cascade_stages(tmp_path, data, classes, vocab)
    refusal = r"cascade stage 1 \(.*up.ckpt\) was trained on other data than the base stage \(.*base.ckpt\)"
    with pytest.raises(ConfigError, match=f"{refusal}: {differs}"):
        Cascade.from_checkpoints(paths)
    if classes == 10:
        assert Cascade.from_checkpoints(paths, allow_cross_data=True).image_shape == (1, 8, 8)


def test_a_cascade_of_another_data_set_than_the_denoiser_is_refused(tmp_path):
    paths = cascade_stages(tmp_path, FASHION, base_data=FASHION)
    subject_path = save(tiny_denoiser(), tmp_path / "denoiser.ckpt")
    models = load_models(
        tiny_denoiser(), {"cascade": paths, "evaluator": save(evaluator(), tmp_path / "e.ckpt")}, "cpu",
        denoiser_path=subject_path, denoiser_data=DIGITS,
    )  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"the cascade \(.*base.ckpt, .*up.ckpt\) .*: data set FashionMNIST vs"
    ):
        check_compatible(models, [], Prompts(num_classes=10))


def unclip_paths(folder: Path, decoder_data: dict, decoder_vocab: list[str]) -> list[str]:
    torch.manual_seed(0)
    encoder = save(contrastive((3, 8, 8)), folder / "encoder.ckpt")
    prior = Prior(PriorMLP(embed_dim=8, text_width=16, width=16, layers=1), encoder)
    net = UNet(in_channels=3, channels=(8, 16), num_res_blocks=1, cond_dim=16, context_dim=16)
    decoder = UnclipDecoder(net, encoder, image_shape=(3, 8, 8), text_encoder=text(decoder_vocab))
    return [save(prior, folder / "prior.ckpt"), save(decoder, folder / "decoder.ckpt", decoder_data)]


@pytest.mark.parametrize(
    ("data", "vocab", "differs"),
    [(FASHION, VOCAB, "data set FashionMNIST vs Digits"), (DIGITS, OTHER_VOCAB, "caption vocabulary")],
)
def test_an_unclip_decoder_of_other_data_than_its_prior_is_refused(tmp_path, data, vocab, differs):
    paths = unclip_paths(tmp_path, data, vocab)
    with pytest.raises(
        ConfigError, match=rf"the unCLIP decoder \(.*\) .* than the prior \(.*prior.ckpt\): {differs}"
    ):
        Unclip.from_checkpoints(paths)
    assert Unclip.from_checkpoints(paths, allow_cross_data=True).image_shape == (3, 8, 8)


# --- through evaluate.py: the refusal before any sample, and the option recorded ----------------------


def evaluate_args(tmp_path: Path, evaluator_data: dict, *extra: str) -> list[str]:
    torch.manual_seed(0)
    return [
        "--denoiser", save(tiny_denoiser(), tmp_path / "d.ckpt"),
        "--evaluator", save(evaluator(), tmp_path / "e.ckpt", evaluator_data),
        "--out", str(tmp_path / "sweep"), "--cache_dir", str(tmp_path / "cache"), "--sampler.steps", "2",
        "--num_samples", "4", "--batch_size", "4", "--scales", "[1]", *extra,
    ]  # fmt: skip


def test_evaluate_refuses_an_evaluator_of_another_data_set_before_any_sample(tmp_path):
    with pytest.raises(
        SystemExit, match=r"the evaluator \(.*e.ckpt\) .* denoiser \(.*d.ckpt\): data set Fashion"
    ):
        evaluate.main(evaluate_args(tmp_path, FASHION, "--wandb", "false"))
    assert not (tmp_path / "sweep" / "sweep.json").exists() and not (tmp_path / "cache").exists()


def test_allow_cross_data_runs_and_the_run_config_records_it_and_every_role(tmp_path, monkeypatch):
    args = evaluate_args(tmp_path, FASHION, "--allow_cross_data", "--wandb", "false")
    assert len(evaluate.main(args)) == 1
    import wandb

    configs = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: configs.append(kwargs["config"]))
    parsed = evaluate.build_parser().parse_args(args)
    evaluate.start_wandb(parsed, evaluate.sweep_settings(parsed))
    assert configs[0]["allow_cross_data"] is True and configs[0]["evaluator"].endswith("e.ckpt")
    assert {role.name for role in registered_roles()} <= set(configs[0])
