"""Per-slice sharpness of a z-stack, and the per-slice weights built from it.

The paper's alpha(x_par) (eqs 5-6) weighs D_B's loss per slice so that D_B treats slices near the
focal plane as less blurry than the outer ones; the reference code also weighs the cycle loss (eq
8) per slice with a table s. The reference code hard-codes both as Gaussian-shaped tables over
29 planes, centred on plane 14 (:func:`reference_alpha`, :func:`reference_cycle_weights`). The
dynamic version (:func:`focus_weights`) measures each slice's sharpness instead, so it follows
the actual focal plane of each stack and works for any number of planes; its default ranges,
:data:`ALPHA_RANGE` and :data:`CYCLE_WEIGHT_RANGE`, are the tables' (value at focus, value at blur).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.networks.layers import gaussian_1d, separable_filtering

__all__ = [
    "ALPHA_RANGE",
    "CYCLE_WEIGHT_RANGE",
    "focus_measure",
    "focus_weights",
    "normalised_sharpness",
    "reference_alpha",
    "reference_cycle_weights",
    "sharpest_index",
]

#: Gaussian sigma (pixels) applied before the Sobel gradients, against camera noise.
SMOOTHING_SIGMA = 1.0

_REFERENCE_DEPTH = 29


def focus_measure(slices: torch.Tensor) -> torch.Tensor:
    """Gradient energy of each image: (..., Y, X) -> (...), float.

    Mean over pixels of the squared Sobel gradient magnitude, after a Gaussian smoothing of
    ``SMOOTHING_SIGMA`` px; borders are replicate-padded. Sobel kernels are normalised ((1, 2, 1)/4
    smoothing, (-1, 0, 1)/2 difference) so values are in squared intensity units per pixel.
    """
    if slices.ndim < 2:
        raise ValueError(f"focus_measure needs images (..., Y, X), got shape {tuple(slices.shape)}")
    lead, (size_y, size_x) = slices.shape[:-2], slices.shape[-2:]
    dtype = slices.dtype if slices.is_floating_point() else torch.float32
    images = slices.to(dtype).reshape(-1, 1, size_y, size_x)
    gauss = gaussian_1d(torch.tensor(SMOOTHING_SIGMA), truncated=3.0, normalize=True)
    smooth = separable_filtering(images, [gauss, gauss], mode="replicate")
    average = torch.tensor([1.0, 2.0, 1.0]) / 4
    difference = torch.tensor([-1.0, 0.0, 1.0]) / 2
    grad_y = separable_filtering(smooth, [difference, average], mode="replicate")
    grad_x = separable_filtering(smooth, [average, difference], mode="replicate")
    energy = (grad_y**2 + grad_x**2).mean(dim=(1, 2, 3))
    return energy.reshape(lead)


def sharpest_index(stack) -> int:
    """The index of the sharpest slice of a ZYX stack (numpy array or tensor): the highest :func:`focus_measure`."""
    if not isinstance(stack, torch.Tensor):
        stack = torch.as_tensor(np.asarray(stack, dtype=np.float32))
    return int(focus_measure(stack.float()).argmax())


def normalised_sharpness(stack: torch.Tensor) -> torch.Tensor:
    """(C, Z, Y, X) or (Z, Y, X) -> (Z,): focus measure / its maximum over z (1 at the sharpest slice).

    Channels are averaged. A stack with no gradient at all (constant) gives all ones.
    """
    if stack.ndim == 3:
        stack = stack.unsqueeze(0)
    if stack.ndim != 4:
        raise ValueError(f"expected a (C,) Z, Y, X stack, got shape {tuple(stack.shape)}")
    focus = focus_measure(stack).mean(dim=0)
    peak = focus.max()
    if peak <= 0:
        return torch.ones_like(focus)
    return focus / peak


def focus_weights(stack: torch.Tensor, at_focus: float, at_blur: float) -> torch.Tensor:
    """(Z,) per-slice weights, linear in sharpness r: ``at_focus`` at the sharpest slice, ``at_blur`` at the blurriest.

    w = at_focus + (at_blur - at_focus) * (1 - r) / (1 - min r); a stack whose slices are all
    equally sharp gets ``at_focus`` everywhere. The dynamic alpha(x_par) of eqs (5)-(6) with
    :data:`ALPHA_RANGE`, and the cycle weights s with :data:`CYCLE_WEIGHT_RANGE`.
    """
    r = normalised_sharpness(stack)
    spread = 1.0 - r.min()
    if spread <= 0:
        return torch.full_like(r, float(at_focus))
    return at_focus + (at_blur - at_focus) * (1.0 - r) / spread


def _gaussian_table_value(sigma: float, u: float) -> float:
    """The reference code's g(sigma, u) = round(3.4 * N(u; 0, sigma) + 0.1, 2)."""
    pdf = math.exp(-u * u / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi))
    return round(pdf * 3.4 + 0.1, 2)


def _reference_alpha_values() -> list[float]:
    """alpha[z] = g(1.6, 0.2 min(z, 28 - z)) + 0.72 for the 29 planes."""
    last = _REFERENCE_DEPTH - 1
    return [_gaussian_table_value(1.6, 0.2 * min(z, last - z)) + 0.72 for z in range(_REFERENCE_DEPTH)]


def _reference_cycle_values() -> list[float]:
    """s[z] = g(0.46, 0.05 z) up to the centre, round(g(0.45, 0.05 (28 - z)) - 0.01 (z - 14), 2) after."""
    last, centre = _REFERENCE_DEPTH - 1, (_REFERENCE_DEPTH - 1) // 2
    return [
        (
            _gaussian_table_value(0.46, 0.05 * z)
            if z <= centre
            else round(_gaussian_table_value(0.45, 0.05 * (last - z)) - 0.01 * (z - centre), 2)
        )
        for z in range(_REFERENCE_DEPTH)
    ]


def _check_reference_depth(depth: int) -> None:
    """ValueError unless depth is the reference tables' 29 planes."""
    if depth != _REFERENCE_DEPTH:
        raise ValueError(
            f"the reference code's tables exist only for {_REFERENCE_DEPTH} planes, got depth {depth}; "
            "use focus_weights for other depths"
        )


def reference_alpha(depth: int = _REFERENCE_DEPTH) -> torch.Tensor:
    """The reference code's fixed alpha table (29,), float32: 1.67 at the outer planes, 1.0 at plane 14."""
    _check_reference_depth(depth)
    return torch.tensor(_reference_alpha_values(), dtype=torch.float32)


def reference_cycle_weights(depth: int = _REFERENCE_DEPTH) -> torch.Tensor:
    """The reference code's fixed cycle-loss weights s (29,), float32: 3.05 at plane 0, 1.03 at plane 14."""
    _check_reference_depth(depth)
    return torch.tensor(_reference_cycle_values(), dtype=torch.float32)


#: (at_focus, at_blur) for the dynamic alpha: the reference alpha table's min and max (1.0, 1.67).
ALPHA_RANGE: tuple[float, float] = (round(min(_reference_alpha_values()), 2), round(max(_reference_alpha_values()), 2))

#: (at_focus, at_blur) for the dynamic cycle weights: the reference table's min and max (1.03, 3.05).
CYCLE_WEIGHT_RANGE: tuple[float, float] = (
    round(min(_reference_cycle_values()), 2),
    round(max(_reference_cycle_values()), 2),
)
