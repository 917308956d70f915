"""The paired workflow's networks (wide-field → confocal, arXiv 2403.18026): a residual U-Net G and a conditional D.

- G: MONAI's ``UNet`` with residual units (Kerfoot et al. 2018), 2D by default, 3D with ``spatial_dims=3``;
  no output activation (outputs live in the normalised [-1, 1] range, unclipped, like the inputs). With
  ``top_conv_only``, its top up-convolution (to G's one output channel) is a plain convolution: MONAI's keeps a
  norm and activation there, which set the spread of each image's output (or correction) to a constant, so that G
  can change it only through outliers (docs/paired.md, "Hot pixels"). With
  ``residual`` (the default) G(x) = x + UNet(x): it starts from the input and learns the correction (the haze
  to remove, the contrast to change), which a U-Net with small initial weights otherwise reaches only after
  thousands of Adam steps (its output starts near 0, far from the targets' -1 background).
  Inputs of any size: padded (replicate) to a multiple of the strides' product (8) and cropped back. With
  ``in_channels`` > 1 (``--input_planes``: a wide-field z-stack's planes around the target's, as channels), the
  output is one plane and the residual adds the middle channel.
- D: the bundle's :class:`~scripts.nets.networks.PatchDiscriminator2D` on the input x (all its channels) and an
  output y side by side (pix2pix's conditional PatchGAN); raw logits, no activation.

The configs (paired_train/inference/evaluate) declare the same ``u_*`` and ``d_*`` keys and build both here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from scripts.nets.networks import PatchDiscriminator2D

__all__ = ["PairedGenerator", "conditional_discriminator", "residual_unet", "UNetLinearTop"]


class UNetLinearTop(UNet):
    """MONAI's ``UNet`` whose top up-convolution has no norm and activation when it has residual units (without
    them, MONAI's has none already): its output is linear in the last features, not normalised per image."""

    def _get_up_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> torch.nn.Module:
        layer = super()._get_up_layer(in_channels, out_channels, strides, is_top)
        if is_top and self.num_res_units > 0:
            del layer[0].adn  # the transposed convolution's norm, dropout and activation
        return layer


class PairedGenerator(torch.nn.Module):
    """``net`` on inputs of any size: padded (replicate) at the end of each spatial axis to a multiple of
    ``multiple`` (what the U-Net's strides need) and cropped back; ``x + net(x)`` when ``residual`` (x's middle
    channel when it has several: the plane the output shows)."""

    def __init__(self, net: torch.nn.Module, multiple: int, residual: bool = True):
        super().__init__()
        if not isinstance(residual, bool):  # the string "false" from a command line would be true
            raise ValueError(f"residual must be True or False, got {residual!r}")
        self.net, self.multiple, self.residual = net, int(multiple), residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for d in range(x.dim() - 1, 1, -1):  # F.pad takes the last axis first
            pads.append(0)
            pads.append((-x.shape[d]) % self.multiple)
        padded = F.pad(x, pads, mode="replicate")
        y = self.net(padded)
        if self.residual:
            middle = padded.shape[1] // 2
            y = y + padded[:, middle : middle + 1]
        for d in range(2, x.dim()):
            y = y.narrow(d, 0, x.shape[d])
        return y


def residual_unet(
    spatial_dims: int = 2,
    channels: Sequence[int] = (32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 2,
    norm: str = "instance",
    residual: bool = True,
    in_channels: int = 1,
    top_conv_only: bool = False,
) -> PairedGenerator:
    """G: a residual U-Net to one channel for inputs of any size, x + UNet(x) when ``residual``; ``in_channels``: the
    input's (planes of a wide-field z-stack, ``--input_planes``); ``top_conv_only``: no norm and activation on the
    top up-convolution (:class:`UNetLinearTop`; False builds the weights shipped before 0.13.0)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if not isinstance(top_conv_only, bool):
        raise ValueError(f"top_conv_only must be True or False, got {top_conv_only!r}")
    unet = (UNetLinearTop if top_conv_only else UNet)(
        spatial_dims, in_channels, 1, tuple(channels), tuple(strides), num_res_units=num_res_units, norm=norm
    )
    return PairedGenerator(unet, math.prod(strides), residual)


def conditional_discriminator(
    channels: int = 64, n_layers: int = 3, norm: str = "instance", input_channels: int = 1
) -> PatchDiscriminator2D:
    """D(x, y): a PatchGAN on the input (``input_channels``) and an output (one channel) stacked as channels."""
    return PatchDiscriminator2D(in_channels=input_channels + 1, channels=channels, n_layers=n_layers, norm=norm)
