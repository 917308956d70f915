"""MicroscopyGAN's losses: WGAN-GP (Gulrajani et al. 2017) and the VGG content and style losses.

Paper (repository) → code: critic D, generator G, real defective images x_r, synthesised ones x_f;
Wasserstein estimate W = E[D(x_r)] - E[D(x_f)]; the critic minimises -W + lambda_gp * GP
(:func:`critic_loss`, :func:`gradient_penalty`, lambda_gp = 10); the generator minimises
0.1 * (-E[D(x_f)]) + 1 * content + 1 * style (:func:`generator_adversarial_loss`, :class:`ContentLoss`:
L1 between VGG16 relu3_3 features of G(x) and of its clean input x; :class:`StyleLoss`: Gram matrices
of VGG19 relu1_1-relu4_1 of G(x) against those of real defective images).

The VGG networks are 2D: a 3D batch B,C,Z,Y,X is compared plane by plane (its Z planes become images).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from scripts.nets.vgg import VGGFeatures
from torch import nn

__all__ = [
    "STYLE_LAYERS",
    "ContentLoss",
    "StyleLoss",
    "critic_loss",
    "generator_adversarial_loss",
    "gradient_penalty",
    "gram_matrix",
    "planes",
]

#: VGG19 layers of the style loss (MicroscopyGAN's relu1_1 to relu4_1)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """-W = E[D(x_f)] - E[D(x_r)], which the critic minimises (the gradient penalty is added apart)."""
    return fake_scores.mean() - real_scores.mean()


def generator_adversarial_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """-E[D(x_f)], which the generator minimises."""
    return -fake_scores.mean()


def gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    condition: torch.Tensor | int | None = None,
    weight: float = 10.0,
) -> torch.Tensor:
    """weight * E[(||grad D(x_hat)||_2 - 1)^2] at x_hat = e x_r + (1 - e) x_f, e ~ U(0, 1) per sample.

    ``critic`` maps N,... images to N scores (``scripts.nets.networks.Critic``); ``condition`` goes to it
    when given. The graph is kept (``create_graph``), so the penalty trains the critic.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    e = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat) if condition is None else critic(x_hat, condition)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return weight * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def planes(x: torch.Tensor) -> torch.Tensor:
    """N,C,H,W as it is; B,C,Z,Y,X as B*Z images C,Y,X (the VGG networks are 2D)."""
    if x.dim() == 4:
        return x
    if x.dim() == 5:
        return x.transpose(1, 2).flatten(0, 1)
    raise ValueError(f"expected N,C,H,W images or B,C,Z,Y,X volumes, got shape {tuple(x.shape)}")


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """N,C,H,W -> N,C,C: F F^T / (C H W) (Gatys et al. 2016)."""
    n, c = features.shape[:2]
    flat = features.reshape(n, c, -1)
    return flat @ flat.transpose(1, 2) / flat.shape[1:].numel()


class ContentLoss(nn.Module):
    """L1 distance between VGG16 relu3_3 features: ``loss(output, target)``, 2D images or 3D volumes in
    [-1, 1]. ``weights``: the VGG16 weights file, or None for the hub cache / download
    (``scripts.nets.vgg.load_vgg_weights``); ``weights_tag`` says which were used."""

    def __init__(self, weights: str | os.PathLike | None = None, layer: str = "relu3_3"):
        super().__init__()
        self.vgg = VGGFeatures("vgg16", (layer,), weights)
        self.layer = layer
        self.weights_tag = self.vgg.weights_tag

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """mean |phi(output) - phi(target)| at the layer (target's features without gradient)."""
        with torch.no_grad():
            wanted = self.vgg(planes(target))[self.layer]
        return F.l1_loss(self.vgg(planes(output))[self.layer], wanted)


class StyleLoss(nn.Module):
    """Gram-matrix style loss on VGG19 features: ``loss(output, style)``, the mean over ``layers`` of the
    squared distance between the batch-mean Gram matrices of ``output`` and of the ``style`` images (here:
    real defective images, which need not be paired with ``output`` nor as many)."""

    def __init__(self, weights: str | os.PathLike | None = None, layers: tuple[str, ...] = STYLE_LAYERS):
        super().__init__()
        self.vgg = VGGFeatures("vgg19", layers, weights)
        self.layers = tuple(layers)
        self.weights_tag = self.vgg.weights_tag

    def forward(self, output: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """sum_l mean((G_l(output) - G_l(style))^2) / len(layers), Gram matrices G_l averaged over the batch."""
        with torch.no_grad():
            wanted = {k: gram_matrix(v).mean(0) for k, v in self.vgg(planes(style)).items()}
        got = self.vgg(planes(output))
        return sum(F.mse_loss(gram_matrix(got[k]).mean(0), wanted[k]) for k in self.layers) / len(self.layers)
