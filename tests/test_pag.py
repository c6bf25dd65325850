"""Perturbed-attention guidance: the identity attention against hand computations, hooks that leave no
trace, layer names, and the guided combination on tiny denoisers."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_denoiser
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance import PAGOptions, PerturbedAttentionGuidance
from lightning_diffusion.guidance.pag import DEFAULT_LAYERS, attention_layers, perturbed_attention
from lightning_diffusion.nets.blocks import AttentionBlock
from lightning_diffusion.sampling import CountingModel

CHANNELS, HEADS, CONTEXT_DIM = 8, 2, 6


def random_block(context_dim: int | None = None) -> AttentionBlock:
    """An attention block with every parameter random (its output projection is zero-initialised)."""
    torch.manual_seed(0)
    block = AttentionBlock(CHANNELS, HEADS, groups=4, context_dim=context_dim)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.5)
    return block


def value_path(block: AttentionBlock, x: Tensor) -> Tensor:
    """x + proj_out(V): the block's output when each token attends only to itself."""
    values = block.qkv(block.norm(x))[:, 2 * CHANNELS :]
    return x + block.proj_out(values)


def hooks_of(block: AttentionBlock) -> int:
    """How many forward (pre-)hooks the block and its submodules hold."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in block.modules())


def test_identity_attention_gives_the_value_path():
    block, x = random_block(), torch.randn(3, CHANNELS, 4, 4)
    with torch.no_grad(), perturbed_attention([block]):
        out = block(x)
    torch.testing.assert_close(out, value_path(block, x))
    assert not torch.allclose(out, block(x))  # the real attention mixes tokens


def test_only_rows_from_the_first_perturbed_one_change():
    block, x = random_block(), torch.randn(4, CHANNELS, 4, 4)
    with torch.no_grad():
        plain = block(x)
        with perturbed_attention([block], first_row=2):
            out = block(x)
    torch.testing.assert_close(out[:2], plain[:2])
    torch.testing.assert_close(out[2:], value_path(block, x[2:]))


def test_with_cross_attention_only_the_self_attention_map_becomes_the_identity():
    """Each token attends to itself and to the (unmasked) context tokens, in one softmax."""
    block, x = random_block(CONTEXT_DIM), torch.randn(2, CHANNELS, 2, 2)
    context, mask = torch.randn(2, 3, CONTEXT_DIM), torch.tensor([[True, True, False], [True, False, False]])
    with torch.no_grad():
        with perturbed_attention([block]):
            out = block(x, context, mask)
        qkv = block.qkv(block.norm(x)).reshape(2, 3, HEADS, CHANNELS // HEADS, 4)
        q, k, v = qkv.transpose(-1, -2).unbind(1)
        context_k, context_v = block.context_kv(context).reshape(2, 3, 2, HEADS, -1).permute(2, 0, 3, 1, 4)
        keys, values = torch.cat([k, context_k], dim=2), torch.cat([v, context_v], dim=2)
        own = torch.eye(4, dtype=torch.bool).expand(2, 4, 4)
        allowed = torch.cat([own, mask[:, None].expand(2, 4, 3)], dim=2)
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed[:, None])
        expected = x + block.proj_out(attended.transpose(-1, -2).reshape(2, CHANNELS, 2, 2))
    torch.testing.assert_close(out, expected)


def test_hooks_are_removed_after_the_call_and_after_an_exception():
    block, x = random_block(CONTEXT_DIM), torch.randn(2, CHANNELS, 2, 2)
    context = torch.randn(2, 1, CONTEXT_DIM)
    before = {key: value.clone() for key, value in block.state_dict().items()}
    with torch.no_grad():
        plain = block(x, context)
        with perturbed_attention([block]):
            block(x, context)
        assert hooks_of(block) == 0
        with pytest.raises(RuntimeError, match="boom"), perturbed_attention([block]):
            raise RuntimeError("boom")
        assert hooks_of(block) == 0
        torch.testing.assert_close(block(x, context), plain)
    assert all(torch.equal(before[key], value) for key, value in block.state_dict().items())


def batch(n: int = 3, labels: bool = True) -> tuple[Tensor, Tensor, dict]:
    z, t = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.full((n,), 0.6)
    return z, t, ({"label": torch.arange(n)} if labels else {})


def perturbed_estimate(model, z: Tensor, t: Tensor, cond: dict, layers=DEFAULT_LAYERS) -> Tensor:
    blocks = [attention_layers(model)[name] for name in layers]
    with perturbed_attention(blocks):
        return model.denoise(z, t, cond)


@torch.no_grad()
def test_pag_on_an_unconditional_denoiser_is_one_batched_pass_from_the_plain_towards_away_from_perturbed():
    model = tiny_denoiser(num_classes=None)
    counted, (z, t, cond) = CountingModel(model), batch(labels=False)
    guided = PerturbedAttentionGuidance(2.5).guide(counted, z, t, cond)
    plain, perturbed = model.denoise(z, t, cond), perturbed_estimate(model, z, t, cond)
    assert counted.rows == 2 * len(z)
    assert not torch.allclose(plain, perturbed)
    torch.testing.assert_close(guided.denoised, plain + 1.5 * (plain - perturbed))
    torch.testing.assert_close(guided.reference, plain)
    assert hooks_of(attention_layers(model)["down.middle.0.attn"]) == 0


@torch.no_grad()
def test_pag_at_scale_one_is_exactly_the_plain_estimate_in_one_pass():
    model = tiny_denoiser()
    counted, (z, t, cond) = CountingModel(model), batch()
    guided = PerturbedAttentionGuidance(1.0).guide(counted, z, t, cond)
    assert counted.rows == len(z)
    assert torch.equal(guided.denoised, model.denoise(z, t, cond))
    assert guided.reference is guided.denoised


@torch.no_grad()
def test_pag_at_scale_zero_is_the_perturbed_estimate_in_one_pass():
    model = tiny_denoiser()
    counted, (z, t, cond) = CountingModel(model), batch()
    guided = PerturbedAttentionGuidance(0.0).guide(counted, z, t, cond)
    assert counted.rows == len(z)
    torch.testing.assert_close(guided.denoised, perturbed_estimate(model, z, t, cond))
    assert guided.reference is None


@torch.no_grad()
def test_pag_with_cfg_adds_both_differences_in_one_pass():
    model = tiny_denoiser()
    counted, (z, t, cond) = CountingModel(model), batch()
    layers = ("down.levels.1.0.attn", "down.middle.0.attn")
    guided = PerturbedAttentionGuidance(3.0, layers=layers, cfg_scale=2.0).guide(counted, z, t, cond)
    plain = model.denoise(z, t, cond)
    null = model.denoise(z, t, model.null_condition(len(z), z.device))
    perturbed = perturbed_estimate(model, z, t, cond, layers)
    assert counted.rows == 3 * len(z)
    torch.testing.assert_close(guided.denoised, plain + (plain - null) + 2.0 * (plain - perturbed))


def test_an_unknown_layer_is_refused_with_the_list_of_attention_layers():
    model = tiny_denoiser()
    z, t, cond = batch()
    with pytest.raises(ConfigError, match=r"\['middle'\].*down\.middle\.0\.attn"):
        PerturbedAttentionGuidance(2.0, layers=["middle"]).guide(model, z, t, cond)
    with pytest.raises(ConfigError, match=r"down\.levels\.1\.0\.attn"):
        PerturbedAttentionGuidance(2.0, layers=["down.middle.0.res"]).check_model(model)
    PerturbedAttentionGuidance(2.0).check_model(model)


@pytest.mark.parametrize("layers", [[], "down.middle.0.attn"])
def test_layers_must_be_a_non_empty_list(layers):
    with pytest.raises(ConfigError, match="non-empty list"):
        PerturbedAttentionGuidance(2.0, layers=layers)


def test_a_compiled_network_is_refused():
    model = tiny_denoiser()
    model.net.compile()
    with pytest.raises(ConfigError, match="without --compile"):
        PerturbedAttentionGuidance(2.0).check_model(model)


def test_the_options_are_the_constructor_keywords():
    guidance = PerturbedAttentionGuidance(2.0, **asdict(PAGOptions(layers=("down.levels.1.0.attn",))))
    assert guidance.layers == ("down.levels.1.0.attn",) and guidance.cfg_scale == 1.0
