"""Shape, initialisation, conditioning and error tests for the U-Net and the encoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_diffusion.config import ConfigError, instantiate
from lightning_diffusion.nets import EncoderUNet, UNet
from lightning_diffusion.nets.blocks import group_count


def _param_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _perturb(net: nn.Module) -> None:
    """Add noise to every parameter so zero-initialised layers stop hiding the rest of the net."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("size", [8, 32])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_unet_output_shape(size: int, in_channels: int) -> None:
    net = UNet(in_channels=in_channels, cond_dim=16)
    out = net(torch.randn(2, in_channels, size, size), torch.rand(2), torch.randn(2, 16))
    assert out.shape == (2, in_channels, size, size)


def test_unet_out_channels_and_three_levels() -> None:
    net = UNet(in_channels=3, out_channels=6, channels=(16, 32, 32), attention_levels=(1, 2))
    assert net(torch.randn(2, 3, 8, 8), torch.rand(2)).shape == (2, 6, 8, 8)


def test_unet_output_zero_at_init_then_learns() -> None:
    net = UNet()
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    assert torch.count_nonzero(net(x, t)) == 0
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = nn.functional.mse_loss(net(x, t), torch.randn(4, 1, 8, 8))
    loss.backward()
    optimizer.step()
    assert net(x, t).abs().max() > 0


def test_condition_changes_output() -> None:
    net = UNet(cond_dim=8)
    _perturb(net)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    assert not torch.allclose(net(x, t, torch.randn(2, 8)), net(x, t, torch.randn(2, 8)))


def test_noise_level_changes_output() -> None:
    net = UNet()
    _perturb(net)
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(net(x, torch.full((2,), 0.1)), net(x, torch.full((2,), 0.9)))


def test_indivisible_size_raises_with_size_in_message() -> None:
    net = UNet(channels=(16, 32, 32))
    with pytest.raises(ValueError, match=r"10x10.*3 levels.*multiples of .* = 4 \(e\.g\. 8x8\)"):
        net(torch.randn(1, 1, 10, 10), torch.rand(1))


def test_missing_and_unexpected_cond_raise() -> None:
    x, t = torch.randn(1, 1, 8, 8), torch.rand(1)
    with pytest.raises(ValueError, match=r"cond_dim=4.*cond is None"):
        UNet(cond_dim=4)(x, t)
    with pytest.raises(ValueError, match="cond_dim=None"):
        UNet()(x, t, torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"cond must have shape \(1, 4\)"):
        UNet(cond_dim=4)(x, t, torch.randn(1, 5))


def test_bad_noise_level_shape_and_channels_raise() -> None:
    net = UNet()
    with pytest.raises(ValueError, match="noise_level"):
        net(torch.randn(2, 1, 8, 8), torch.rand(2, 1))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.randn(2, 3, 8, 8), torch.rand(2))


def test_bad_architecture_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="attention_levels"):
        UNet(channels=(32, 64), attention_levels=(2,))
    with pytest.raises(ConfigError, match="num_heads"):
        UNet(channels=(32, 48), num_heads=5)


@pytest.mark.parametrize(
    "net",
    [UNet(in_channels=3, channels=(16, 32), cond_dim=12, dropout=0.1), EncoderUNet(out_dim=7)],
    ids=["unet", "encoder"],
)
def test_spec_rebuilds_same_architecture(net: nn.Module) -> None:
    rebuilt = instantiate(net.spec)
    assert type(rebuilt) is type(net)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in net.parameters()]
    assert _param_count(rebuilt) == _param_count(net)


def test_default_parameter_count_in_range() -> None:
    net = UNet(in_channels=1, cond_dim=128)
    count = _param_count(net)
    print(f"default UNet(cond_dim=128) parameters: {count:,}")
    assert net.cond_dim == 128 and net.emb_dim == 128
    assert 600_000 <= count <= 1_300_000


def test_encoder_output_shape_and_nonzero_at_init() -> None:
    net = EncoderUNet(in_channels=3, out_dim=5)
    out = net(torch.randn(2, 3, 16, 16), torch.rand(2))
    assert out.shape == (2, 5)
    assert out.abs().max() > 0


def test_group_count_rule() -> None:
    assert [group_count(c, g) for c, g in [(32, 8), (96, 32), (12, 8), (7, 8), (4, 32)]] == [8, 32, 6, 7, 4]
