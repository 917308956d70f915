"""Paired datasets (wide-field → confocal): the layout, the checks of every pair, the split by image.

``<dataset_dir>/widefield/`` the inputs (2D images: TIFF/PNG; or z-stacks: TIFF/npz/NIfTI, ``ndim`` 3; or, with
                            ``input_planes`` > 1, z-stacks of that many planes around the target's plane)
``<dataset_dir>/confocal/``  the targets, the same file names (with ``input_planes``: 2D, the middle plane's)
``<dataset_dir>/truth/``     optional, the same file names (not used for training)

Every pair is read and checked before training or evaluation starts; a bad pair stops the run with one
:class:`~scripts.errors.InputError` naming the file: a partner missing on either side, a wrong number of
dimensions (the readers'), sizes that differ (with ``input_planes``: y and x, and a number of planes other than
``input_planes``), or a misregistration larger than ``max_shift_px`` as
measured by phase correlation (``skimage.registration.phase_cross_correlation``, to 0.1 px).

The split is by image (pair), made before any augmentation, so no view of a test image is trained on.

Per-system normalisation (``system_intensity_ranges``): the system of a pair is its file name's prefix
(``A_00000.tif``: system ``A``, ``scripts.data.datalist.system_label``), as the simulator names them. At inference,
``inference_system_ranges`` takes the ranges a G was trained with and adds those of systems it was not trained on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from scripts.data.datalist import system_label
from scripts.data.io import IMAGE_SUFFIXES, STACK_SUFFIXES, list_files, read_image, read_stack
from scripts.data.transforms import percentile_range
from scripts.errors import InputError
from skimage.registration import phase_cross_correlation

__all__ = [
    "check_input_planes",
    "check_same_system_ranges",
    "inference_system_ranges",
    "middle_plane",
    "misregistration",
    "paired_datalist",
    "split_by_image",
    "system_intensity_ranges",
    "valid_input_planes",
]

logger = logging.getLogger("zsegan")


def _read(path: Path, ndim: int) -> np.ndarray:
    return (read_image(path) if ndim == 2 else read_stack(path))[0]


def misregistration(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The shift (px, one value per axis) that registers ``b`` onto ``a``, by phase correlation to 0.1 px."""
    shift, _, _ = phase_cross_correlation(np.asarray(a, np.float32), np.asarray(b, np.float32), upsample_factor=10)
    return np.asarray(shift, dtype=float)


def paired_datalist(
    dataset_dir: str | Path,
    ndim: int = 2,
    max_shift_px: float | None = 2.0,
    inputs: str = "widefield",
    targets: str = "confocal",
    input_planes: int = 1,
) -> list[dict[str, str]]:
    """``[{"image": input, "label": target}, ...]`` of a paired dataset, sorted by name, every pair checked.

    ``ndim``: 2 for images, 3 for z-stacks; ``max_shift_px``: the largest misregistration accepted (None:
    not measured), measured on the input's middle plane with ``input_planes``; ``input_planes`` > 1 (with ``ndim``
    2): every input is a z-stack of that many planes (ZYX, the target's plane in the middle), the target a 2D image.
    """
    planes = check_input_planes(input_planes, ndim)
    suffixes = IMAGE_SUFFIXES if ndim == 2 and planes == 1 else STACK_SUFFIXES
    root = Path(dataset_dir)
    sources = {f.name: f for f in list_files(root / inputs, suffixes)}
    partners = {f.name: f for f in list_files(root / targets, suffixes)} if (root / targets).is_dir() else {}
    for here, there, files, others in ((inputs, targets, sources, partners), (targets, inputs, partners, sources)):
        for name, path in files.items():
            if name not in others:
                raise InputError(
                    path, f"has no partner in {root / there}: every {here} file needs one of the same name"
                )
    items = []
    for name in sorted(sources):
        x, y = _read(sources[name], 3 if planes > 1 else ndim), _read(partners[name], ndim)
        if planes > 1:
            if x.shape[0] != planes:
                raise InputError(
                    sources[name], f"has {x.shape[0]} planes, not input_planes {planes}: every input needs as many"
                )
            x = x[planes // 2]
        if x.shape != y.shape:
            sizes = f"{'x'.join(map(str, x.shape))} and {'x'.join(map(str, y.shape))}"
            raise InputError(sources[name], f"and its {targets} partner differ in size ({sizes}): register them first")
        if max_shift_px is not None:
            shift = misregistration(x, y)
            if np.abs(shift).max() > max_shift_px:
                shift_str = ", ".join(f"{s:.1f}" for s in shift)
                raise InputError(
                    sources[name],
                    f"is misregistered with its {targets} partner by ({shift_str}) px (phase correlation), more than "
                    f"max_shift_px {max_shift_px}: register the pair, or leave it out",
                )
        items.append({"image": str(sources[name]), "label": str(partners[name])})
    logger.info(f"checked {len(items)} pairs in {root}")
    return items


def valid_input_planes(input_planes) -> bool:
    """Whether ``input_planes`` is 1 or an odd number of planes (an int, not a bool): the target's plane in the
    middle."""
    is_int = isinstance(input_planes, int) and not isinstance(input_planes, bool)
    return is_int and input_planes >= 1 and input_planes % 2 == 1


def check_input_planes(input_planes, ndim: int = 2) -> int:
    """``input_planes`` as an int: 1 (one plane in, as the target), or an odd number > 1 with ``ndim`` 2 (a z-stack
    around the target's plane in, planes as channels); anything else is a ValueError naming the key."""
    if not valid_input_planes(input_planes):
        raise ValueError(
            f"input_planes must be 1 or an odd number of planes (the target's in the middle), got {input_planes!r}"
        )
    if input_planes > 1 and ndim != 2:
        raise ValueError(f"input_planes {input_planes} needs spatial_dims 2 (planes as channels), got {ndim}")
    return input_planes


def middle_plane(images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The middle channel (plane) of each CYX input, as a 1YX tensor: the plane an ``input_planes`` target shows."""
    return [image[image.shape[0] // 2 :][:1] for image in images]


def split_by_image(
    items: Sequence[dict], val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0, train_prefixes=None
) -> tuple[list, list, list]:
    """(train, validation, test) by image: a seeded shuffle of the pairs, before any augmentation.

    ``train_prefixes``: when given, only pairs whose file name starts with one of them (a simulated system,
    e.g. ["A", "B"]) may be trained or validated on; the others all go to the test set (unseen systems).
    """
    if not (0.0 <= val_fraction and 0.0 <= test_fraction and val_fraction + test_fraction < 1.0):
        raise ValueError(
            f"need val_fraction, test_fraction >= 0 with a sum below 1, got {val_fraction}, {test_fraction}"
        )

    def seen(item) -> bool:
        return train_prefixes is None or Path(item["image"]).name.startswith(tuple(train_prefixes))

    order, unseen = [i for i in items if seen(i)], [i for i in items if not seen(i)]
    random.Random(seed).shuffle(order)
    n_test, n_val = round(len(order) * test_fraction), round(len(order) * val_fraction)
    if len(order) - n_test - n_val < 1:
        raise InputError(None, f"{len(order)} pairs are too few to train on after the validation and test splits")

    def by_name(part) -> list:
        return sorted(part, key=lambda item: item["image"])

    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return by_name(train), by_name(val), by_name(test + unseen)


def system_intensity_ranges(
    fit: Sequence[dict],
    items: Sequence[dict] = (),
    lower: float = 0.5,
    upper: float = 99.5,
    ndim: int = 2,
    known: Mapping[str, Sequence[float]] | None = None,
    hint: str = "leave it false for this dataset",
) -> dict[str, tuple[float, float]]:
    """{system: (lo, hi)}: the ``lower``/``upper`` percentiles of all the input images (``"image"``) of each system,
    pooled, for ``scripts.data.transforms.SystemNormalised``.

    Computed on ``fit`` (the training split) for its systems; a system of ``items`` that ``fit`` lacks (a system never
    trained on) gets the percentiles of its own input images in ``items``, inputs only, never the targets: what a
    lab with a new microscope can compute from its own images. ``known``: ranges computed before (a trained G's,
    ``inference_system_ranges``), kept as they are, their systems not read again. Every file must carry a system
    label (its name's prefix, ``A_00000.tif``); one that does not is an InputError naming it, ending with ``hint``.
    """
    known = {str(k): (float(v[0]), float(v[1])) for k, v in (known or {}).items()}
    groups: dict[str, list[Path]] = {}
    for part in (fit, items):
        found: dict[str, list[Path]] = {}
        for item in part:
            system = system_label(item["image"])
            if system is None:
                raise InputError(
                    item["image"],
                    "has no system label (file names <system>_<name>, such as A_00000.tif): system_normalisation "
                    f"needs one for every file; {hint}",
                )
            if system not in groups and system not in known:
                found.setdefault(system, []).append(Path(item["image"]))
        groups.update(found)
    ranges = dict(known)
    for system, paths in sorted(groups.items()):
        values = np.concatenate([np.asarray(_read(path, ndim), np.float32).ravel() for path in paths])
        ranges[system] = percentile_range(values, lower, upper, f"system {system} ({paths[0].parent})")
        whose = f"{len(paths)} input images: {ranges[system]}"
        if known:
            logger.info(
                f"system {system} is not among the systems G was trained on ({', '.join(sorted(known))}): mapped by "
                f"the percentiles {lower}/{upper} of its own {whose}"
            )
        else:
            logger.info(f"system {system}: percentiles {lower}/{upper} of {whose}")
    return ranges


def inference_system_ranges(
    settings: Mapping,
    items: Sequence[dict],
    system_normalisation: bool | None = None,
    lower: float = 0.5,
    upper: float = 99.5,
    ndim: int = 2,
    model: str = "G",
) -> dict[str, tuple[float, float]] | None:
    """{system: (lo, hi)} to map each input of ``items`` by, as G was trained, or None: each input by its own
    percentiles (``RobustNormalised``), as for a G trained without ``system_normalisation``.

    ``settings``: how G was trained to be applied (``scripts.ops.registry.trained_settings``): its ``system_ranges``,
    the training inputs' ranges per system, when it was trained with ``system_normalisation``. A system of ``items``
    without a stored range gets the percentiles of its own inputs in ``items`` pooled (``system_intensity_ranges``,
    one log line), as paired_evaluate.yaml does for a system never trained on; an input without a system label is an
    InputError naming it. ``system_normalisation``: None, as G was trained; True, the same but an InputError naming
    the key when G (``model``, its file or URI) carries no ranges; False, each input by its own percentiles whatever G
    was trained with (a warning when that is not how it was trained).
    """
    stored = settings.get("system_ranges")
    if not stored:
        if system_normalisation:
            raise InputError(
                None,
                f"--system_normalisation True: {model} carries no per-system intensity ranges (it was trained "
                "without system_normalisation): leave the key null (as G was trained) or false",
            )
        return None
    if system_normalisation is False:
        logger.warning(
            f"{model} was trained with system_normalisation, but --system_normalisation false maps each input by its "
            "own percentiles: G is not applied as it was trained"
        )
        return None
    hint = (
        f"G was trained with it ({model}): name the file <system>_<name> (G's systems: {', '.join(sorted(stored))}; "
        "another gets its own inputs' range), or pass --system_normalisation false to map it by its own percentiles"
    )
    ranges = system_intensity_ranges((), items, lower, upper, ndim, known=stored, hint=hint)
    logger.info(f"inputs mapped by their systems' intensity ranges, as G was trained (system_normalisation): {ranges}")
    return ranges


def check_same_system_ranges(settings: Mapping, others: Mapping[str, Mapping], model: str = "G") -> None:
    """InputError naming the model when a generator evaluated beside G (``others``: its file or URI → its trained
    settings) was trained with other per-system ranges than G (``settings``): one mapping serves them all, so a
    baseline trained otherwise would be scored on inputs it was not trained for."""
    for name, other in others.items():
        if other.get("system_ranges") != settings.get("system_ranges"):
            raise InputError(
                name,
                f"was trained with other per-system intensity ranges than {model} (system_normalisation differs, or "
                "another split): train both with the same switch and data, as the evaluation maps inputs once for both",
            )
