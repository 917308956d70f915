"""MONAI transforms that MONAI lacks: invertible robust normalisation, focal weights, size checks.

All of them are dictionary transforms working on channel-first MetaTensors (CZYX stacks, CYX images).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform
from scripts.errors import InputError
from scripts.zsegan.focus import (
    ALPHA_RANGE,
    CYCLE_WEIGHT_RANGE,
    focus_weights,
    normalised_sharpness,
    reference_alpha,
    reference_cycle_weights,
)


def _filename(img) -> str:
    meta = getattr(img, "meta", {}) or {}
    return str(meta.get("filename_or_obj", "<in memory>"))


def check_range(lo: float, hi: float, name: str = "<in memory>") -> tuple[float, float]:
    """(lo, hi) as given, or InputError naming ``name`` when they are (almost) equal: constant intensity."""
    if hi - lo < 1e-6:
        raise InputError(name, "has (almost) constant intensity: nothing to enhance")
    return lo, hi


def percentile_range(values, lower: float, upper: float, name: str = "<in memory>") -> tuple[float, float]:
    """The ``lower``/``upper`` percentiles (lo, hi) of all ``values`` (any shape, as float32), exact: linear
    interpolation between order statistics, as ``torch.quantile`` (which takes at most 16 M values) and
    ``scripts.inference.wholeslide.stack_range``; InputError naming ``name`` for (almost) constant intensity."""
    flat = torch.as_tensor(values).detach().cpu().float().flatten().numpy()
    lo, hi = (float(v) for v in np.quantile(flat, [lower / 100.0, upper / 100.0]))
    return check_range(lo, hi, name)


class RobustNormalised(MapTransform, InvertibleTransform):
    """Map the ``lower``/``upper`` intensity percentiles of each stack (or image) to -1 and 1.

    Robust to outliers (dust, hot pixels) and to the brightness of each scan; no clipping, so the
    inverse brings the network's output back to the input's units exactly. The percentiles are kept
    in the transform trace (``applied_operations``), which ``monai.transforms.Invertd`` uses.
    ``intensity_range=(lo, hi)`` maps those given values instead (whole-slide statistics, so every tile
    of a large stack is mapped alike).
    """

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 0.5,
        upper: float = 99.5,
        allow_missing_keys=False,
        intensity_range: tuple[float, float] | None = None,
    ):
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        self.lower, self.upper = lower, upper
        self.intensity_range = intensity_range  # (lo, hi) given: the same mapping for every stack and tile

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if self.intensity_range is not None:
                lo, hi = self.intensity_range
            else:
                values = img.as_tensor() if hasattr(img, "as_tensor") else img
                lo, hi = percentile_range(values, self.lower, self.upper, _filename(img))
            d[key] = (img.float() - lo).mul_(2.0 / (hi - lo)).sub_(1.0)  # in place: one new stack in memory
            self.push_transform(d[key], extra_info={"lo": lo, "hi": hi})
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            info = self.pop_transform(d[key])["extra_info"]
            d[key] = (d[key] + 1.0).mul_((info["hi"] - info["lo"]) / 2.0).add_(info["lo"])
        return d


class FocusWeightsd(MapTransform):
    """Add the per-slice weights of the losses to the data, from the stack under ``keys``.

    Adds ``alpha`` (D_B's focal weight α, eqs 5-6), ``cycle_weight`` (the per-slice weight s of the
    cycle loss, eq 8) and ``sharpness`` (focus measure normalised to the sharpest slice, used by the
    optional identity loss), each of shape (Z,).

    ``mode="dynamic"`` follows where this stack's focal plane really is: the weights go linearly with
    the normalised focus measure from ``*_range[0]`` at the sharpest slice to ``*_range[1]`` at the
    blurriest; the default ranges are those of the reference tables. ``mode="reference"`` uses the
    reference code's fixed 29-plane tables themselves.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        mode: str = "dynamic",
        alpha_range: Sequence[float] = ALPHA_RANGE,
        cycle_range: Sequence[float] = CYCLE_WEIGHT_RANGE,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if mode not in ("dynamic", "reference"):
            raise ValueError(f"mode must be 'dynamic' or 'reference', got {mode!r}")
        self.mode, self.alpha_range, self.cycle_range = mode, tuple(alpha_range), tuple(cycle_range)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            stack = torch.as_tensor(d[key]).float()
            d["sharpness"] = normalised_sharpness(stack)
            if self.mode == "reference":
                depth = stack.shape[-3]
                if depth != 29:
                    raise InputError(_filename(d[key]), f"has {depth} planes; the reference weight tables need 29")
                d["alpha"], d["cycle_weight"] = reference_alpha(depth), reference_cycle_weights(depth)
            else:
                d["alpha"] = focus_weights(stack, *self.alpha_range)
                d["cycle_weight"] = focus_weights(stack, *self.cycle_range)
        return d


class CheckSized(MapTransform):
    """Raise a clear InputError when an image's last two axes are smaller than ``min_size``."""

    def __init__(self, keys: KeysCollection, min_size: Sequence[int], what: str = "image", allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.min_size, self.what = tuple(int(s) for s in min_size), what

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            size = tuple(d[key].shape[-len(self.min_size) :])
            if any(s < m for s, m in zip(size, self.min_size, strict=False)):
                raise InputError(
                    _filename(d[key]),
                    f"{self.what} of size {'x'.join(map(str, size))} is smaller than the "
                    f"{'x'.join(map(str, self.min_size))} it must be cropped to: use larger images or a smaller crop",
                )
        return d
