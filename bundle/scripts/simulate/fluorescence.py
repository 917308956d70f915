"""Simulated wide-field / confocal fluorescence pairs: the embedded default data of the paired workflow.

The specimen is the brightfield simulator's (:mod:`scripts.simulate.zstacks`: a 10-14 um thick brain
section with cells, processes and neuropil), read as a fluorophore density (its per-voxel absorbance
becomes the local concentration of dye) and imaged in fluorescence by two instruments, as in arXiv
2403.18026 (a wide-field and a confocal microscope). Arrays are YX, uint16; everything is deterministic
from a ``numpy.random.Generator`` (``simulate_pairs``: one seed, an independent child seed per image).

**Wide-field.** Plane at depth ``w_f`` of the section: ``WF = sum_j OTF_em(w_j - w_f) (*) c_j``, the
sum over the specimen's layers ``j`` of their density ``c_j`` convolved with the defocus OTF of the
emission (:func:`scripts.simulate.optics.otf`: circular pupil x Gaussian core x geometric defocus
disc). Every OTF conserves energy (``OTF[0, 0] = 1``): all out-of-focus light reaches the camera as
a blurred haze, the larger the thicker the section.

**Confocal** (point-scanning, point pinhole). The 3D PSF is the product of the excitation and emission
PSFs, ``h_c(r, dz) = h_ex(r, dz) h_em(r, dz)`` (each the inverse FFT of that OTF; excitation at
0.488 um, emission at 0.52 um), normalised to 1 in focus. Its integral over a plane falls with
``|dz|`` (about as ``1 / dz^2``): optical sectioning, the haze is gone.

**Camera.** Each image is exposed so that its 99.9th percentile (noise-free) collects ``photons``
photo-electrons, plus ``stray`` times its mean as uniform stray light / autofluorescence (wide-field
only); Poisson shot noise, Gaussian read noise ``read_noise`` (electrons), then ``gain`` DN per
electron on an ``offset`` of 100 DN, rounded and clipped to uint16. The confocal collects more
photons and has no stray light: less noise.

**Systems** (:data:`SYSTEMS`): three wide-field microscopes that differ in NA, immersion, pixel size,
photons, read noise, stray light (haze) and gain; the confocal (:data:`CONFOCAL`) is rendered on the
wide-field image's pixel grid (the pair as registered onto one grid).

**Nuisances** between the two acquisitions, each a switch (0 turns it off): ``jitter_px`` sub-pixel
misregistration of the wide-field image (uniform in +-jitter in y and x, a Fourier shift),
``focus_offset_um`` (the wide-field focal plane uniform in +-that of the confocal's),
``gain_jitter`` (the wide-field camera's gain times uniform 1 +- that) and ``bleaching`` (the confocal,
acquired second, dimmer by a uniform 0..that fraction).

Code names: ``c_j`` = ``spectrum`` (rfft2 of each layer's density), ``w_f`` = ``focus_um``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scripts.simulate.optics import frequency_grid, otf
from scripts.simulate.zstacks import SPECIMEN_V1, _child, _params, _Specimen, ensure_generated

__all__ = ["CONFOCAL", "NUISANCES", "SYSTEMS", "ensure_paired_dataset", "simulate_pair", "simulate_pairs"]

logger = logging.getLogger("zsegan")

#: The simulated wide-field microscopes (``name`` -> optics and camera).
SYSTEMS: dict[str, dict] = {
    "A": {"na": 0.75, "n_medium": 1.0, "pixel_um": 0.5, "photons": 400, "read_noise": 3, "stray": 0.05, "gain": 1.0},
    "B": {"na": 0.9, "n_medium": 1.0, "pixel_um": 0.4, "photons": 250, "read_noise": 2, "stray": 0.1, "gain": 2.0},
    "C": {"na": 1.3, "n_medium": 1.515, "pixel_um": 0.32, "photons": 150, "read_noise": 6, "stray": 0.2, "gain": 0.5},
}  # fmt: skip
#: The confocal microscope (the high-quality reference of every pair).
CONFOCAL: dict = {"na": 1.2, "n_medium": 1.33, "photons": 2000.0, "read_noise": 1.0, "stray": 0.0, "gain": 1.0}
#: Cross-system nuisances, each a switch (0: off).
NUISANCES: dict = {"jitter_px": 0.5, "focus_offset_um": 0.5, "gain_jitter": 0.2, "bleaching": 0.2}
EXCITATION_UM, EMISSION_UM, CORE_SIGMA_UM, OFFSET_DN = 0.488, 0.52, 0.1, 100.0


def _tan(optics: dict) -> float:
    return math.tan(math.asin(optics["na"] / optics["n_medium"]))


def _widefield_otfs(rho: np.ndarray, dz: np.ndarray, optics: dict) -> np.ndarray:
    """OTF of each layer ``dz`` um from focus: every one conserves energy (haze)."""
    return otf(rho, dz, optics["na"], optics["n_medium"], EMISSION_UM, CORE_SIGMA_UM)


def _confocal_otfs(rho: np.ndarray, dz: np.ndarray, optics: dict, field: int) -> np.ndarray:
    """OTF of each layer for the confocal PSF h_ex h_em, normalised to 1 at focus (sectioning)."""
    args = (optics["na"], optics["n_medium"])
    planes = np.concatenate([[0.0], dz])
    h_ex = sfft.irfft2(otf(rho, planes, *args, EXCITATION_UM, CORE_SIGMA_UM), s=(field, field))
    h_em = sfft.irfft2(otf(rho, planes, *args, EMISSION_UM, CORE_SIGMA_UM), s=(field, field))
    spectra = sfft.rfft2(h_ex * h_em).real
    return spectra[1:] / spectra[0, 0, 0]


def _image(spectrum: np.ndarray, otfs: np.ndarray, field: int, pad: int, size: int, shift=(0.0, 0.0)) -> np.ndarray:
    """The density seen through ``otfs`` (layer by layer, summed), shifted by ``shift`` px, cropped."""
    image = np.einsum("lyx,lyx->yx", otfs.astype(np.complex64), spectrum)
    if any(shift):
        image = ndimage.fourier_shift(image, shift, n=field, axis=-1)
    return np.maximum(sfft.irfft2(image, s=(field, field))[pad : pad + size, pad : pad + size], 0.0)


def _expose(rng: np.random.Generator, image: np.ndarray, camera: dict, gain: float) -> np.ndarray:
    """Poisson-Gaussian camera: ``photons`` electrons at the 99.9th percentile, stray light, read noise, gain."""
    electrons = image * (camera["photons"] / max(float(np.percentile(image, 99.9)), 1e-12))
    electrons = electrons + camera["stray"] * electrons.mean()
    counts = rng.poisson(electrons) + rng.normal(0.0, camera["read_noise"], image.shape)
    return np.clip(np.rint(OFFSET_DN + gain * counts), 0, 65535).astype(np.uint16)


def simulate_pair(
    rng: np.random.Generator,
    size: int = 128,
    system: str = "A",
    specimen: dict | None = None,
    planes: int = 1,
    plane_step_um: float = 1.0,
    **nuisances: float,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One registered pair ``(widefield, confocal, info)`` of one place of a specimen (uint16 YX, ``size``²).

    ``system``: a key of :data:`SYSTEMS`; ``specimen`` overrides :data:`scripts.simulate.zstacks.SPECIMEN_V1`
    (``{"thickness_um": (3.0, 5.0)}``: a thin section); ``planes`` > 1 (odd): the wide-field image is a z-stack (ZYX) of
    that many planes ``plane_step_um`` apart, the confocal's plane in the middle, exposed as one acquisition (one
    exposure scale for all planes); ``nuisances`` override :data:`NUISANCES`. ``info`` holds the
    drawn nuisances (``shift_px`` (y, x), ``focus_offset_um``, ``gain``, ``bleaching``), the system and the
    wide-field optics (``na``, ``n_medium``, ``pixel_um``) for the deconvolution baseline.
    """
    unknown = sorted(set(nuisances) - set(NUISANCES))
    if planes < 1 or planes % 2 == 0:
        raise ValueError(f"planes must be odd and positive (the confocal's plane in the middle), got {planes}")
    if unknown or system not in SYSTEMS:
        raise ValueError(
            f"unknown system {system!r} or nuisance(s) {unknown}: systems {list(SYSTEMS)}, {list(NUISANCES)}"
        )
    n = {**NUISANCES, **nuisances}
    wide = SYSTEMS[system]
    widest = max((wide, CONFOCAL), key=_tan)  # the specimen's field is padded by the widest blur
    p = _params(
        {
            **SPECIMEN_V1,
            **(specimen or {}),
            "pixel_um": wide["pixel_um"],
            "na": widest["na"],
            "n_medium": widest["n_medium"],
        }
    )
    spec = _Specimen(rng, p, size, 0.0, n["focus_offset_um"])
    spectrum = spec.spectrum()
    depths = (spec.j0 + np.arange(spec.layers)) * spec.h  # w_j, um; the section's middle at 0
    rho = frequency_grid((spec.field, spec.field), wide["pixel_um"], half=True)
    focus_offset = float(rng.uniform(-1.0, 1.0) * n["focus_offset_um"])
    shift = tuple(float(s) for s in rng.uniform(-1.0, 1.0, 2) * n["jitter_px"])
    gain = wide["gain"] * float(1.0 + rng.uniform(-1.0, 1.0) * n["gain_jitter"])
    bleach = float(rng.uniform(0.0, 1.0) * n["bleaching"])
    crop = (spec.field, spec.pad, size)
    offsets = (np.arange(planes) - planes // 2) * plane_step_um  # the wide-field planes around the confocal's
    widefield = np.stack(
        [_image(spectrum, _widefield_otfs(rho, depths - focus_offset - dz, wide), *crop, shift) for dz in offsets]
    )
    confocal = _image(spectrum, _confocal_otfs(rho, depths, CONFOCAL, spec.field), *crop)
    photons = CONFOCAL["photons"] * (1.0 - bleach)
    info = {
        "system": system,
        "shift_px": shift,
        "focus_offset_um": focus_offset,
        "gain": gain,
        "bleaching": bleach,
        **{k: wide[k] for k in ("na", "n_medium", "pixel_um")},
    }
    return (
        _expose(rng, widefield if planes > 1 else widefield[0], wide, gain),
        _expose(rng, confocal, {**CONFOCAL, "photons": photons}, CONFOCAL["gain"]),
        info,
    )


def simulate_pairs(
    out_dir,
    n_per_system: int = 40,
    size: int = 128,
    systems: tuple[str, ...] = tuple(SYSTEMS),
    seed: int = 0,
    progress: bool = True,
    specimen: dict | None = None,
    planes: int = 1,
    plane_step_um: float = 1.0,
    **nuisances: float,
) -> dict:
    """Write ``<out_dir>/widefield/<system>_NNNNN.tif`` and ``<out_dir>/confocal/<same name>`` (uint16 YX,
    the system's pixel size recorded), ``n_per_system`` pairs for each of ``systems``. Pair ``i`` of a
    system depends only on ``seed``, the system and ``i``; ``specimen``, ``planes`` (wide-field z-stacks, ZYX, for
    ``--input_planes``) and ``plane_step_um`` as in :func:`simulate_pair`. Returns a
    summary (``dir``, ``n_pairs``, ``systems``, ``size``, ``seed``, ``seconds``).
    """
    from scripts.data.io import write_image, write_stack

    out, start = Path(out_dir), time.perf_counter()
    for k, system in enumerate(systems):
        kind = 2 + list(SYSTEMS).index(system)  # zstacks uses child kinds 0 and 1
        for i in range(n_per_system):
            widefield, confocal, info = simulate_pair(
                _child(seed, kind, i), size, system, specimen, planes, plane_step_um, **nuisances
            )
            spacing = (info["pixel_um"], info["pixel_um"])
            if planes > 1:
                meta = {"dtype": "uint16", "spacing": (plane_step_um, *spacing), "unit": "um"}
                write_stack(out / "widefield" / f"{system}_{i:05d}.tif", widefield, meta)
            else:
                write_image(out / "widefield" / f"{system}_{i:05d}.tif", widefield, spacing)
            write_image(out / "confocal" / f"{system}_{i:05d}.tif", confocal, spacing)
        if progress:
            logger.info("simulated %d/%d systems of pairs", k + 1, len(systems))
    return {
        "dir": str(out),
        "n_pairs": n_per_system * len(systems),
        "systems": list(systems),
        "size": size,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 2),
    }


def ensure_paired_dataset(dataset_dir, simulate: bool = True, **kwargs) -> Path:
    """If ``dataset_dir`` has no wide-field images, simulate the pairs there (``kwargs`` to :func:`simulate_pairs`).
    With ``simulate`` False (a folder the user named: a typo must not train on simulated data), a folder
    without wide-field images is an InputError."""

    def describe(summary: dict) -> str:
        return (
            f"simulated {summary['n_pairs']} wide-field/confocal pairs of systems {', '.join(summary['systems'])} "
            f"into {dataset_dir} in {summary['seconds']:.1f} s"
        )

    hint = "put the wide-field images there and their confocal partners in confocal/, see docs/paired.md"
    return ensure_generated(
        dataset_dir, "widefield", simulate_pairs, describe, "paired dataset", simulate, hint, **kwargs
    )
