"""MONAI transforms that MONAI lacks: invertible robust normalisation (per image, or per microscope system),
focal weights, size checks, and the random nuisances of a wide-field input that MONAI has no transform for
(Poisson-Gaussian noise, out-of-focus haze), with ``nuisance_augmentation``, which composes them with MONAI's own.

All of them are dictionary transforms working on channel-first MetaTensors (CZYX stacks, CYX images).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    InvertibleTransform,
    MapTransform,
    RandAffined,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from scipy import ndimage
from scripts.data.datalist import system_label
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
            lo, hi = self._range(img)
            d[key] = (img.float() - lo).mul_(2.0 / (hi - lo)).sub_(1.0)  # in place: one new stack in memory
            self.push_transform(d[key], extra_info={"lo": lo, "hi": hi})
        return d

    def _range(self, img) -> tuple[float, float]:
        """The (lo, hi) mapped to -1 and 1 for ``img``: given, or its own percentiles."""
        if self.intensity_range is not None:
            return self.intensity_range
        values = img.as_tensor() if hasattr(img, "as_tensor") else img
        return percentile_range(values, self.lower, self.upper, _filename(img))

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            info = self.pop_transform(d[key])["extra_info"]
            d[key] = (d[key] + 1.0).mul_((info["hi"] - info["lo"]) / 2.0).add_(info["lo"])
        return d


class SystemNormalised(RobustNormalised):
    """``RobustNormalised`` by the percentiles of each image's microscope system instead of its own.

    ``ranges``: system -> (lo, hi), e.g. ``scripts.data.pairs.system_intensity_ranges`` of the training images;
    the system is the file name's prefix (``scripts.data.datalist.system_label``: ``A_00000.tif`` is of ``A``).
    An image without a system label, or of a system without a range, is an InputError naming the file.
    Within a system, differences of level (gain, brightness of the specimen) are kept, not normalised away.
    """

    def __init__(self, keys: KeysCollection, ranges: Mapping[str, Sequence[float]], allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        self.ranges = {str(k): check_range(float(v[0]), float(v[1]), f"system {k}") for k, v in ranges.items()}

    def _range(self, img) -> tuple[float, float]:
        name = _filename(img)
        system = system_label(name)
        if system is None:
            raise InputError(name, "has no system label (file names <system>_<name>): needed by system_normalisation")
        if system not in self.ranges:
            raise InputError(name, f"is of system {system}, which has no intensity statistics ({sorted(self.ranges)})")
        return self.ranges[system]

    def for_file(self, path: str) -> RobustNormalised:
        """A ``RobustNormalised`` with the range of the system of ``path`` (for data that does not carry its
        file name, such as ``scripts.inference.sliding_window.enhance``'s)."""
        return RobustNormalised(self.keys, intensity_range=self._range(MetaTensor(0.0, meta={"filename_or_obj": path})))


class _RandNuisanced(RandomizableTransform, MapTransform):
    """With probability ``prob``, one value drawn uniformly from each of ``ranges`` (name -> (low, high), in
    that order, from the transform's generator ``R``; kept as attributes of those names), then ``_apply``
    to each key's image. ``black_level``: the image value that stands for no light."""

    def __init__(self, keys: KeysCollection, prob: float, ranges: dict, black_level: float, allow_missing_keys: bool):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.ranges, self.black_level = {name: tuple(r) for name, r in ranges.items()}, black_level
        for name, r in self.ranges.items():
            setattr(self, name, r[0])

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            for name, r in self.ranges.items():
                setattr(self, name, self.R.uniform(*r))

    def _apply(self, img: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if self._do_transform:
            for key in self.key_iterator(d):
                d[key] = self._apply(d[key])
        return d


class RandPoissonGaussianNoised(_RandNuisanced):
    """Add camera noise, with probability ``prob``: shot noise of variance ``a (x - black_level)`` (a Gaussian
    approximation of Poisson noise; ``x`` below the black level gets none) plus read noise of standard deviation
    ``b``, with ``a`` uniform in ``shot_range`` and ``b`` in ``read_range`` (in the image's units: for a normalised
    wide-field image whose 0.5-99.5 percentiles span 2 with N photo-electrons at the top, one electron is 2 / N, the
    shot ``a`` of the camera itself 2 / N). MONAI's ``RandGaussianNoise`` has no signal-dependent part, and draws
    its standard deviation from [0, std] only. The noise is drawn from the transform's generator (``R``)."""

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.1,
        shot_range: Sequence[float] = (0.0, 0.02),
        read_range: Sequence[float] = (0.0, 0.05),
        black_level: float = -1.0,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, prob, {"shot": shot_range, "read": read_range}, black_level, allow_missing_keys)

    def _apply(self, img: torch.Tensor) -> torch.Tensor:
        variance = (img.detach() - self.black_level).clamp(min=0.0) * self.shot + self.read**2
        noise = torch.as_tensor(self.R.standard_normal(tuple(img.shape)), dtype=img.dtype, device=img.device)
        return img + variance.sqrt() * noise


class RandHazed(_RandNuisanced):
    """Add out-of-focus haze, with probability ``prob``: ``x + h G_s (x - black_level)``, a blurred copy of the
    light above the black level (Gaussian of ``s`` px in y and x, each plane of a stack alone, reflected at the
    borders), ``h`` uniform in ``strength_range``, ``s`` in ``sigma_range``: the light of the planes out of focus
    that a wide-field camera collects, more of it for thicker specimens and lower NA."""

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.1,
        strength_range: Sequence[float] = (0.0, 0.3),
        sigma_range: Sequence[float] = (4.0, 16.0),
        black_level: float = -1.0,
        allow_missing_keys: bool = False,
    ):
        ranges = {"strength": strength_range, "sigma": sigma_range}
        super().__init__(keys, prob, ranges, black_level, allow_missing_keys)

    def _apply(self, img: torch.Tensor) -> torch.Tensor:
        light = np.clip(img.detach().cpu().numpy().astype(np.float32) - self.black_level, 0.0, None)
        sigma = (0.0,) * (light.ndim - 2) + (self.sigma,) * 2
        haze = ndimage.gaussian_filter(light, sigma, mode="reflect")
        return img + self.strength * torch.as_tensor(haze, dtype=img.dtype, device=img.device)


#: The nuisances ``nuisance_augmentation`` draws, in the order it applies them (as they arise: registration,
#: optics, camera): name -> its ranges -> (the least value a range may start at, whether that value itself is
#: excluded; None: any). Each nuisance also has ``prob``. Units: those of the normalised input, px for sizes.
NUISANCE_RANGES: dict[str, dict[str, tuple[float | None, bool]]] = {
    "shift": {"range": (None, False)},  # sub-pixel shift, px, in y and in x (MONAI's RandAffined, bilinear)
    "blur": {"range": (0.0, False)},  # Gaussian sigma, px, in y and in x (MONAI's RandGaussianSmoothd)
    "haze": {"range": (0.0, False), "sigma_px": (0.0, True)},  # strength h and blur s of RandHazed
    "gain": {"range": (-1.0, True)},  # x (1 + f) (MONAI's RandScaleIntensityd)
    "offset": {"range": (None, False)},  # x + o (MONAI's RandShiftIntensityd)
    "noise": {"shot": (0.0, False), "read": (0.0, False)},  # RandPoissonGaussianNoised's a and b
}


def nuisance_must_be(name: str) -> str:
    """What the config value of nuisance ``name`` must be, in words."""

    def bound(field: str, least, strict: bool) -> str:
        return (
            f"{field}: [lo, hi] with " + ("" if least is None else f"{least:g} {'<' if strict else '<='} ") + "lo <= hi"
        )

    fields = [bound(f, *b) for f, b in NUISANCE_RANGES[name].items()]
    return "a mapping {prob: a number in [0, 1], " + ", ".join(fields) + "}"


def nuisance_ok(name: str, value) -> bool:
    """Whether ``value`` is a valid setting of nuisance ``name`` (see ``nuisance_must_be``)."""

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))

    fields = NUISANCE_RANGES[name]
    if not isinstance(value, Mapping) or set(value) != {"prob", *fields}:
        return False
    if not (number(value["prob"]) and 0 <= value["prob"] <= 1):
        return False
    for field, (least, strict) in fields.items():
        r = value[field]
        if not (isinstance(r, (list, tuple)) and len(r) == 2 and all(number(v) for v in r) and r[0] <= r[1]):
            return False
        if least is not None and (r[0] < least or (strict and r[0] == least)):
            return False
    return True


def nuisance_augmentation(spatial_dims: int = 2, keys: KeysCollection = "image", **nuisances: Mapping) -> list:
    """Random transforms over the nuisances that differ between microscope systems, for the input only (``keys``):
    one per nuisance given (``shift``, ``blur``, ``haze``, ``gain``, ``offset``, ``noise``, each a mapping of
    ``prob`` and its ranges, :data:`NUISANCE_RANGES`), in that order, those with ``prob`` 0 left out. MONAI's own
    where it has one; each draws from its own generator (seeded by the DataLoader, saved by checkpoints). A bad
    value is an InputError naming the key and what it must be."""
    for name, value in nuisances.items():
        if name not in NUISANCE_RANGES:
            raise InputError(None, f"unknown nuisance {name!r}: one of {', '.join(NUISANCE_RANGES)}")
        if not nuisance_ok(name, value):
            raise InputError(None, f"--aug_{name} {value!r}: must be {nuisance_must_be(name)}")
    plane = [(0.0, 0.0)] * (spatial_dims - 2)  # z of a stack: not shifted, not blurred
    build = {
        "shift": lambda n: RandAffined(
            keys, prob=n["prob"], translate_range=plane + [tuple(n["range"])] * 2, mode="bilinear",
            padding_mode="border",
        ),
        "blur": lambda n: RandGaussianSmoothd(
            keys, *(plane + [tuple(n["range"])] * 2), prob=n["prob"]
        ),
        "haze": lambda n: RandHazed(keys, n["prob"], n["range"], n["sigma_px"]),
        "gain": lambda n: RandScaleIntensityd(keys, factors=tuple(n["range"]), prob=n["prob"]),
        "offset": lambda n: RandShiftIntensityd(keys, offsets=tuple(n["range"]), prob=n["prob"]),
        "noise": lambda n: RandPoissonGaussianNoised(keys, n["prob"], n["shot"], n["read"]),
    }  # fmt: skip
    return [build[name](nuisances[name]) for name in NUISANCE_RANGES if name in nuisances and nuisances[name]["prob"]]


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
