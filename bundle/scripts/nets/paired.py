"""The paired workflow's networks (wide-field → confocal, arXiv 2403.18026): a residual U-Net G and a conditional D.

- G: MONAI's ``UNet`` with residual units (Kerfoot et al. 2018), 2D by default, 3D with ``spatial_dims=3``;
  no output activation (outputs live in the normalised [-1, 1] range, unclipped, like the inputs). With
  ``residual`` (the default) G(x) = x + UNet(x): it starts from the input and learns the correction (the haze
  to remove, the contrast to change), which a U-Net with small initial weights otherwise reaches only after
  thousands of Adam steps (its output starts near 0, far from the targets' -1 background).
- D: the bundle's :class:`~scripts.nets.networks.PatchDiscriminator2D` with two input channels, the input x and
  an output y side by side (pix2pix's conditional PatchGAN); raw logits, no activation.

The configs (paired_train/inference/evaluate) declare the same ``u_*`` and ``d_*`` keys and build both here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet

from scripts.nets.networks import PatchDiscriminator2D

__all__ = ["InputResidual", "conditional_discriminator", "residual_unet"]


class InputResidual(torch.nn.Module):
    """``x + net(x)``: a network that predicts a correction of its input."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def residual_unet(
    spatial_dims: int = 2,
    channels: Sequence[int] = (32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 2,
    norm: str = "instance",
    residual: bool = True,
) -> torch.nn.Module:
    """G: a one-channel residual U-Net (sides of any size: MONAI's UNet pads odd sizes), x + UNet(x) when
    ``residual``."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    unet = UNet(spatial_dims, 1, 1, tuple(channels), tuple(strides), num_res_units=num_res_units, norm=norm)
    return InputResidual(unet) if residual else unet


def conditional_discriminator(channels: int = 64, n_layers: int = 3, norm: str = "instance") -> PatchDiscriminator2D:
    """D(x, y): a PatchGAN on the input and an output stacked as two channels."""
    return PatchDiscriminator2D(in_channels=2, channels=channels, n_layers=n_layers, norm=norm)
