"""Simulated defects of z-stacks for MicroscopyGAN's multi-defect restoration: clean/defective pairs per task.

Clean volumes are the sharp ground truth of the brightfield specimen model (``simulate_stack``'s ``truth``:
uint8 ZYX, what an ideal isotropic microscope would show). Each task degrades them in its own way (every
number is a key of :data:`DEFECTS`, overridable by keyword):

- ``denoising``: Poisson-Gaussian noise at a few photon levels. A volume draws one level ``P`` from
  ``photon_levels`` (photons at full scale, 255 DN); each voxel counts Poisson(P c / 255) photons plus
  Gaussian read noise of ``read_noise`` photons, and is scaled back: (counts) * 255 / P, clipped to
  0-255 like a saturating 8-bit camera (at P = 10 the bright background, ~200 DN, saturates often).
- ``axial`` (axial inpainting, CARE's axial model, Weigert et al. 2018): a Gaussian blur along Z of
  ``axial_sigma`` planes (the elongated axial PSF), every ``axial_factor``-th plane kept (0, n, 2n, ...),
  the missing planes interpolated back from the kept ones (spline order ``order``, 1: linear).
- ``super_resolution``: a lateral Gaussian blur of ``sr_sigma`` px (default ``sr_factor`` / 2: a coarser
  PSF that also keeps the sampling from aliasing), every ``sr_factor``-th pixel kept in Y and X, then
  interpolated back to the full grid.

Defective volumes lie on the clean volume's grid (uint8 ZYX, the same shape), so a restorer maps a volume
to one of the same size, and the defective input itself is the interpolation baseline for axial and SR.

The dataset (:func:`simulate_defect_dataset`) follows MicroscopyGAN's limited-data setting: a few real
pairs per task (``n_pairs``, 10), unpaired clean volumes (``n_clean``, for the CIN-GAN to add defects to)
and held-out test pairs (``n_test``), all of independent specimens, deterministic from ``seed``::

    <dir>/clean/sim_NNNNN.tif                              unpaired clean volumes
    <dir>/<task>/train/{clean,defective}/sim_NNNNN.tif     the few real pairs (same names)
    <dir>/<task>/test/{clean,defective}/sim_NNNNN.tif      held-out pairs
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from scripts.errors import InputError
from scripts.simulate.zstacks import _STACK_META, SPECIMEN_V1, _child, ensure_generated, simulate_stack

__all__ = [
    "DEFECTS",
    "TASKS",
    "add_defect",
    "axial_defect",
    "check_task",
    "ensure_defect_dataset",
    "noise_defect",
    "simulate_defect_dataset",
    "super_resolution_defect",
]

logger = logging.getLogger("zsegan")

TASKS = ("denoising", "axial", "super_resolution")

#: parameters of the defects (override any by keyword)
DEFECTS: dict = {
    "photon_levels": (10.0, 30.0, 100.0),  # photons at full scale (255 DN); one per volume
    "read_noise": 2.0,  # photons
    "axial_factor": 4,  # every n-th plane kept
    "axial_sigma": 2.0,  # planes, the axial blur
    "sr_factor": 4,  # every n-th pixel kept in Y and X
    "sr_sigma": None,  # px, the lateral blur; None: sr_factor / 2
    "order": 1,  # spline order of the interpolation back to the full grid (1 linear, 3 cubic)
}


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`TASKS`, else one clear InputError."""
    if task not in TASKS:
        raise InputError(None, f"unknown defect task {task!r}; the tasks are {', '.join(TASKS)}")
    return task


def _params(params: dict) -> dict:
    unknown = sorted(set(params) - set(DEFECTS))
    if unknown:
        raise InputError(None, f"unknown defect parameter(s) {', '.join(unknown)}; known: {', '.join(DEFECTS)}")
    p = {**DEFECTS, **params}
    for key in ("axial_factor", "sr_factor"):
        if int(p[key]) != p[key] or p[key] < 2:
            raise InputError(None, f"{key} must be an integer >= 2, got {p[key]!r}")
    if not p["photon_levels"] or min(p["photon_levels"]) <= 0:
        raise InputError(None, f"photon_levels must be positive, got {p['photon_levels']!r}")
    if p["order"] not in (0, 1, 2, 3, 4, 5):
        raise InputError(None, f"order must be a spline order 0-5, got {p['order']!r}")
    return p


def _to_uint8(volume: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(volume), 0, 255).astype(np.uint8)


def noise_defect(clean: np.ndarray, rng: np.random.Generator, photons: float, read_noise: float) -> np.ndarray:
    """Poisson-Gaussian noise: Poisson(photons * c / 255) + N(0, read_noise), back in DN (uint8)."""
    counts = rng.poisson(np.asarray(clean, np.float64) * (photons / 255.0))
    counts = counts + rng.normal(0.0, read_noise, clean.shape)
    return _to_uint8(counts * (255.0 / photons))


def _subsample_and_back(blurred: np.ndarray, factor: int, axes: tuple[int, ...], order: int) -> np.ndarray:
    """Keep every ``factor``-th sample (0, n, 2n, ...) along ``axes`` and interpolate back to the full grid."""
    kept = blurred[tuple(slice(None, None, factor) if a in axes else slice(None) for a in range(blurred.ndim))]
    coords = np.meshgrid(
        *(np.arange(n) / factor if a in axes else np.arange(n, dtype=float) for a, n in enumerate(blurred.shape)),
        indexing="ij",
    )
    return ndimage.map_coordinates(kept, coords, order=order, mode="nearest", prefilter=order > 1)


def axial_defect(clean: np.ndarray, factor: int, sigma: float, order: int = 1) -> np.ndarray:
    """CARE's axial model: blur along Z (``sigma`` planes), keep every ``factor``-th plane, interpolate back."""
    blurred = ndimage.gaussian_filter1d(np.asarray(clean, np.float64), sigma, axis=0, mode="nearest")
    return _to_uint8(_subsample_and_back(blurred, factor, (0,), order))


def super_resolution_defect(clean: np.ndarray, factor: int, sigma: float | None = None, order: int = 1) -> np.ndarray:
    """Lateral blur (``sigma`` px, default ``factor`` / 2), every ``factor``-th pixel in Y and X, interpolated back."""
    sigma = factor / 2 if sigma is None else sigma
    blurred = ndimage.gaussian_filter(np.asarray(clean, np.float64), (0, sigma, sigma), mode="nearest")
    return _to_uint8(_subsample_and_back(blurred, factor, (1, 2), order))


def add_defect(clean: np.ndarray, task: str, rng: np.random.Generator, **params) -> np.ndarray:
    """The defective version (uint8, the same shape) of a clean ZYX volume for ``task`` (:data:`TASKS`);
    ``params`` override :data:`DEFECTS`. Only denoising draws from ``rng`` (a photon level and the noise)."""
    check_task(task)
    p = _params(params)
    if clean.ndim != 3:
        raise ValueError(f"expected a ZYX volume, got shape {clean.shape}")
    if task == "denoising":
        photons = float(rng.choice(np.asarray(p["photon_levels"], float)))
        return noise_defect(clean, rng, photons, p["read_noise"])
    if task == "axial":
        return axial_defect(clean, int(p["axial_factor"]), p["axial_sigma"], p["order"])
    return super_resolution_defect(clean, int(p["sr_factor"]), p["sr_sigma"], p["order"])


def simulate_defect_dataset(
    out_dir,
    tasks: tuple[str, ...] | list[str] = TASKS,
    n_pairs: int = 10,
    n_clean: int = 20,
    n_test: int = 10,
    size: int = 64,
    depth: int = 29,
    seed: int = 0,
    progress: bool = True,
    **defects,
) -> dict:
    """Write the defect dataset (module docstring) for ``tasks``; ``defects`` override :data:`DEFECTS`.
    Every volume is an independent specimen that depends only on ``seed``, its task, split and index.
    Returns a summary: ``dir``, ``tasks``, ``n_pairs``, ``n_clean``, ``n_test``, ``size``, ``depth``,
    ``seed`` and ``seconds``."""
    from scripts.data.io import write_stack

    tasks = [check_task(t) for t in tasks]
    _params(defects)  # bad parameters fail before any simulation
    out, start = Path(out_dir), time.perf_counter()

    def clean_volume(kind: int, index: int) -> tuple[np.ndarray, np.random.Generator]:
        rng = _child(seed, kind, index)
        return simulate_stack(rng, size=size, depth=depth, **SPECIMEN_V1)[1], rng

    for i in range(n_clean):
        write_stack(out / "clean" / f"sim_{i:05d}.tif", clean_volume(2, i)[0], dict(_STACK_META))
    for t, task in enumerate(tasks):
        for s, (split, n) in enumerate((("train", n_pairs), ("test", n_test))):
            for i in range(n):
                clean, rng = clean_volume(3 + 2 * TASKS.index(task) + s, i)
                defective = add_defect(clean, task, rng, **defects)
                write_stack(out / task / split / "clean" / f"sim_{i:05d}.tif", clean, dict(_STACK_META))
                write_stack(out / task / split / "defective" / f"sim_{i:05d}.tif", defective, dict(_STACK_META))
        if progress:
            logger.info("simulated the %s pairs (%d/%d tasks)", task, t + 1, len(tasks))
    return {
        "dir": str(out),
        "tasks": tasks,
        "n_pairs": n_pairs,
        "n_clean": n_clean,
        "n_test": n_test,
        "size": size,
        "depth": depth,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 2),
    }


def ensure_defect_dataset(dataset_dir, simulate: bool = True, **kwargs) -> Path:
    """If ``dataset_dir`` has no clean volumes (missing or empty clean/), generate the defect dataset there
    (the unpaired clean volumes moved in last, so an interrupted generation starts over) and say so;
    otherwise leave it untouched. Returns the path; ``kwargs`` go to :func:`simulate_defect_dataset`.
    With ``simulate`` False (a folder the user named: a typo must not train on simulated data), a folder
    that does not exist or holds no clean volumes is an InputError."""
    for task in kwargs.get("tasks", TASKS):
        check_task(task)

    def describe(summary: dict) -> str:
        return (
            f"simulated {summary['n_pairs']} + {summary['n_test']} test pairs for {', '.join(summary['tasks'])} "
            f"and {summary['n_clean']} unpaired clean volumes into {dataset_dir} in {summary['seconds']:.1f} s"
        )

    hint = "put the unpaired clean volumes there and the pairs in <task>/train/, see docs/multidefect.md"
    return ensure_generated(
        dataset_dir, "clean", simulate_defect_dataset, describe, "defect dataset", simulate, hint, **kwargs
    )
