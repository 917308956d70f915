"""The paired workflow's networks: residual U-Net G (2D, 3D) and the conditional PatchGAN D."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import ResidualUnit
from scripts.nets.paired import conditional_discriminator, residual_unet

TINY = {"channels": (4, 8, 16), "strides": (2, 2)}


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 1, 32, 32)), (3, (1, 1, 8, 16, 16))])
def test_the_generator_keeps_the_shape(spatial_dims, shape):
    g = residual_unet(spatial_dims, **TINY)
    assert g(torch.zeros(shape)).shape == shape
    assert any(isinstance(m, ResidualUnit) for m in g.modules())  # a residual U-Net


@pytest.mark.parametrize("residual", [True, False])
def test_the_generator_takes_any_size_and_scripts(residual):
    g = residual_unet(2, **TINY, residual=residual).eval()
    x = torch.rand(1, 1, 33, 47)
    assert g(x).shape == x.shape
    assert residual_unet(3, **TINY)(torch.zeros(1, 1, 5, 18, 20)).shape == (1, 1, 5, 18, 20)
    with torch.no_grad():
        assert torch.equal(torch.jit.script(g)(x), g(x))  # the zoo's TorchScript export
    zero = residual_unet(2, **TINY, residual=residual)
    for p in zero.parameters():
        torch.nn.init.zeros_(p)
    assert torch.equal(zero(x), x if residual else torch.zeros_like(x))  # x + UNet(x)


def test_the_generator_refuses_other_dimensionalities_and_a_residual_that_is_not_a_boolean():
    with pytest.raises(ValueError, match="spatial_dims"):
        residual_unet(1)
    with pytest.raises(ValueError, match="residual must be True or False, got 'false'"):
        residual_unet(2, **TINY, residual="false")


def test_the_discriminator_sees_input_and_output_together():
    d = conditional_discriminator(channels=8, n_layers=3)
    assert d(torch.zeros(2, 2, 32, 32)).shape == (2, 1, 4, 4)
    with pytest.raises(RuntimeError):
        d(torch.zeros(2, 1, 32, 32))  # the output alone is not enough


def test_a_z_stack_in_as_channels_gives_its_middle_plane_out():
    """--input_planes: 3 planes in, one out; the residual adds the middle plane (the confocal image's)."""
    g = residual_unet(2, **TINY, in_channels=3).eval()
    x = torch.rand(2, 3, 33, 47)
    assert g(x).shape == (2, 1, 33, 47)
    with torch.no_grad():
        assert torch.equal(torch.jit.script(g)(x), g(x))
    for p in g.parameters():
        torch.nn.init.zeros_(p)
    assert torch.equal(g(x), x[:, 1:2])
    d = conditional_discriminator(channels=8, n_layers=3, input_channels=3)
    assert d(torch.zeros(2, 4, 32, 32)).shape == (2, 1, 4, 4)  # all the input's planes beside the output


def test_a_linear_top_lets_the_output_scale_where_the_norm_of_the_top_fixes_its_spread():
    """MONAI's top up-convolution normalises G's one output channel per image: doubling its weights changes nothing.
    With top_conv_only it is a plain convolution: with the last residual unit's convolution zeroed, doubling the top's
    weights and bias doubles UNet(x)."""
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for top_conv_only, expected in ((False, 1.0), (True, 2.0)):
        torch.manual_seed(0)
        g = residual_unet(2, **TINY, residual=False, top_conv_only=top_conv_only).eval()
        top = g.net.model[-1]  # the top up-layer: (transposed convolution, residual unit)
        assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in top[0].modules()) is not top_conv_only
        torch.nn.init.zeros_(top[1].conv.unit0.conv.weight)
        torch.nn.init.zeros_(top[1].conv.unit0.conv.bias)
        with torch.no_grad():
            before = g(x)
            top[0].conv.weight.mul_(2)
            top[0].conv.bias.mul_(2)
            after = g(x)
        assert before.abs().max() > 0.1  # a real output, not zeros
        # relative to the output's size (the norm's eps moves a normalised output by a little, never by a factor 2)
        assert float((after - expected * before).norm() / (expected * before).norm()) < 1e-3
        with torch.no_grad():
            assert torch.equal(torch.jit.script(g)(x), g(x))


def test_top_conv_only_must_be_a_boolean():
    with pytest.raises(ValueError, match="top_conv_only must be True or False, got 'true'"):
        residual_unet(2, **TINY, top_conv_only="true")
