"""Conditional instance normalisation (Dumoulin et al. 2017, "A learned representation for artistic style").

CIN(x, s) = gamma_s * (x - mu(x)) / sigma(x) + beta_s: instance norm without affine parameters, then one
learned scale gamma_s and shift beta_s per channel for each condition s (in MicroscopyGAN's CIN-GAN, s is
the defect type). Everything else in a network is shared between the conditions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConditionalInstanceNorm"]


class ConditionalInstanceNorm(nn.Module):
    """Instance norm with a (gamma, beta) pair per channel and per condition, for 1D, 2D or 3D maps.

    Args:
        num_features: channels C.
        n_conditions: conditions S (defect types); ``weight`` and ``bias`` are S x C.
        spatial_dims: 1, 2 or 3: the input is B,C,(Z,)Y,X.
        eps: added to the variance, as in ``nn.InstanceNorm``.

    ``forward(x, condition)``: ``condition`` is a B long tensor (one condition per sample) or an int (the
    same for all). gamma starts at 1 and beta at 0, so every condition starts as plain instance norm.
    """

    def __init__(self, num_features: int, n_conditions: int, spatial_dims: int = 2, eps: float = 1e-5):
        super().__init__()
        if num_features < 1 or n_conditions < 1:
            raise ValueError(f"num_features and n_conditions must be >= 1, got {num_features}, {n_conditions}")
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        self.num_features, self.n_conditions, self.spatial_dims, self.eps = (
            num_features,
            n_conditions,
            spatial_dims,
            eps,
        )
        self.weight = nn.Parameter(torch.ones(n_conditions, num_features))  # gamma_s, per channel
        self.bias = nn.Parameter(torch.zeros(n_conditions, num_features))  # beta_s

    def forward(self, x: torch.Tensor, condition: torch.Tensor | int) -> torch.Tensor:
        """x: B,C,... -> the same shape, normalised per sample and channel, then scaled and shifted by
        ``condition``'s gamma and beta."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"ConditionalInstanceNorm expects B,{self.num_features},... with {self.spatial_dims} spatial "
                f"dimensions, got shape {tuple(x.shape)}"
            )
        condition = torch.as_tensor(condition, device=x.device).long().reshape(-1)
        if condition.numel() == 1:
            condition = condition.expand(x.shape[0])
        if condition.numel() != x.shape[0]:
            raise ValueError(f"condition must hold one value or one per sample ({x.shape[0]}), got {condition.numel()}")
        if condition.min() < 0 or condition.max() >= self.n_conditions:
            raise ValueError(f"condition must lie in 0..{self.n_conditions - 1}, got {condition.tolist()}")
        shape = (x.shape[0], self.num_features) + (1,) * self.spatial_dims
        gamma = self.weight[condition].reshape(shape)
        beta = self.bias[condition].reshape(shape)
        return F.instance_norm(x, eps=self.eps) * gamma + beta

    def extra_repr(self) -> str:
        return f"{self.num_features}, n_conditions={self.n_conditions}, spatial_dims={self.spatial_dims}"
