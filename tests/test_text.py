"""Text conditioning: tokenizer and its bad input, cross-attention, the caption-conditional denoiser,
CLIP guidance against a hand computation, and caption prompts drawn per sample."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor

from lightning_diffusion.components import Denoiser
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import CosineSchedule, sample_generators
from lightning_diffusion.guidance import ClassifierFree, ClipGuidance
from lightning_diffusion.nets import UNet
from lightning_diffusion.nets.text import TextTransformer, Tokenizer, caption_vocabulary
from lightning_diffusion.sweep.prompts import Prompts

CAPTIONS = ["a red circle at the top", "a blue square at the left", ""]
VOCAB = caption_vocabulary(CAPTIONS)


def text_encoder(width: int = 16, context_length: int = 8) -> TextTransformer:
    torch.manual_seed(0)
    return TextTransformer(VOCAB, context_length=context_length, width=width, layers=1, heads=2)


def text_denoiser(p_uncond: float = 0.1) -> Denoiser:
    torch.manual_seed(0)
    net = UNet(in_channels=1, channels=(8, 16), num_res_blocks=1, cond_dim=16, context_dim=16)
    model = Denoiser(
        net, image_shape=(1, 8, 8), num_classes=None, text_encoder=text_encoder(), p_uncond=p_uncond
    )
    with torch.no_grad():  # wake the zero-initialised layers so conditions visibly reach the output
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def probe(n: int = 3) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.linspace(0.2, 0.8, n)


def test_empty_caption_is_start_and_end_and_unknown_words_warn():
    tokenizer = Tokenizer(VOCAB, context_length=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, mask, end = tokenizer.encode(["", "a red circle"])
    assert mask.sum(1).tolist() == [2, 5] and end.tolist() == [1, 4]
    with pytest.warns(UserWarning, match=r"mapped to <unk>: \['purple'\]"):
        tokenizer.encode(["a purple circle"])


def test_long_captions_are_truncated_with_a_warning_keeping_the_end_token():
    tokenizer = Tokenizer(VOCAB, context_length=5)
    with pytest.warns(UserWarning, match="caption of 6 words was truncated .* context of 3 words"):
        ids, mask, end = tokenizer.encode(["a red circle at the top"])
    assert mask.all() and ids[0, -1] == tokenizer.index["<end>"] and end.tolist() == [4]


def test_bad_tokenizer_input_is_a_config_error():
    with pytest.raises(ConfigError, match="list of strings, got a single string"):
        Tokenizer(VOCAB, 8).encode("a red circle")
    with pytest.raises(ConfigError, match="distinct words"):
        Tokenizer(["red", "red"], 8)
    with pytest.raises(ConfigError, match="at least 3"):
        Tokenizer(VOCAB, 2)


def test_padding_does_not_change_the_text_encoding():
    short, long = text_encoder(context_length=8), text_encoder(context_length=12)
    long.load_state_dict({**short.state_dict(), "position_embedding": torch.cat(
        [short.position_embedding.detach(), torch.zeros(4, 16)])})  # fmt: skip
    short.eval(), long.eval()
    a, b = short(CAPTIONS), long(CAPTIONS)
    torch.testing.assert_close(a.pooled, b.pooled, rtol=1e-5, atol=1e-5)


def test_cross_attention_reads_real_tokens_and_ignores_padding():
    torch.manual_seed(0)
    net = UNet(in_channels=1, channels=(8, 16), num_res_blocks=1, cond_dim=None, context_dim=4)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    z, t = probe(2)
    context = torch.randn(2, 5, 4)
    mask = torch.tensor([[True, True, True, False, False]] * 2)
    base = net(z, t, context=context, context_mask=mask)
    padded = context.clone()
    padded[:, 3:] = 100.0
    torch.testing.assert_close(net(z, t, context=padded, context_mask=mask), base)
    changed = context.clone()
    changed[:, 1] += 1.0
    assert (net(z, t, context=changed, context_mask=mask) - base).abs().max() > 1e-4
    with pytest.raises(ValueError, match="context_dim=4 but forward got no `context`"):
        net(z, t)


def test_text_denoiser_follows_its_caption_and_the_empty_caption_is_null():
    model = text_denoiser().eval()
    z, t = probe()
    with torch.no_grad():
        missing = model.denoise(z, t)
        null = model.denoise(z, t, {"caption": [""] * 3})
        conditional = model.denoise(z, t, {"caption": [*CAPTIONS[:2], ""]})
    torch.testing.assert_close(missing, null, rtol=0, atol=0)
    assert (conditional[:2] - null[:2]).abs().max() > 1e-4
    torch.testing.assert_close(conditional[2], null[2], rtol=1e-5, atol=1e-6)
    assert model.null_condition(2, z.device) == {"caption": ["", ""]}


def test_text_cfg_batches_caption_and_empty_caption_in_one_pass():
    model = text_denoiser().eval()
    z, t = probe()
    cond = {"caption": CAPTIONS}
    with torch.no_grad():
        guided = ClassifierFree(3.0)(model, z, t, cond)
        expected = model.denoise(z, t, {"caption": [""] * 3}).lerp(model.denoise(z, t, cond), 3.0)
    torch.testing.assert_close(guided, expected, rtol=1e-5, atol=1e-5)


def test_caption_dropout_replaces_captions_by_the_empty_caption():
    model = text_denoiser(p_uncond=0.5)
    captions = ["a red circle"] * 4000
    torch.manual_seed(0)
    dropped = model.training_condition({"image": torch.zeros(4000, 1, 1, 1), "caption": captions})["caption"]
    assert set(dropped) == {"", "a red circle"} and abs(dropped.count("") / 4000 - 0.5) < 0.04


def test_text_denoiser_needs_captions_in_the_data_and_matching_widths():
    model = text_denoiser()
    with pytest.raises(ConfigError, match="text-conditional but the data has no captions"):
        model.training_condition(
            {"image": torch.zeros(2, 1, 8, 8), "label": torch.zeros(2, dtype=torch.long)}
        )
    net = UNet(in_channels=1, channels=(8, 16), num_res_blocks=1, cond_dim=16, context_dim=8)
    with pytest.raises(ConfigError, match=r"set net\.init_args\.context_dim to 16"):
        Denoiser(net, image_shape=(1, 8, 8), num_classes=None, text_encoder=text_encoder())


class LinearClip:
    """A toy contrastive model: C_I(z, t) = (1 + t) flatten(z), C_T(caption) = a fixed vector per caption,
    similarity = logit_scale C_T . C_I."""

    def __init__(self) -> None:
        self.logit_scale = torch.tensor(2.0)
        self.table = {
            c: torch.randn(64, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(CAPTIONS)
        }
        self.text_calls = 0

    def similarity(self, z: Tensor, t: Tensor, text: Tensor) -> Tensor:
        return self.logit_scale * ((1 + t).reshape(-1, 1) * z.flatten(1) * text).sum(dim=1)

    def text_embedding(self, captions: list[str]) -> Tensor:
        self.text_calls += 1
        return torch.stack([self.table[c] for c in captions])


class EchoModel:
    """D(z, t, cond) = z / 2, whatever the condition; records the conditions it saw."""

    schedule = CosineSchedule()

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def denoise(self, z: Tensor, t: Tensor, cond: dict | None = None) -> Tensor:
        self.seen.append(dict(cond or {}))
        return z / 2

    def null_condition(self, batch_size: int, device: torch.device) -> dict:
        return {"caption": [""] * batch_size}


def test_clip_guidance_adds_the_tweedie_scaled_gradient_of_the_similarity():
    model, clip = EchoModel(), LinearClip()
    z, t = probe()
    cond = {"caption": CAPTIONS}
    guidance = ClipGuidance(clip, 1.5)
    with torch.no_grad():
        first = guidance(model, z, t, cond)
        guidance(model, z, t, cond)
    alpha, sigma = model.schedule.alpha_sigma(t)
    text = torch.stack([clip.table[c] for c in CAPTIONS])
    gradient = (2.0 * (1 + t).reshape(-1, 1) * text).reshape(z.shape)
    expected = z / 2 + (1.5 * sigma**2 / alpha).reshape(-1, 1, 1, 1) * gradient
    torch.testing.assert_close(first, expected)
    assert model.seen[0] == {"caption": [""] * 3}  # the base is the unconditional estimate
    assert clip.text_calls == 1  # caption embeddings computed once per caption list


def test_clip_guidance_at_zero_scale_is_unconditional_and_needs_captions_otherwise():
    model, clip = EchoModel(), LinearClip()
    z, t = probe()
    torch.testing.assert_close(ClipGuidance(clip, 0.0)(model, z, t, {"caption": CAPTIONS}), z / 2)
    assert clip.text_calls == 0
    with pytest.raises(ConfigError, match="CLIP guidance needs the captions"):
        ClipGuidance(clip, 1.0)(model, z, t, {})


def test_caption_prompts_are_drawn_per_sample_whatever_the_batch():
    prompts = Prompts(captions=["a", "b", "c"], labels=torch.tensor([0, 1, 2]))
    whole = prompts.draw(sample_generators(0, range(6), torch.device("cpu")))
    halves = [
        prompts.draw(sample_generators(0, part, torch.device("cpu"))) for part in (range(3), range(3, 6))
    ]
    assert whole.captions == halves[0].captions + halves[1].captions
    assert [("a", "b", "c")[i] for i in whole.labels.tolist()] == whole.captions
    assert whole.cond["caption"] == whole.captions and torch.equal(whole.cond["label"], whole.labels)


def test_empty_caption_list_is_a_config_error():
    with pytest.raises(ConfigError, match="list of captions is empty"):
        Prompts(captions=[])


def test_clip_in_an_interval_falls_back_to_its_unconditional_base_outside_it():
    from lightning_diffusion.guidance import GuidanceInterval

    model, clip = EchoModel(), LinearClip()
    z, _ = probe()
    t = torch.full((3,), 0.99)  # sigma/alpha far above the interval
    with torch.no_grad():
        out = GuidanceInterval(ClipGuidance(clip, 2.0), 0.1, 1.0)(model, z, t, {"caption": CAPTIONS})
    torch.testing.assert_close(out, z / 2)
    assert model.seen == [{"caption": [""] * 3}] and clip.text_calls == 0


def test_clip_guidance_works_under_inference_mode():
    model, clip = EchoModel(), LinearClip()
    z, t = probe()
    with torch.inference_mode():
        out = ClipGuidance(clip, 1.0)(model, z.clone(), t.clone(), {"caption": CAPTIONS})
    assert torch.isfinite(out).all()
