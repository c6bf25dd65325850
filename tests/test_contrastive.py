"""The noise-aware contrastive encoder (CLIP guidance, GLIDE) and the CLIP score metric."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny import digits_datamodule, quiet_trainer
from torch.utils.data import DataLoader

from lightning_diffusion.components import ContrastiveEncoder
from lightning_diffusion.components.contrastive_encoder import contrastive_loss
from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import clip_scores
from lightning_diffusion.metrics.retrieval import caption_ids, retrieval_outcomes, same_caption
from lightning_diffusion.nets import EncoderUNet
from lightning_diffusion.nets.text import TextTransformer
from lightning_diffusion.registry import load_component

EMBED_DIM = 16
QUADRANTS = {"top left": (0, 0), "top right": (0, 4), "bottom left": (4, 0), "bottom right": (4, 4)}
PINNED_ID = 5494039196403634369  # caption_ids(["top left"]), BLAKE2b: the same in every process
QUARTILE_KEYS = [f"val/{name}_q{q}" for name in ("i2t", "t2i") for q in range(4)]


def tiny_contrastive_encoder(embed_dim: int = EMBED_DIM, **kwargs) -> ContrastiveEncoder:
    torch.manual_seed(0)
    image_net = EncoderUNet(in_channels=1, out_dim=embed_dim, channels=(8, 16), num_res_blocks=1)
    text = TextTransformer(["top", "bottom", "left", "right"], context_length=6, width=16, layers=1, heads=2)
    return ContrastiveEncoder(image_net, text, image_shape=(1, 8, 8), embed_dim=embed_dim, **kwargs)


def quadrant_items(count: int, seed: int) -> list[dict[str, torch.Tensor | str]]:
    """8x8 images, dark but for one bright 4x4 quadrant, captioned with that quadrant ("top left", ...)."""
    generator = torch.Generator().manual_seed(seed)
    captions = list(QUADRANTS)
    items = []
    for _ in range(count):
        caption = captions[int(torch.randint(len(captions), (1,), generator=generator))]
        image = 0.2 * torch.rand(1, 8, 8, generator=generator) - 1.0
        row, column = QUADRANTS[caption]
        image[:, row : row + 4, column : column + 4] = 0.6 + 0.4 * torch.rand(1, 4, 4, generator=generator)
        items.append({"image": image, "caption": caption})
    return items


def quadrant_batch(count: int = 16, seed: int = 1) -> tuple[torch.Tensor, list[str]]:
    items = quadrant_items(count, seed)
    return torch.stack([item["image"] for item in items]), [item["caption"] for item in items]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ContrastiveEncoder, Path, list[dict]]:
    """A tiny encoder after 100 steps on quadrant captions, its checkpoint, and two validation runs."""
    model = tiny_contrastive_encoder(lr=3e-3, warmup_steps=10)
    train = DataLoader(quadrant_items(512, seed=0), batch_size=16, shuffle=True)
    trainer = quiet_trainer(max_steps=100, limit_val_batches=0)
    trainer.fit(model, train)
    path = tmp_path_factory.mktemp("checkpoint") / "contrastive.ckpt"
    trainer.save_checkpoint(path)
    val = DataLoader(quadrant_items(64, seed=1), batch_size=16)
    runs = [quiet_trainer().validate(model, val, verbose=False)[0] for _ in range(2)]
    return model.eval(), path, runs


def test_short_fit_retrieves_captions_well_above_chance_with_fixed_validation_noise(trained):
    """Untrained, clean image→text retrieval is about 0.13 here; 100 steps reach 1.0 (measured)."""
    _, _, runs = trained
    result = runs[0]
    expected = {"val/i2t", "val/t2i", "val/i2t_clean", "val/t2i_clean", "val/loss", *QUARTILE_KEYS}
    assert set(result) == expected
    assert result["val/i2t_clean"] >= 0.9 and result["val/t2i_clean"] >= 0.9
    assert result["val/i2t_q0"] >= 0.9 and result["val/i2t"] >= 0.6
    assert runs[0] == runs[1]


def test_embeddings_are_unit_norm_float32_and_the_image_tower_is_noise_aware(trained):
    model, _, _ = trained
    images, captions = quadrant_batch(4)
    clean = model.image_embedding(images, torch.zeros(4))
    noisy = model.image_embedding(images, torch.full((4,), 0.7))
    text = model.text_embedding(captions)
    for embedding in (clean, noisy, text):
        assert embedding.shape == (4, EMBED_DIM) and embedding.dtype == torch.float32
        torch.testing.assert_close(embedding.norm(dim=1), torch.ones(4))
    assert (clean - noisy).abs().max() > 1e-3


def test_similarity_is_the_scaled_cosine_and_has_a_gradient_with_respect_to_z():
    """What CLIP guidance differentiates: logit_scale · C_T(caption)ᵀ C_I(z_t, t), one value per image."""
    model = tiny_contrastive_encoder().eval()
    _, captions = quadrant_batch(4)
    z = torch.randn(4, 1, 8, 8, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 0.6, 0.9])
    text = model.text_embedding(captions)
    similarity = model.similarity(z, t, text)
    cosine = (model.image_embedding(z, t) * text).sum(dim=1)
    torch.testing.assert_close(similarity, model.logit_scale * cosine)
    (gradient,) = torch.autograd.grad(similarity.sum(), z)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    with pytest.raises(ConfigError, match="3 caption embeddings for a batch of 4"):
        model.similarity(z, t, text[:3])


def test_logit_scale_starts_at_the_inverse_temperature_and_is_clamped_at_100():
    model = tiny_contrastive_encoder(init_temperature=0.07)
    assert model.logit_scale.item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        model.log_scale.fill_(10.0)
    assert model.logit_scale.item() == pytest.approx(100.0)


def test_contrastive_loss_is_clip_infonce_for_distinct_captions():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(5)
    clip = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    torch.testing.assert_close(contrastive_loss(logits, logits.T, same_caption(list("abcde"))), clip)


def in_batch_loss(logits: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """The contrastive loss of one process's batch: rows and columns are the same images and captions."""
    return contrastive_loss(logits, logits.T, same_caption(captions))


def test_identical_captions_are_not_negatives_of_each_other():
    """Plain InfoNCE would charge log 4 for a batch of one caption and ~5 for matching a duplicate."""
    assert in_batch_loss(torch.randn(4, 4), ["top left"] * 4).item() == pytest.approx(0.0, abs=1e-6)
    # images 0 and 1 (both "a") each prefer the other's copy of the caption: right under multi-positive
    logits = torch.tensor([[0.0, 5.0, -5.0], [5.0, 0.0, -5.0], [-5.0, -5.0, 5.0]])
    assert in_batch_loss(logits, ["a", "a", "b"]).item() < 0.01
    image_to_text, text_to_image = retrieval_outcomes(logits, ["a", "a", "b"])
    assert image_to_text.tolist() == [1.0, 1.0, 1.0] and text_to_image.tolist() == [1.0, 1.0, 1.0]
    image_to_text, _ = retrieval_outcomes(logits, ["a", "b", "c"])
    assert image_to_text.tolist() == [0.0, 0.0, 1.0]


def test_caption_ids_match_exactly_the_equal_captions_and_do_not_depend_on_the_process():
    """Ranks gather these ids to find duplicates of a caption in the global batch; Python's ``hash`` of a
    string differs between processes, these must not (pinned value)."""
    captions = ["top left", "top right", "top left", "", "Top left"]
    ids = caption_ids(captions)
    assert ids.dtype == torch.int64
    assert (ids[:, None] == ids[None, :]).tolist() == [
        [a == b for b in captions] for a in captions
    ]  # fmt: skip
    assert caption_ids(["top left"]).item() == PINNED_ID


def test_checkpoint_round_trip_and_refusal_as_another_kind(trained):
    model, path, _ = trained
    loaded = load_component(path, kind="contrastive_encoder")
    assert type(loaded) is ContrastiveEncoder and loaded.spec == model.spec
    images, captions = quadrant_batch(8)
    t = torch.linspace(0, 1, 8)
    torch.testing.assert_close(
        loaded.image_embedding(images, t), model.image_embedding(images, t), rtol=0, atol=0
    )
    torch.testing.assert_close(
        loaded.text_embedding(captions), model.text_embedding(captions), rtol=0, atol=0
    )
    with pytest.raises(ConfigError, match=r"of kind 'contrastive_encoder'.*not of kind 'denoiser'"):
        load_component(path, kind="denoiser")


def test_fit_refuses_data_without_captions():
    with pytest.raises(ConfigError, match=r"no captions.*Shapes, Captioned"):
        quiet_trainer(max_steps=1).fit(tiny_contrastive_encoder(), datamodule=digits_datamodule())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embed_dim": 8, "image_net_out_dim": 16}, "out_dim=16 but the model needs 8"),
        ({"p_clean": 1.5}, "p_clean"),
        ({"t_max": 0.0}, "t_max"),
        ({"init_temperature": 0.0}, "init_temperature"),
    ],
)
def test_constructor_refuses_impossible_arguments(kwargs, message):
    out_dim = kwargs.pop("image_net_out_dim", kwargs.get("embed_dim", EMBED_DIM))
    image_net = EncoderUNet(in_channels=1, out_dim=out_dim, channels=(8, 16), num_res_blocks=1)
    text = TextTransformer(["a"], context_length=4, width=16, layers=1, heads=2)
    with pytest.raises(ConfigError, match=message):
        ContrastiveEncoder(image_net, text, **kwargs)


def test_clip_scores_lie_in_0_100_and_favour_the_true_captions(trained):
    model, _, _ = trained
    images, captions = quadrant_batch(32, seed=2)
    swap = {"top left": "bottom right", "bottom right": "top left", "top right": "bottom left"}
    swap["bottom left"] = "top right"
    matching = clip_scores(model, images, captions)
    mismatched = clip_scores(model, images, [swap[caption] for caption in captions])
    for scores in (matching, mismatched):
        assert scores.shape == (32,) and not scores.requires_grad
        assert scores.min() >= 0.0 and scores.max() <= 100.0
    assert matching.mean() > mismatched.mean() + 10.0
