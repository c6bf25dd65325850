"""DALL-E 2 (unCLIP): the diffusion prior over image embeddings, the embedding-conditional decoder, the
caption → prior → decoder chain, image variations, prior quality, unclip sweep rows, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_contrastive import quadrant_items, tiny_contrastive_encoder
from test_sweep import run_evaluate
from test_text_sweep import (
    checkpoints,  # noqa: F401 - the text sweep's checkpoints fixture
    save,
    text_args,
    text_encoder,
)
from tiny import quiet_trainer, run_module

import evaluate
from lightning_diffusion.components import ContrastiveEncoder, Prior, UnclipDecoder, Upsampler
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec, sample_generators
from lightning_diffusion.metrics.embedding_quality import prediction_quality
from lightning_diffusion.nets import EncoderUNet, PriorMLP, PriorTransformer, UNet
from lightning_diffusion.pipeline import PriorStage, Unclip, image_variations, sample_unclip
from lightning_diffusion.pipeline.cascade import Cascade, CascadeStage
from lightning_diffusion.pipeline.prior_quality import apply_linear_map, fit_linear_map
from lightning_diffusion.registry import load_component

EMBED = 8  # the text sweep's encoders embed into 8 dimensions, with a 16-wide text tower


pytestmark = pytest.mark.usefixtures("one_thread")


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Noise on every trainable parameter, so zero-initialised layers stop hiding the conditions."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def rgb_encoder(embed_dim: int) -> ContrastiveEncoder:
    """A contrastive encoder of the text sweep's shapes images with another embedding size."""
    torch.manual_seed(3)
    net = EncoderUNet(in_channels=3, out_dim=embed_dim, channels=(8, 16), num_res_blocks=1)
    return ContrastiveEncoder(net, text_encoder(), image_shape=(3, 16, 16), embed_dim=embed_dim)


def tiny_prior(encoder: str, net: str = "mlp", **kwargs) -> Prior:
    torch.manual_seed(0)
    if net == "mlp":
        network = PriorMLP(embed_dim=EMBED, text_width=16, width=32, layers=2)
    else:
        network = PriorTransformer(embed_dim=EMBED, text_width=16, width=32, layers=1, heads=2)
    return Prior(network, encoder, **kwargs)


def tiny_decoder(encoder: str, text: bool = True, **kwargs) -> UnclipDecoder:
    torch.manual_seed(0)
    net = UNet(in_channels=3, channels=(8, 16), num_res_blocks=1, cond_dim=16, context_dim=16)
    return UnclipDecoder(
        net, encoder, image_shape=(3, 16, 16), text_encoder=text_encoder() if text else None, **kwargs
    )


@pytest.fixture(scope="module")
def unclip_checkpoints(checkpoints, tmp_path_factory) -> dict[str, str]:  # noqa: F811
    """The text sweep's checkpoints plus a prior and a decoder on its guiding encoder, and a decoder on
    another encoder."""
    folder = tmp_path_factory.mktemp("unclip")
    encoder = checkpoints["contrastive"]
    return {
        **checkpoints,
        "prior": save(perturbed(tiny_prior(encoder, "transformer")), folder / "prior.ckpt", with_data=True),
        "decoder": save(perturbed(tiny_decoder(encoder)), folder / "decoder.ckpt", with_data=True),
        "other_decoder": save(tiny_decoder(checkpoints["scorer"]), folder / "other.ckpt"),
    }


CAPTIONS = [
    "a small red circle at the top",
    "a large blue square at the left",
    "a small green triangle at the right",
]


# --- the prior ----------------------------------------------------------------------------------------


def test_prior_samples_unit_embeddings_that_do_not_depend_on_the_batch(unclip_checkpoints):
    prior = load_component(unclip_checkpoints["prior"], kind="prior")
    assert prior.sample_shape == (EMBED,) and prior.embed_dim == EMBED
    together = prior.sample_embeddings(
        CAPTIONS, sample_generators(0, range(3)), guidance_scale=2.0, sampler=SamplerSpec("ddim", 4)
    )
    alone = prior.sample_embeddings(
        CAPTIONS[1:2], sample_generators(0, [1]), guidance_scale=2.0, sampler=SamplerSpec("ddim", 4)
    )
    assert together.shape == (3, EMBED)
    torch.testing.assert_close(together.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(together[1:2], alone)


def test_reranking_keeps_the_candidate_most_similar_to_the_caption(unclip_checkpoints):
    """Candidate 0 of caption i draws the same noise as the single sample, so keeping the best of k
    can only raise C_T · C_I, and it keeps the argmax among the k candidates."""
    prior = load_component(unclip_checkpoints["prior"], kind="prior")
    text = prior.encoder.text_embedding(CAPTIONS)

    def scores(candidates: int) -> torch.Tensor:
        sampled = prior.sample_embeddings(
            CAPTIONS, sample_generators(0, range(3)), 1.0, candidates, SamplerSpec("ddim", 3)
        )
        return (sampled * text).sum(dim=1)

    one, eight = scores(1), scores(8)
    assert bool((eight >= one - 1e-6).all()) and bool((eight > one + 1e-4).any())


def test_prior_null_condition_is_the_empty_caption(unclip_checkpoints):
    prior = load_component(unclip_checkpoints["prior"], kind="prior")
    z, t = torch.randn(2, EMBED), torch.full((2,), 0.5)
    null = prior.null_condition(2, torch.device("cpu"))
    torch.testing.assert_close(prior.denoise(z, t, null), prior.denoise(z, t, {"caption": ["", ""]}))
    assert not torch.allclose(prior.denoise(z, t, null), prior.denoise(z, t, {"caption": CAPTIONS[:2]}))


def test_prior_learns_caption_dependent_embeddings_closer_than_the_text_embedding(tmp_path):
    """On quadrant images the true C_I clusters by caption: after a short fit, embeddings sampled for a
    caption lie much closer to its images' C_I than C_T does (the modality gap the prior closes)."""
    encoder = tiny_contrastive_encoder()
    encoder_path = save(encoder, tmp_path / "encoder.ckpt")
    torch.manual_seed(0)
    prior = Prior(
        PriorMLP(embed_dim=16, text_width=16, width=64, layers=2), encoder_path, lr=3e-3, warmup_steps=10
    )
    loader = torch.utils.data.DataLoader(quadrant_items(256, seed=0), batch_size=64, shuffle=True)
    validation = torch.utils.data.DataLoader(quadrant_items(64, seed=1), batch_size=64)
    trainer = quiet_trainer(max_steps=200, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(prior, loader, validation)
    metrics = trainer.callback_metrics
    assert metrics["val/cosine"] > 0.9
    assert metrics["val/cosine"] > metrics["val/cosine_text"] + 0.2
    assert all(
        torch.equal(a, b)
        for a, b in zip(prior.encoder.state_dict().values(), encoder.state_dict().values(), strict=True)
    )


def test_prediction_quality_tells_exact_collapsed_and_wrong_predictions_apart():
    """4 captions, 25 images each spread around a caption centre: the true embeddings score perfectly;
    the per-caption mean (what a regression predicts) keeps cosine and retrieval but loses recall;
    predictions of the wrong caption fail retrieval."""
    generator = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(4, 16, generator=generator), dim=1)
    which = torch.arange(100) % 4
    true = F.normalize(centres[which] + 0.15 * torch.randn(100, 16, generator=generator), dim=1)
    captions = [f"caption {i}" for i in which.tolist()]
    exact = prediction_quality(true, true, captions)
    assert exact["cosine"] == pytest.approx(1.0) and exact["retrieval"] == 1.0
    assert exact["frechet"] == pytest.approx(0.0, abs=1e-3) and exact["recall"] == 1.0
    means = torch.stack([true[which == c].mean(dim=0) for c in range(4)])[which]
    collapsed = prediction_quality(means, true, captions)
    assert collapsed["cosine"] > 0.85 and collapsed["retrieval"] == 1.0
    assert collapsed["recall"] < 0.2 and collapsed["frechet"] > exact["frechet"] + 0.05
    wrong = prediction_quality(true[(torch.arange(100) + 1) % 100], true, captions)
    assert wrong["retrieval"] == 0.0 and "class_retrieval" not in wrong
    # one caption per image (synonyms), 4 classes: another image of the same class is a class hit only
    unique = [f"caption {i}" for i in range(100)]
    same_class = prediction_quality(true[(torch.arange(100) + 4) % 100], true, unique, labels=which)
    assert same_class["retrieval"] == 0.0 and same_class["class_retrieval"] == 1.0


def test_linear_map_recovers_an_affine_relation():
    text = F.normalize(torch.randn(40, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    image = text @ torch.randn(4, 4, generator=torch.Generator().manual_seed(2)) + 0.1
    torch.testing.assert_close(apply_linear_map(fit_linear_map(text, image), text), F.normalize(image, dim=1))


# --- the decoder --------------------------------------------------------------------------------------


def test_decoder_zero_embedding_is_the_null_and_wrong_sizes_are_refused(unclip_checkpoints):
    decoder = load_component(unclip_checkpoints["decoder"], kind="denoiser")
    z, t = torch.randn(2, 3, 16, 16), torch.full((2,), 0.5)
    null = decoder.null_condition(2, torch.device("cpu"))
    assert set(null) == {"caption", "image_embedding"}
    torch.testing.assert_close(decoder.denoise(z, t, null), decoder.denoise(z, t, {}))
    embedding = F.normalize(torch.randn(2, EMBED), dim=1)
    assert not torch.allclose(
        decoder.denoise(z, t, {"image_embedding": embedding}), decoder.denoise(z, t, {})
    )
    with pytest.raises(ConfigError, match=rf"image embeddings of shape \(2, {EMBED}\).*got \(2, 5\)"):
        decoder.denoise(z, t, {"image_embedding": torch.randn(2, 5)})


def test_a_decoder_without_captions_conditions_on_the_embedding_alone(unclip_checkpoints):
    decoder = perturbed(tiny_decoder(unclip_checkpoints["contrastive"], text=False))
    assert set(decoder.null_condition(2, torch.device("cpu"))) == {"image_embedding"}
    z, t = torch.randn(2, 3, 16, 16), torch.full((2,), 0.5)
    embedding = F.normalize(torch.randn(2, EMBED), dim=1)
    assert decoder.denoise(z, t, {"image_embedding": embedding}).shape == (2, 3, 16, 16)
    assert not torch.allclose(
        decoder.denoise(z, t, {"image_embedding": embedding}), decoder.denoise(z, t, {})
    )


@pytest.mark.parametrize(("p_embedding", "p_text"), [(1.0, 0.0), (0.0, 1.0), (0.0, 0.0)])
def test_decoder_drops_embedding_and_caption_independently(unclip_checkpoints, p_embedding, p_text):
    decoder = tiny_decoder(
        unclip_checkpoints["contrastive"], p_drop_embedding=p_embedding, p_drop_text=p_text
    )
    images = torch.rand(6, 3, 16, 16) * 2 - 1
    cond = decoder.training_condition({"image": images, "caption": CAPTIONS * 2})
    embedding_dropped = (cond["image_embedding"] == 0).all(dim=1)
    assert embedding_dropped.tolist() == [p_embedding == 1.0] * 6
    assert [caption == "" for caption in cond["caption"]] == [p_text == 1.0] * 6
    if p_embedding == 0.0:
        torch.testing.assert_close(cond["image_embedding"], decoder.clean_image_embedding(images))


def test_decoder_fit_leaves_the_encoder_frozen(unclip_checkpoints):
    decoder = tiny_decoder(unclip_checkpoints["contrastive"])
    before = {key: value.clone() for key, value in decoder.encoder.state_dict().items()}
    items = [{"image": torch.rand(3, 16, 16) * 2 - 1, "caption": CAPTIONS[i % 3]} for i in range(16)]
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(decoder, torch.utils.data.DataLoader(items, batch_size=8))
    assert not decoder.encoder.training
    assert all(torch.equal(before[key], value) for key, value in decoder.encoder.state_dict().items())


def test_decoder_network_without_context_tokens_is_refused(unclip_checkpoints):
    net = UNet(in_channels=3, channels=(8, 16), num_res_blocks=1, cond_dim=16)
    with pytest.raises(ConfigError, match="image embedding condition reaches the network as context tokens"):
        UnclipDecoder(net, unclip_checkpoints["contrastive"], image_shape=(3, 16, 16))


def test_missing_encoder_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"contrastive encoder checkpoint .*does not exist; train one"):
        tiny_prior(str(tmp_path / "missing.ckpt"))


# --- the chain, variations and their bad input --------------------------------------------------------


def test_chain_samples_do_not_depend_on_the_batch_size(unclip_checkpoints):
    chain = Unclip.from_checkpoints([unclip_checkpoints["prior"], unclip_checkpoints["decoder"]])
    chain = Unclip(
        PriorStage(chain.prior.model, 2.0, 2, SamplerSpec("ddim", 3)),
        Cascade([CascadeStage(chain.cascade.stages[0].model, SamplerSpec("ddim", 3), guidance_scale=2.0)]),
    )
    together = sample_unclip(chain, CAPTIONS, seed=1, batch_size=3)
    split = sample_unclip(chain, CAPTIONS, seed=1, batch_size=2)
    assert together.shape == (3, 3, 16, 16)
    torch.testing.assert_close(together, split)
    # 3 captions x 3 steps x 2 rows (CFG) of the decoder; the prior's vector rows are not counted
    assert chain.rows == 2 * 18


def test_an_upsampler_after_the_decoder_makes_the_chain_a_cascade(unclip_checkpoints, tmp_path):
    torch.manual_seed(0)
    net = UNet(in_channels=6, out_channels=3, channels=(8, 16), num_res_blocks=1, cond_dim=16, context_dim=16)
    upsampler = Upsampler(
        net, image_shape=(3, 32, 32), low_res_size=16, num_classes=None, text_encoder=text_encoder()
    )
    path = save(perturbed(upsampler), tmp_path / "upsampler.ckpt")
    chain = Unclip.from_checkpoints([unclip_checkpoints["prior"], unclip_checkpoints["decoder"], path])
    for stage in chain.cascade.stages:
        stage.sampler = SamplerSpec("ddim", 2)
    chain.prior.sampler = SamplerSpec("ddim", 2)
    together = sample_unclip(chain, CAPTIONS[:2], batch_size=2)
    apart = sample_unclip(chain, CAPTIONS[:2], batch_size=1)
    assert chain.image_shape == (3, 32, 32) and together.shape == (2, 3, 32, 32)
    torch.testing.assert_close(together, apart)


def test_image_variations_shape_and_determinism(unclip_checkpoints):
    decoder = load_component(unclip_checkpoints["decoder"], kind="denoiser")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    first = image_variations(
        decoder, images, per_image=3, guidance_scale=2.0, sampler=SamplerSpec("ddim", 2), batch_size=4
    )
    again = image_variations(
        decoder, images, per_image=3, guidance_scale=2.0, sampler=SamplerSpec("ddim", 2), batch_size=6
    )
    assert first.shape == (2, 3, 3, 16, 16)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first[:, 0], first[:, 1])


def test_mismatched_decoders_are_refused_with_the_reason(unclip_checkpoints, tmp_path):
    prior = unclip_checkpoints["prior"]
    with pytest.raises(ConfigError, match="trained with different contrastive encoders"):
        Unclip.from_checkpoints([prior, unclip_checkpoints["other_decoder"]])
    wide = save(rgb_encoder(embed_dim=12), tmp_path / "wide.ckpt")
    with pytest.raises(
        ConfigError,
        match=rf"takes image embeddings of size 12 but the prior's contrastive encoder makes embeddings "
        rf"of size {EMBED}",
    ):
        Unclip.from_checkpoints([prior, save(tiny_decoder(wide), tmp_path / "wide_decoder.ckpt")])
    with pytest.raises(ConfigError, match="not an unCLIP decoder"):
        Unclip.from_checkpoints([prior, unclip_checkpoints["denoiser"]])
    with pytest.raises(ConfigError, match=r"of kind 'denoiser'.*not of kind 'prior'"):
        Unclip.from_checkpoints([unclip_checkpoints["decoder"], unclip_checkpoints["decoder"]])
    with pytest.raises(ConfigError, match="got 1 checkpoint"):
        Unclip.from_checkpoints([prior])


# --- sweeps and commands ------------------------------------------------------------------------------


def test_unclip_rows_sit_next_to_the_text_denoiser_rows(unclip_checkpoints, tmp_path):
    chain = str([unclip_checkpoints["prior"], unclip_checkpoints["decoder"]])
    args = text_args(
        unclip_checkpoints,
        tmp_path / "sweep",
        "--methods",
        "[cfg,unclip]",
        "--unclip",
        chain,
        "--prior_scale",
        "2",
        "--prior_candidates",
        "2",
    )
    rows = evaluate.main(args)
    assert [(row["method"], row["scale"]) for row in rows] == [
        ("cfg", 0.0),
        ("cfg", 2.0),
        ("unclip", 0.0),
        ("unclip", 2.0),
    ]
    unclip = rows[2:]
    assert all(row["clip_score"] is not None and row["attribute_accuracy"] is not None for row in unclip)
    assert [row["nfe"] for row in unclip] == [2, 4]
    assert (tmp_path / "sweep" / "grid_unclip_s2.png").is_file()


def test_two_cpu_processes_give_the_same_unclip_rows_as_one(unclip_checkpoints, tmp_path):
    """Prior candidates and decoder noise come from each sample's generator: 2 DDP processes give the
    same samples and metrics as 1."""
    samples, rows = {}, {}
    chain = str([unclip_checkpoints["prior"], unclip_checkpoints["decoder"]])
    for devices in (1, 2):
        out = tmp_path / f"devices{devices}"
        unclip = ["--methods", "[unclip]", "--scales", "[2]", "--unclip", chain, "--prior_candidates", "2"]
        args = text_args(unclip_checkpoints, out, *unclip, "--num_samples", "7", "--save_samples", "true")
        done = run_evaluate(args, devices)
        assert done.returncode == 0, done.stderr[-3000:]
        samples[devices] = np.load(out / "samples_unclip_s2.npz")
        rows[devices] = json.loads((out / "sweep.json").read_text())[0]
    np.testing.assert_array_equal(samples[1]["arr_0"], samples[2]["arr_0"])
    assert list(samples[1]["captions"]) == list(samples[2]["captions"])
    for key in ("fid", "precision", "recall", "clip_score", "attribute_accuracy"):
        assert rows[2][key] == pytest.approx(rows[1][key], abs=1e-6, rel=1e-6), key


def test_zero_prior_candidates_are_refused(unclip_checkpoints, tmp_path):
    with pytest.raises(SystemExit, match="number of prior candidates must be at least 1, got 0"):
        evaluate.main(text_args(unclip_checkpoints, tmp_path / "bad", "--prior_candidates", "0"))
    prior = load_component(unclip_checkpoints["prior"], kind="prior")
    with pytest.raises(ConfigError, match="number of prior candidates must be at least 1"):
        PriorStage(prior, candidates=0)


def test_unclip_sweep_without_its_chain_is_a_clear_error(unclip_checkpoints, tmp_path):
    with pytest.raises(SystemExit, match="method unclip needs its stages: pass --unclip"):
        evaluate.main(text_args(unclip_checkpoints, tmp_path / "bad", "--methods", "[unclip]"))


def test_prior_quality_and_variations_commands(unclip_checkpoints, tmp_path):
    result = run_module(
        "prior-quality",
        unclip_checkpoints["prior"],
        "--n",
        "12",
        "--n_train",
        "30",
        "--sampler.steps",
        "2",
        "--candidates",
        "1",
        "2",
        "--out",
        str(tmp_path / "prior.json"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "prior.json").read_text())["rows"]
    assert [row["predictor"] for row in rows] == ["C_T as C_I", "linear map C_T -> C_I", "prior", "prior"]
    assert all(
        -1 <= row["cosine"] <= 1 and 0 <= row["class_retrieval"] <= 1 and row["frechet"] >= 0 for row in rows
    )
    result = run_module(
        "variations",
        unclip_checkpoints["decoder"],
        "--n",
        "2",
        "--per_image",
        "2",
        "--sampler.steps",
        "2",
        "--out",
        str(tmp_path / "variations"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "variations" / "variations_s3.png").is_file()
    assert list((tmp_path / "variations" / "wandb").glob("offline-run-*"))
    result = run_module("variations", unclip_checkpoints["denoiser"], cwd=tmp_path)
    assert result.returncode != 0 and "not an unCLIP decoder" in result.stderr


def test_the_decoder_stage_takes_multi_condition_guidance(unclip_checkpoints):
    """multi_cfg with the image embedding at the caption's scale is CFG on both (Brooks et al. 2023,
    Eq. 3 with s_I = s_T); another embedding scale changes the samples; a mistyped option is refused when
    the stage is built, before sampling."""
    chain = Unclip.from_checkpoints([unclip_checkpoints["prior"], unclip_checkpoints["decoder"]])
    prior = PriorStage(chain.prior.model, 1.0, 1, SamplerSpec("ddim", 3))
    decoder = chain.cascade.stages[0].model

    def sampled(method: str, options: dict | None) -> torch.Tensor:
        stage = CascadeStage(decoder, SamplerSpec("ddim", 3), 2.0, method=method, method_options=options)
        return sample_unclip(Unclip(prior, Cascade([stage])), CAPTIONS[:2], seed=3, batch_size=2)

    plain = sampled("cfg", None)
    torch.testing.assert_close(sampled("multi_cfg", {"scales": {"image_embedding": 2.0}}), plain)
    assert not torch.allclose(sampled("multi_cfg", {"scales": {"image_embedding": 5.0}}), plain)
    with pytest.raises(ConfigError, match="did you mean scales"):
        CascadeStage(decoder, method="multi_cfg", method_options={"scale": {}})
