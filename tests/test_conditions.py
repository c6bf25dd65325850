"""Conditions as composable parts: each part's ∅, its dropout, what it needs of the network, how the
conditioner combines parts, models made from parts alone, and checkpoints written before the redesign."""

from __future__ import annotations

import sys

import pytest
import torch
from test_contrastive import tiny_contrastive_encoder
from tiny import REPO, digits_datamodule, quiet_trainer

from lightning_diffusion.components import Denoiser, UnclipDecoder, Upsampler
from lightning_diffusion.components.conditions import (
    AugmentationLevel,
    Caption,
    ClassLabel,
    ImageEmbedding,
    LowResImage,
)
from lightning_diffusion.config import ConfigError, instantiate
from lightning_diffusion.guidance import ClassifierFree, GuidedDenoiser
from lightning_diffusion.nets import TextTransformer, UNet
from lightning_diffusion.registry import CHECKPOINT_KEY, load_component

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
LEGACY = REPO / "tests" / "data" / "legacy_conditions.pt"
CAPTIONS = ["a red circle", "a blue square", "", "a red square"]


def text_encoder() -> TextTransformer:
    return TextTransformer(
        ["a", "red", "blue", "circle", "square"], context_length=6, width=16, layers=1, heads=2
    )


def unet(in_channels: int = 1, cond_dim: int | None = 16, context_dim: int | None = None) -> UNet:
    return UNet(
        in_channels=in_channels,
        out_channels=1,
        channels=(8, 16),
        num_res_blocks=1,
        cond_dim=cond_dim,
        context_dim=context_dim,
    )


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Noise on every trainable parameter, so zero-initialised layers stop hiding the conditions."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def batch(n: int = 4) -> dict:
    generator = torch.Generator().manual_seed(1)
    return {
        "image": torch.rand(n, 1, 8, 8, generator=generator) * 2 - 1,
        "label": torch.arange(n) % 3,
        "caption": (CAPTIONS * n)[:n],
    }


# --- each part's null value -------------------------------------------------------------------------


def test_each_droppable_part_names_its_null_value_and_the_others_have_none():
    encoder = tiny_contrastive_encoder()
    assert torch.equal(ClassLabel(3).null(2, CPU)["label"], torch.tensor([3, 3]))
    assert Caption(text_encoder()).null(2, CPU) == {"caption": ["", ""]}
    assert torch.equal(
        ImageEmbedding(encoder).null(2, CPU)["image_embedding"], torch.zeros(2, encoder.embed_dim)
    )
    assert LowResImage(4).null(2, CPU) == {} and AugmentationLevel().null(2, CPU) == {}


def test_a_models_null_condition_has_one_entry_per_droppable_key():
    model = Denoiser(
        unet(2, context_dim=16),
        num_classes=3,
        text_encoder=text_encoder(),
        conditions=[LowResImage(4), AugmentationLevel()],
    )
    assert set(model.null_condition(2, CPU)) == {"label", "caption"}


def test_a_missing_key_means_the_null_value():
    model = perturbed(Denoiser(unet(context_dim=16), num_classes=3, text_encoder=text_encoder()))
    z, t = torch.randn(2, 1, 8, 8), torch.full((2,), 0.5)
    with torch.no_grad():
        torch.testing.assert_close(model.denoise(z, t, {}), model.denoise(z, t, model.null_condition(2, CPU)))


def test_label_range_is_checked_by_the_label_part():
    with pytest.raises(
        ConfigError, match=r"labels must lie in \[0, 2\] \(or 3 for ∅\), got values from 0 to 4"
    ):
        ClassLabel(3).check({"label": torch.tensor([0, 4])})
    ClassLabel(3).check({"label": torch.tensor([0, 3])})


# --- dropout ------------------------------------------------------------------------------------------


def drop_rates(model: Denoiser, n: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (label dropped, caption dropped) of one training condition of n samples, over the
    samples whose caption is not already empty."""
    torch.manual_seed(0)
    data = {**batch(n), "label": torch.zeros(n, dtype=torch.long)}
    cond = model.training_condition(data)
    captioned = torch.tensor([caption != "" for caption in data["caption"]])
    caption_dropped = torch.tensor([caption == "" for caption in cond["caption"]])
    return (cond["label"] == model.null_label)[captioned], caption_dropped[captioned]


def test_label_and_caption_drop_together_at_p_uncond():
    model = Denoiser(unet(context_dim=16), num_classes=3, text_encoder=text_encoder(), p_uncond=0.3)
    label, caption = drop_rates(model)
    assert torch.equal(label, caption)
    assert abs(label.float().mean().item() - 0.3) < 0.03


def test_parts_of_different_groups_drop_independently_at_their_own_rates():
    label = ClassLabel(3, p_drop=0.5, group=None)
    caption = Caption(text_encoder(), p_drop=0.2, group=None)
    label_dropped, caption_dropped = drop_rates(
        Denoiser(unet(context_dim=16), num_classes=None, conditions=[label, caption])
    )
    assert abs(label_dropped.float().mean().item() - 0.5) < 0.03
    assert abs(caption_dropped.float().mean().item() - 0.2) < 0.03
    both = (label_dropped & caption_dropped).float().mean().item()
    assert abs(both - 0.5 * 0.2) < 0.02  # independent: P(both) = P(label) P(caption)


def test_low_res_and_augmentation_level_are_never_dropped():
    model = Upsampler(
        unet(2), image_shape=(1, 8, 8), low_res_size=4, num_classes=3, p_uncond=1.0, aug_max_t=0.0
    )
    images = batch()["image"]
    cond = model.training_condition({"image": images, "label": torch.zeros(4, dtype=torch.long)})
    assert torch.equal(cond["label"], torch.full((4,), 3))
    # at level 0 the VP schedule still adds sigma_0 ~ 6e-4 times the noise (logsnr_max = 15)
    torch.testing.assert_close(cond["low_res"], model.low_res_of(images), rtol=0.0, atol=1e-2)
    assert torch.equal(cond["aug_level"], torch.zeros(4))


@pytest.mark.parametrize("p_drop", [-0.1, 1.5])
def test_dropout_probability_outside_the_unit_interval_is_refused(p_drop):
    with pytest.raises(ConfigError, match=r"p_drop is a probability and must lie in \[0, 1\]"):
        ClassLabel(3, p_drop=p_drop)


# --- what a part needs of the network -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: Denoiser(unet(cond_dim=None), num_classes=3),
            r"\(label\) needs a network with a condition input",
        ),
        (
            lambda: Denoiser(unet(), num_classes=3, text_encoder=text_encoder()),
            "caption condition reaches the network",
        ),
        (
            lambda: Denoiser(unet(context_dim=8), num_classes=None, text_encoder=text_encoder()),
            r"tokens are 16 wide but the network's context_dim is 8; set net.init_args.context_dim to 16",
        ),
        (
            lambda: Denoiser(
                unet(), num_classes=None, conditions=[ImageEmbedding(tiny_contrastive_encoder())]
            ),
            "image embedding condition reaches the network as context tokens",
        ),
        (lambda: Denoiser(unet(context_dim=16), num_classes=3), "context_dim set but no condition gives it"),
        (
            lambda: Denoiser(unet(), num_classes=3, conditions=[LowResImage(4)]),
            "in_channels=1 but the model needs 2",
        ),
        (
            lambda: Denoiser(unet(), num_classes=3, conditions=[AugmentationLevel()]),
            "AugmentationLevel condition works on the low_res condition, which no other condition",
        ),
        (
            lambda: Denoiser(unet(), num_classes=3, conditions=[ClassLabel(5)]),
            "two conditions read the key 'label'",
        ),
        (
            lambda: Denoiser(unet(2), conditions=[LowResImage(3), AugmentationLevel()]),
            "low_res_size must divide the image size 8x8",
        ),
        (
            lambda: Denoiser(
                unet(context_dim=16),
                image_shape=(1, 16, 16),
                conditions=[ImageEmbedding(tiny_contrastive_encoder())],
            ),
            r"embeds images of shape \(1, 8, 8\) but the model makes \(1, 16, 16\)",
        ),
    ],
)
def test_a_network_that_lacks_what_a_part_needs_is_refused_with_the_fix(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


# --- the conditioner combines the parts ---------------------------------------------------------------


def test_vectors_add_up_tokens_and_masks_concatenate_and_channels_stack():
    embedding = ImageEmbedding(tiny_contrastive_encoder(), tokens=2)
    parts = [LowResImage(4), AugmentationLevel(), embedding]
    model = perturbed(
        Denoiser(unet(2, context_dim=16), num_classes=3, text_encoder=text_encoder(), conditions=parts)
    )
    cond = model.batch_condition(batch())
    conditioner = model.conditioner
    with torch.no_grad():
        combined = model.condition_inputs(cond, 4)
        given = {name: part.inputs(cond, 4) for name, part in conditioner.items()}
    expected_vector = given["label"].vector + given["caption"].vector + given["aug_level"].vector
    torch.testing.assert_close(combined.vector, expected_vector + given["image_embedding"].vector)
    torch.testing.assert_close(
        combined.context, torch.cat([given["caption"].context, given["image_embedding"].context], 1)
    )
    assert combined.context_mask.shape == (4, 6 + 2) and combined.context_mask[:, 6:].all()
    z = torch.randn(4, 1, 8, 8)
    stacked = model.network_input(z, cond)
    assert stacked.shape == (4, 2, 8, 8) and torch.equal(stacked[:, :1], z)


# --- models made from parts alone ---------------------------------------------------------------------


def test_the_upsampler_is_a_denoiser_with_a_low_res_image_and_an_augmentation_level():
    torch.manual_seed(0)
    upsampler = Upsampler(unet(2), image_shape=(1, 8, 8), low_res_size=4, num_classes=3, aug_max_t=0.3)
    torch.manual_seed(0)
    parts = [LowResImage(4), AugmentationLevel(0.3)]
    denoiser = Denoiser(unet(2), image_shape=(1, 8, 8), num_classes=3, conditions=parts)
    assert upsampler.state_dict().keys() == denoiser.state_dict().keys()
    denoiser.load_state_dict(perturbed(upsampler).state_dict())
    cond = upsampler.low_res_condition(upsampler.low_res_of(batch()["image"]), 0.2, [torch.Generator()] * 4)
    z, t = torch.randn(4, 1, 8, 8), torch.full((4,), 0.4)
    with torch.no_grad():
        torch.testing.assert_close(denoiser.eval().denoise(z, t, cond), upsampler.denoise(z, t, cond))


def test_a_class_conditional_unclip_decoder_made_from_parts_trains_saves_loads_and_guides(tmp_path):
    embedding = ImageEmbedding(tiny_contrastive_encoder(), tokens=2, p_drop=0.2)
    model = Denoiser(unet(context_dim=16), image_shape=(1, 8, 8), num_classes=10, conditions=[embedding])
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1)
    trainer.fit(model, datamodule=digits_datamodule())
    assert trainer.global_step == 2 and not model.conditioner["image_embedding"].encoder.training
    path = tmp_path / "decoder.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_component(path, kind="denoiser")
    assert set(loaded.null_condition(2, CPU)) == {"label", "image_embedding"}
    images = batch()["image"]
    cond = {"label": torch.tensor([1, 2, 3, 4]), "image_embedding": embedding.clean_image_embedding(images)}
    guided_on_label = GuidedDenoiser(loaded, ClassifierFree(2.0), cond)  # ∅ label, embedding kept
    z, t = torch.randn(4, 1, 8, 8), torch.full((4,), 0.5)
    with torch.no_grad():
        null = {**cond, "label": torch.full((4,), 10)}
        expected = loaded.denoise(z, t, null).lerp(loaded.denoise(z, t, cond), 2.0)
        torch.testing.assert_close(guided_on_label(z, t), expected, rtol=1e-5, atol=1e-5)


def test_parts_are_configured_by_class_path_in_a_spec():
    spec = {
        "class_path": "lightning_diffusion.components.Denoiser",
        "init_args": {
            "net": unet(2, context_dim=16).spec,
            "num_classes": 3,
            "conditions": [
                {
                    "class_path": "lightning_diffusion.components.conditions.LowResImage",
                    "init_args": {"size": 4},
                },
                {
                    "class_path": "lightning_diffusion.components.conditions.Caption",
                    "init_args": {"text_encoder": text_encoder().spec},
                },
                {"class_path": "lightning_diffusion.components.conditions.AugmentationLevel"},
            ],
        },
    }
    model = instantiate(spec)
    assert list(model.conditioner) == ["label", "low_res", "caption", "aug_level"]
    assert instantiate(model.spec).state_dict().keys() == model.state_dict().keys()


# --- checkpoints written before the redesign ----------------------------------------------------------


def test_checkpoints_written_before_the_redesign_load_and_denoise_as_before(tmp_path):
    """tests/data/legacy_conditions.pt was written by the code of 4aeab45 (before conditions became
    parts): per model its spec, state dict, and the denoised output of a fixed input."""
    legacy = torch.load(LEGACY, weights_only=True)
    encoder = tmp_path / "encoder.ckpt"
    torch.save(
        {
            "state_dict": legacy["encoder"]["state_dict"],
            CHECKPOINT_KEY: {"kind": "contrastive_encoder", "spec": legacy["encoder"]["spec"]},
        },
        encoder,
    )
    for name, record in legacy["models"].items():
        spec = record["spec"]
        if "encoder" in spec["init_args"]:
            spec["init_args"]["encoder"] = str(encoder)
        model = instantiate(spec).eval()
        model.load_state_dict(record["state_dict"])
        with torch.no_grad():
            denoised = model.denoise(record["z"], record["t"], record["cond"])
        torch.testing.assert_close(denoised, record["denoised"], msg=name)
    assert isinstance(model, UnclipDecoder) and model.embedding_tokens == 2


def test_a_yaml_config_lists_parts_by_class_path(tmp_path, monkeypatch):
    """The digits denoiser's config plus a low-res image and an augmentation level: an upsampler from
    parts, as LightningCLI reads it."""
    import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])  # LightningCLI reads args=..., not pytest's own argv
    overlay = tmp_path / "parts.yaml"
    overlay.write_text(
        "model:\n"
        "  init_args:\n"
        "    net: {init_args: {in_channels: 2, out_channels: 1}}\n"
        "    conditions:\n"
        "      - class_path: lightning_diffusion.components.conditions.LowResImage\n"
        "        init_args: {size: 4}\n"
        "      - class_path: lightning_diffusion.components.conditions.AugmentationLevel\n"
    )
    digits = REPO / "configs" / "digits" / "denoiser.yaml"
    quiet = ["--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"]
    cli = train.main(args=["--config", str(digits), "--config", str(overlay), *quiet], run=False)
    assert list(cli.model.conditioner) == ["label", "low_res", "aug_level"]


FAMILY_CONFIGS = sorted(
    path
    for pattern in ("denoiser*.yaml", "upsampler*.yaml", "unclip_decoder*.yaml", "text_denoiser*.yaml")
    for path in REPO.glob(f"configs/*/{pattern}")
    if path.parent.name not in ("cifar10", "imagenet64")  # tests/test_recipes.py fits those on stand-ins
)


@pytest.mark.slow
@pytest.mark.parametrize("config", FAMILY_CONFIGS, ids=lambda path: str(path.relative_to(REPO / "configs")))
def test_every_denoiser_family_config_trains_two_steps(config, tmp_path, monkeypatch):
    """Each config of the Denoiser family (a small network, batch 4, on the CPU) fits two steps."""
    import yaml
    from test_cli import FASHION_MNIST_DIR, SMALL_NET, encoder_checkpoint_for, quiet

    import train

    if "FashionMNIST" in config.read_text() and not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"needs Fashion-MNIST at {FASHION_MNIST_DIR}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    model_args = yaml.safe_load(config.read_text())["model"]["init_args"]
    encoder = []
    if "encoder" in model_args:
        encoder = [
            "--model.init_args.encoder",
            encoder_checkpoint_for(config, model_args, tmp_path / "enc.ckpt"),
        ]
    cpu = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true"]
    steps = [
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--data.init_args.batch_size",
        "4",
    ]
    train.main(args=["fit", "--config", str(config), *quiet(tmp_path), *SMALL_NET, *cpu, *steps, *encoder])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2
