"""Simulated brightfield z-scans of a stained thin tissue section: the embedded default data.

Everything is deterministic from a ``numpy.random.Generator`` (``simulate_dataset``: from one seed,
with an independent child seed per file). Arrays are ZYX (stacks) and YX (images), uint8. Every
number below is a default of ``DEFAULTS`` and can be overridden by keyword. This is version 2
(:data:`SIMULATOR_VERSION`) of the data, fitted to the real zse-brain stacks by measurement
(``tools/sim_realism.py``, docs/simulation.md); :data:`SPECIMEN_V1` gives version 1's specimen and
optics (the paired and defect datasets keep them).

**Specimen.** A 3D absorbance volume (natural-log absorbance per voxel) of a section of brain tissue
8-12 um thick (``thickness_um``), stained for cell bodies (Nissl-like), sampled at ``pixel_um``
(1 um) laterally and in layers ``layer_um`` (0.5 um) deep:

- neurons (26 per 100 x 100 um): dark bodies with a granular texture (``cell_texture`` 0.8),
  ellipsoids (middle semi-axis 4.5-9 um, the long one 1.2-1.5x, the short one 0.75-1x that), most
  tapered into a cone on a flattened base (pyramidal), 70% pointing their apex along the field's main
  direction (as in cortex), the rest randomly oriented; inside each a paler nucleus towards the base with a dark
  nucleolus; a quarter of them weakly stained; glia (6 per 100 x 100 um): small (2.2-3.5 um), dense,
  round-ish bodies. Cell depths are stratified over the section (as much above its middle as below)
  and the section's surfaces cut the cells that cross them;
- processes: thin curved fibres (1-2 px wide, tapering) leaving 75% of the neurons (an apical
  dendrite from the apex, 15-50 um, and 0-2 basal ones) and free fibres (12 per 100 x 100 um,
  30-100 um long, mostly along the main direction), wandering slowly in depth;
- neuropil: a weak stain filling the section with a coarse granular 3D texture (``texture`` 2.5
  relative std before clipping at zero, 0.5 um laterally, 1 um in depth), small specks at random
  depths (0.3 per um^2) and a mid-scale mottling, streaky along the main direction (paler and darker
  patches);
- a large-scale stain variation over the field (+-30%, multiplies all absorbance).

The section's middle lies at the focal depth ``zf`` (in plane units, 0-based), drawn uniformly so
that the returned sharpest plane ``round(zf)`` is uniform over ``focal_range`` (default for 29
planes: 10..18, 0-based, i.e. planes 11..19 counted from 1: the middle plane +-4; for other depths
the middle +- 4 * depth / 29). The section
tilts across the field (random direction, up to ``max_tilt`` = 1.5 planes per 128 um): every
object's depth is shifted by the tilt at its position. A plain gradient-energy argmax over planes
lies within about +-2 planes of ``round(zf)`` (the sharp plateau of a thick section is broad and the
content decides where in it the maximum falls), like the real stacks' 11..19 (counted from 1).

**Optics** (:func:`_render`, :mod:`scripts.simulate.optics`): incoherent imaging, layer by layer,
that keeps the light: each pixel's shadow ``1 - exp(-A)`` (``A`` its column's absorbance) is shared
among the layers by their absorbance and each share is blurred by the defocus OTF of its distance
from the focal plane; the image is one minus their sum (a faint stain is imaged linearly, an opaque
cell stays black at every focus, every plane has the focal plane's mean intensity, as in the real
stacks). The defocus blur is Gaussian (``defocus_psf``; the real stacks show no contrast reversals)
of the geometric disc's second moment, ``blur_scale`` times it, and ``1 + blur_asymmetry`` times more
for planes focused below the section than above (the real stacks: k = 0.27 px per plane above
focus, 0.30 below).

**Scanner and camera**, drawn for each stack (what differs between scanners): ``blur_scale``
0.9-1.3, ``blur_asymmetry`` 0-0.3, ``stain_scale`` 1.1-1.6 (multiplies all absorbance: stain
strength and the scanner's colour-to-grey conversion), illumination ``I0`` 225-255
(``illumination``), vignetting ``V = 1 - v r^2`` (``v`` in 0.03-0.10, ``r`` the distance from a
slightly off-centre point over the half-diagonal of the image), stray light ``flare`` 1.5-5% of
``I0`` everywhere (the black level), Poisson-Gaussian noise (``gain`` 0.01-0.026 DN per
photo-electron: shot-noise variance ``gain * I``, in its Gaussian approximation; plus read noise
``read_noise`` 0.6-1.5 DN), correlated between neighbouring pixels by the filter ``[c, 1 - 2c, c]``
along y and x (``noise_correlation`` c 0.04-0.12: the real noise has less power at the highest
frequencies), rounded and clipped to uint8. The section's tilt varies too (above).

**Ground truth** (``truth/``). What an ideal isotropic 1 um microscope would show of the same
specimen, in the same intensity scale: plane ``z`` is ``I0 * V * (flare + (1 - flare) exp(-A_t(z)))``
with only the in-focus lateral OTF (``dz = 0``) and a narrow axial window,
``A_t(z) = s T * sum_d N(z - d; truth_sigma_um) a_d`` (``N`` the normal density, ``truth_sigma_um``
1 um, ``T`` the section thickness, ``s`` the stain scale): the local absorbance density at depth
``z`` scaled to the whole section's thickness, so that a uniformly stained section looks as dark in
the truth as in focus, and a cell seen in the truth's plane is about as dark as in the in-focus image
(small objects such as the specks, and the grains of the coarse neuropil texture, thinner than the
window, come out darker than in any focal plane: the truth looks grainier than the focal plane).
Planes outside the section are blank (``I0 * V``). No noise; rounded and clipped to uint8; same
vignetting, flare and ``I0`` as its stack.

**In-focus images** (``infocus/``). Independent specimens (other places, unpaired with the stacks),
rendered with the same optics and a scanner of their own at the focal depth (the section's middle,
+-0.25 um).

Cost: docs/simulation.md gives the time of the default 40 + 40 set.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy import ndimage, signal
from scripts.data.io import STACK_SUFFIXES, write_image, write_stack
from scripts.errors import InputError
from scripts.simulate.optics import OPTICS, frequency_grid, otf

__all__ = [
    "DEFAULTS",
    "ensure_dataset",
    "ensure_generated",
    "generate_atomically",
    "SIMULATOR_VERSION",
    "SPECIMEN_V1",
    "STAMP",
    "say",
    "simulate_dataset",
    "simulate_infocus",
    "simulate_stack",
    "write_stamp",
]

logger = logging.getLogger("zsegan")

#: Parameters of ``simulate_stack``/``simulate_infocus`` (override any by keyword). Pairs are
#: ranges that each stack draws from uniformly.
DEFAULTS: dict = {
    **OPTICS,  # pixel_um, plane_um, layer_um, na, n_medium, wavelength_um, core_sigma_um
    # geometry
    "thickness_um": (8.0, 12.0),
    "focal_range": None,  # (lo, hi) sharpest plane, 0-based, inclusive; None: middle +- 4 * depth / 29
    "max_tilt": 1.5,  # planes per 128 um across the field, at most
    # specimen (densities per 100 x 100 um of field)
    "neurons": 26.0,
    "glia": 6.0,
    "neuron_radius_um": (4.5, 9.0),  # middle semi-axis; the long one 1.2-1.5x, the short 0.75-1x that
    "glia_radius_um": (2.2, 3.5),
    "cell_absorbance": (0.35, 0.55),  # per um of path
    "glia_absorbance": (0.45, 0.7),
    "nucleolus_absorbance": 1.5,
    "dendrite_fraction": 0.75,  # neurons with processes
    "aligned": 0.7,  # fraction of neurons (and fibres) along the field's main direction
    "pale_fraction": 0.25,  # weakly stained ("ghost") neurons
    "fibres": 12.0,  # free fibres
    "fibre_absorbance": (0.6, 1.0),  # per um of path
    "neuropil_absorbance": (0.004, 0.012),  # per um, the uniform part
    "texture": 2.5,  # relative std of the neuropil's granular texture
    "cell_texture": 0.8,  # and of the cells' (the same texture field)
    "grain_um": 0.5,  # lateral correlation length (Gaussian sigma) of that texture
    "grain_depth_um": 1.0,  # its correlation length in depth
    "speck_sigma_um": 0.3,  # lateral size (Gaussian sigma) of specks and fibres
    "specks": 0.3,  # per um^2 of field
    "speck_mass": 0.35,  # mean absorbance * um^2 of one speck
    "stain_variation": 0.3,  # relative amplitude, large scale
    "patchiness": 0.8,  # relative amplitude of the neuropil's mid-scale variation
    # what varies between scanners: each stack draws its own (pairs are ranges)
    "defocus_psf": "gaussian",  # "gaussian" (as the real stacks) or "disc" (geometric optics)
    "blur_scale": (0.9, 1.3),  # the defocus blur relative to the NA's (radius |dz| tan(asin(NA/n)))
    "blur_asymmetry": (0.0, 0.3),  # planes focused below the section blur this much more than above
    "stain_scale": (1.1, 1.6),  # multiplies every absorbance: stain strength and colour-to-grey conversion
    # camera
    "illumination": (225.0, 255.0),
    "flare": (0.015, 0.05),  # stray light, a fraction of the illumination, everywhere (a black level)
    "vignetting": (0.03, 0.10),
    "gain": (0.01, 0.026),  # DN per photo-electron
    "read_noise": (0.6, 1.5),  # DN
    "noise_correlation": (0.04, 0.12),  # c of the [c, 1 - 2c, c] filter on the noise (demosaicing)
    # ground truth
    "truth_sigma_um": 1.0,
}

#: The version of the simulated data: a dataset folder generated by another version is regenerated
#: (:func:`ensure_generated`), never mixed with this one's files.
SIMULATOR_VERSION = 2

#: The lateral smoothing (Gaussian sigma, px) of each layer's part of an opaque column's shadow: such a
#: column is black at every focus, whatever the grain of the stain in the layer in focus.
SHARE_SMOOTHING_PX = 1.0

#: Parameters that give version 1's specimens (and use the random numbers as version 1 did): the paired
#: and defect datasets, built on this specimen, keep them so that their documented numbers hold.
SPECIMEN_V1: dict = {
    "thickness_um": (10.0, 14.0),
    "neurons": 20.0,
    "grain_um": 0.6,
    "grain_depth_um": 1.2,
    "stain_variation": 0.15,
    "neuron_radius_um": (3.5, 7.5),
    "neuropil_absorbance": (0.005, 0.012),
    "texture": 0.8,
    "cell_texture": 0.64,
    "specks": 0.4,
    "speck_mass": 0.25,
    "patchiness": 0.7,
    "defocus_psf": "disc",
    "blur_scale": 1.0,
    "blur_asymmetry": 0.0,
    "stain_scale": 1.0,
    "illumination": (200.0, 230.0),
    "flare": 0.0,
    "gain": 0.01,
    "read_noise": 0.8,
    "noise_correlation": 0.0,
}


def _params(params: dict) -> dict:
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown simulation parameter(s): {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    if not 0 < p["na"] < p["n_medium"]:
        raise ValueError(f"na must be in (0, n_medium={p['n_medium']}), got {p['na']}")
    q = p["plane_um"] / p["layer_um"]
    if abs(q - round(q)) > 1e-6 or round(q) < 1:
        raise ValueError(f"plane_um ({p['plane_um']}) must be a whole multiple of layer_um ({p['layer_um']})")
    return p


def _blur_reach(p: dict) -> float:
    """How far (um) the defocus blur reaches per um of defocus, at most: the disc's radius, or two sigma
    of the Gaussian (the 13% of its weight beyond, at the farthest planes, wraps around the periodic
    field: specimen from the field's other side), at the largest ``blur_scale`` and ``blur_asymmetry``."""

    def most(key):
        return max(p[key]) if isinstance(p[key], (tuple, list)) else p[key]

    scale = most("blur_scale") * (1.0 + most("blur_asymmetry"))
    return math.tan(math.asin(p["na"] / p["n_medium"])) * scale


def _uniform(rng: np.random.Generator, value) -> float:
    """A draw from a (lo, hi) range, or the value itself."""
    if isinstance(value, (tuple, list)):
        return float(rng.uniform(value[0], value[1]))
    return float(value)


# ----------------------------------------------------------------------------- optics


@lru_cache(maxsize=4)
def _otf_table(field: int, pixel_um: float, layer_um: float, n_max: int, optics: tuple, scales=(1.0, 1.0)):
    """float32 OTFs (rfft2 layout of a ``field`` x ``field`` grid) for dz = -n_max h .. n_max h (index
    ``n_max + dz / h``), the defocus blur ``scales`` times the optics' for dz < 0 and dz > 0 (``optics``:
    :func:`otf`'s arguments after ``dz_um``)."""
    rho = frequency_grid((field, field), pixel_um, half=True)
    dz = np.arange(-n_max, n_max + 1) * layer_um
    table = otf(rho, dz * np.where(dz < 0, scales[0], scales[1]), *optics).astype(np.float32)
    table.setflags(write=False)
    return table


@lru_cache(maxsize=16)
def _gauss_otf(field: int, pixel_um: float, sigma_px: float) -> np.ndarray:
    rho = frequency_grid((field, field), pixel_um, half=True) * pixel_um
    return np.exp(-2.0 * np.pi**2 * sigma_px**2 * rho * rho).astype(np.float32)


def _smooth_field(rng: np.random.Generator, field: int, sigma_px: float, across_px=None, angle=0.0) -> np.ndarray:
    """A smooth random 2D field, zero mean, unit std (Gaussian-filtered white noise, periodic);
    with ``across_px``, anisotropic: ``sigma_px`` along ``angle`` (radians from x), ``across_px`` across."""
    white = rng.standard_normal((field, field))
    if across_px is None:
        kernel = _gauss_otf(field, 1.0, sigma_px)
    else:
        fy = np.fft.fftfreq(field)[:, None]
        fx = np.fft.rfftfreq(field)[None, :]
        along = fx * math.cos(angle) + fy * math.sin(angle)
        across = -fx * math.sin(angle) + fy * math.cos(angle)
        kernel = np.exp(-2.0 * np.pi**2 * (sigma_px**2 * along**2 + across_px**2 * across**2))
    f = sfft.irfft2(sfft.rfft2(white) * kernel, s=(field, field))
    return (f - f.mean()) / (f.std() + 1e-12)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _box_depth(x: np.ndarray, size: int) -> np.ndarray:
    """Moving sum over ``size`` (odd) neighbours along axis 0, periodic."""
    r = size // 2
    if r == 0:
        return x
    padded = np.concatenate([x[-r:], x, x[:r]])
    out = padded[: len(x)].copy()
    for k in range(1, size):
        out += padded[k : k + len(x)]
    return out


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation matrix (columns: the body axes in (x, y, w) coordinates)."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


# ----------------------------------------------------------------------------- specimen


class _Specimen:
    """The absorbance of one section on a padded ``field`` x ``field`` grid and layers j0.. of depth h.

    Depths ``w`` (um) are measured on the stack's axis: plane i lies at ``i * plane_um``, layer j at
    ``j * h``. The section's middle lies at ``mid(x, y) = w_mid + tilt . (x - c, y - c)``.
    """

    def __init__(self, rng: np.random.Generator, p: dict, size: int, w_mid: float, max_dz: float):
        """``max_dz``: the largest distance (um) of a focal plane from the section's middle; the field
        is padded by the blur radius of the farthest layer (the same for every stack of a dataset, so
        the OTF tables are reused)."""
        self.rng, self.p = rng, p
        px, h = p["pixel_um"], p["layer_um"]
        self.h = h
        self.thickness = _uniform(rng, p["thickness_um"])
        tan = _blur_reach(p)
        thickest = max(p["thickness_um"]) if isinstance(p["thickness_um"], (tuple, list)) else p["thickness_um"]
        self.pad = int(math.ceil((max_dz + thickest / 2 + p["max_tilt"]) * tan / px)) + 1
        self.size = size
        self.field = sfft.next_fast_len(size + 2 * self.pad, real=True)
        n = self.field
        angle = rng.uniform(0, 2 * np.pi)
        slope = rng.uniform(0, p["max_tilt"]) * p["plane_um"] / 128.0  # um of depth per um
        self.tilt = slope * np.array([math.cos(angle), math.sin(angle)])  # (x, y)
        self.centre = (n - 1) / 2 * px
        self.w_mid = w_mid
        extent = self.thickness / 2 + abs(self.tilt).sum() * n * px / 2 + 2 * h
        self.j0 = int(math.floor((w_mid - extent) / h))
        self.j1 = int(math.ceil((w_mid + extent) / h))
        self.layers = self.j1 - self.j0 + 1
        coords = np.arange(n) * px
        self.mid = (
            w_mid + self.tilt[0] * (coords[None, :] - self.centre) + self.tilt[1] * (coords[:, None] - self.centre)
        )
        self.vol = np.zeros((self.layers, n, n), np.float32)  # absorbance per voxel (density * h)
        self.points: list[np.ndarray] = []  # (x, y, w, mass) deposits, splatted later
        self._build()

    @staticmethod
    def _direction(angle: float, elevation: float) -> np.ndarray:
        return np.array(
            [math.cos(angle) * math.cos(elevation), math.sin(angle) * math.cos(elevation), math.sin(elevation)]
        )

    def _box(self, centre, half) -> tuple[slice, slice, slice] | None:
        """Voxel slices (layer, y, x) of the box ``centre +- half`` (um, in x, y, w order), or None."""
        px, h, n = self.p["pixel_um"], self.h, self.field
        cx, cy, cw = centre
        ix0, ix1 = max(int((cx - half[0]) / px), 0), min(int((cx + half[0]) / px) + 2, n)
        iy0, iy1 = max(int((cy - half[1]) / px), 0), min(int((cy + half[1]) / px) + 2, n)
        jz0 = max(int(math.floor((cw - half[2]) / h)) - self.j0, 0)
        jz1 = min(int(math.ceil((cw + half[2]) / h)) - self.j0 + 1, self.layers)
        if ix0 >= ix1 or iy0 >= iy1 or jz0 >= jz1:
            return None
        return slice(jz0, jz1), slice(iy0, iy1), slice(ix0, ix1)

    def _body_coords(self, box, centre, rot) -> list[np.ndarray]:
        """The coordinates (float32, um) of the box's voxels in the body frame (``rot``'s columns)."""
        px, h = self.p["pixel_um"], self.h
        dx = (np.arange(box[2].start, box[2].stop) * px - centre[0]).astype(np.float32)[None, None, :]
        dy = (np.arange(box[1].start, box[1].stop) * px - centre[1]).astype(np.float32)[None, :, None]
        dw = ((self.j0 + np.arange(box[0].start, box[0].stop)) * h - centre[2]).astype(np.float32)[:, None, None]
        r = rot.astype(np.float32)
        return [(r[0, k] * dx + r[1, k] * dy) + r[2, k] * dw for k in range(3)]

    def mid_at(self, x, y):
        return self.w_mid + self.tilt[0] * (x - self.centre) + self.tilt[1] * (y - self.centre)

    def _build(self) -> None:
        rng, p, n, h = self.rng, self.p, self.field, self.h
        self.apex_angle = rng.uniform(0, 2 * np.pi)
        area = (n * p["pixel_um"]) ** 2 / 1e4  # in 100 x 100 um units
        w = (self.j0 + np.arange(self.layers)) * h
        # fraction of each voxel's layer inside the section (soft cut at the surfaces)
        top, bottom = self.mid - self.thickness / 2, self.mid + self.thickness / 2
        top, bottom = top.astype(np.float32), bottom.astype(np.float32)
        lo, hi = (w[:, None, None] - h / 2).astype(np.float32), (w[:, None, None] + h / 2).astype(np.float32)
        self.occ = np.clip(np.minimum(hi, bottom) - np.maximum(lo, top), 0, h) / np.float32(h)
        # granular texture shared by neuropil and cells
        noise = rng.standard_normal((self.layers, n, n), dtype=np.float32)
        g = p["grain_um"] / p["pixel_um"]
        noise = ndimage.gaussian_filter(noise, (0, g, g), mode="wrap", truncate=3.0)
        # in depth: two box filters (fast), together about a Gaussian of sigma grain_depth_um
        box = max(1, 2 * round((math.sqrt(6.0 * (p["grain_depth_um"] / h) ** 2 + 1.0) - 1.0) / 2.0) + 1)
        for _ in range(2):
            noise = _box_depth(noise, box)
        noise *= 1.0 / (noise.std() + 1e-12)
        self.texture = noise
        tex = p["texture"]
        # neuropil
        # mid-scale mottling, streaky along the field's main direction (fibre bundles)
        streaks = _smooth_field(rng, n, 8.0 / p["pixel_um"], 1.5 / p["pixel_um"], self.apex_angle)
        mottle = 0.6 * streaks + 0.8 * _smooth_field(rng, n, 3.0 / p["pixel_um"])
        patches = np.exp(p["patchiness"] * mottle - 0.5 * p["patchiness"] ** 2)
        rho_np = _uniform(rng, p["neuropil_absorbance"])
        self.vol[:] = self.occ * (rho_np * h) * patches.astype(np.float32) * np.clip(1 + tex * noise, 0, None)
        # cells
        # depths stratified (one cell per equal slice of the section, in random order), so that each
        # section holds about as much above its middle as below it
        for neuron, density in ((True, p["neurons"]), (False, p["glia"])):
            count = rng.poisson(density * area)
            depths = (rng.permutation(count) + rng.random(count)) / max(count, 1) - 0.5
            for depth in depths:
                self._cell(neuron, depth)
        # free fibres, many along the field's main direction
        for _ in range(rng.poisson(p["fibres"] * area)):
            x, y = rng.uniform(0, n * p["pixel_um"], 2)
            start = np.array([x, y, self.mid_at(x, y) + rng.uniform(-0.45, 0.45) * self.thickness])
            if rng.random() < p["aligned"]:
                d = self._direction(self.apex_angle + rng.normal(0, 0.3) + np.pi * (rng.random() < 0.5), 0.0)
            else:
                d = rng.standard_normal(3)
            d[2] *= 0.15
            self._process(start, d, rng.uniform(30, 100), rng.uniform(0.7, 1.2), _uniform(rng, p["fibre_absorbance"]))
        # specks of the neuropil
        n_specks = rng.poisson(p["specks"] * (n * p["pixel_um"]) ** 2)
        sx, sy = rng.uniform(0, n, n_specks) * p["pixel_um"], rng.uniform(0, n, n_specks) * p["pixel_um"]
        sw = self.mid_at(sx, sy) + rng.uniform(-0.5, 0.5, n_specks) * self.thickness
        mass = rng.lognormal(0.0, 0.8, n_specks) * (p["speck_mass"] / math.exp(0.32))
        self.points.append(np.stack([sx, sy, sw, mass], 1))
        # large-scale stain variation
        self.stain = np.clip(1.0 + p["stain_variation"] * _smooth_field(rng, n, 30.0 / p["pixel_um"]), 0.3, None)
        self.vol *= self.stain.astype(np.float32)

    def _cell(self, neuron: bool, depth: float) -> None:
        """Draw one cell whose centre lies ``depth`` (-0.5..0.5) section thicknesses from its middle."""
        rng, p, h, px, n = self.rng, self.p, self.h, self.p["pixel_um"], self.field
        r = _uniform(rng, p["neuron_radius_um"] if neuron else p["glia_radius_um"])
        if neuron:
            axes = r * np.array([rng.uniform(1.2, 1.5), 1.0, rng.uniform(0.75, 1.0)])
            taper = rng.uniform(0.4, 0.85) if rng.random() < 0.8 else 0.0
            dens = _uniform(rng, p["cell_absorbance"])
            if rng.random() < p["pale_fraction"]:
                dens *= rng.uniform(0.15, 0.4)  # weakly stained ("ghost") cell
        else:
            axes = r * np.array([rng.uniform(1.0, 1.3), 1.0, rng.uniform(0.8, 1.0)])
            taper = 0.0
            dens = _uniform(rng, p["glia_absorbance"])
        if neuron and rng.random() < p["aligned"]:
            # pyramidal cells of a cortical field point their apex (and apical dendrite) one way
            a = self._direction(self.apex_angle + rng.normal(0, 0.35), rng.normal(0, 0.3))
            b = _cross(a, rng.standard_normal(3))
            b /= np.linalg.norm(b)
            rot = np.stack([a, b, _cross(a, b)], axis=1)
        else:
            rot = _rotation(rng)
        cx, cy = rng.uniform(0, n * px), rng.uniform(0, n * px)
        cw = self.mid_at(cx, cy) + depth * (self.thickness + axes[2])
        # bounding box (of the cylinder around the body) along each world axis, plus the soft edge
        half = np.abs(rot[:, 0]) * axes[0] + np.sqrt((rot[:, 1] * axes[1]) ** 2 + (rot[:, 2] * axes[2]) ** 2) + 1.0
        box = self._box((cx, cy, cw), half)
        if box is None:
            return
        u = self._body_coords(box, (cx, cy, cw), rot)
        a0, a1, a2 = (float(a) for a in axes)
        t = u[0] * (1.0 / a0)
        f = np.maximum(1.0 - taper * (t + 1.0) / 2.0, 0.15)
        if taper > 0:  # pyramidal: a cone towards the apex on a flattened base
            t = np.where(t < 0, np.abs(t) ** 3, t)
        q = np.sqrt(t * t + ((u[1] * (1.0 / a1)) ** 2 + (u[2] * (1.0 / a2)) ** 2) / (f * f))
        edge = 0.6
        mask = np.clip((1.0 - q) * (a2 / edge) + 0.5, 0.0, 1.0)
        mask *= self.occ[box]
        value = np.maximum(1.0 + p["cell_texture"] * self.texture[box], 0.0)
        value *= dens * h
        if neuron:
            # paler nucleus towards the wide end, with a dark nucleolus (computed in a small box)
            rn = min(a1, a2) * rng.uniform(0.4, 0.55) * (1.0 - 0.3 * taper)
            pale = rng.uniform(0.55, 0.8)
            o = rng.standard_normal(3) * 0.25 * rn
            rnl = rng.uniform(0.6, 0.9)
            centre = np.array([cx, cy, cw]) + rot[:, 0] * (-0.25 * a0 * taper)
            sub = self._box(centre, np.full(3, rn + 0.5))
            if sub is not None:
                v = self._body_coords(sub, centre, rot)
                nuc = np.clip((rn - np.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2)) * 2.0 + 0.5, 0.0, 1.0)
                dnl = np.sqrt((v[0] - o[0]) ** 2 + (v[1] - o[1]) ** 2 + (v[2] - o[2]) ** 2)
                nucleolus = np.clip((rnl - dnl) * 2.5 + 0.5, 0.0, 1.0)
                local = tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(sub, box, strict=False))
                value[local] = value[local] * (1.0 - pale * nuc) + (p["nucleolus_absorbance"] * h) * nucleolus
        block = self.vol[box]
        block *= 1.0 - mask
        block += mask * value
        if neuron and rng.random() < p["dendrite_fraction"]:
            apical = rot[:, 0]  # the long body axis, towards the tapered end
            tip = np.array([cx, cy, cw]) + apical * axes[0] * (1.0 - 0.1 * taper)
            width = min(2.0, 0.6 + 0.45 * r * max(taper, 0.4))
            self._process(tip, apical, rng.uniform(15, 50), width, dens * 2.0, wiggle=0.06)
            for _ in range(rng.integers(0, 3)):
                d = rng.standard_normal(3)
                d -= 0.5 * apical * (d @ apical)
                d /= np.linalg.norm(d)
                start = np.array([cx, cy, cw]) + d * min(axes[1], axes[2]) * 0.9
                self._process(start, d, rng.uniform(6, 20), width * 0.6, dens * 2.0)

    def _process(self, start, direction, length, width, density, wiggle=0.12) -> None:
        """A thin fibre from ``start``: a smooth random walk in 3D, tapering, clipped to the section."""
        rng, step = self.rng, 0.5
        k = max(int(length / step), 2)
        d = np.asarray(direction, float)
        d = d / (np.linalg.norm(d) + 1e-12)
        # direction: the azimuth wanders (a random walk: curvature), the elevation relaxes towards the
        # section's plane (an AR(1) process), so fibres curve and drift slowly in depth
        azimuth = math.atan2(d[1], d[0]) + np.cumsum(rng.standard_normal(k)) * wiggle
        decay = 0.9
        elevation = decay ** np.arange(1, k + 1) * math.asin(np.clip(d[2], -1, 1))
        elevation += signal.lfilter([wiggle], [1.0, -decay], rng.standard_normal(k))
        elevation = np.clip(elevation, -1.2, 1.2)
        ce = np.cos(elevation)
        dirs = np.stack([np.cos(azimuth) * ce, np.sin(azimuth) * ce, np.sin(elevation)], axis=1)
        pos = start + np.cumsum(dirs * step, axis=0)
        w_px = np.linspace(width, max(0.5, 0.4 * width), k)
        mass = density * np.pi * w_px**2 / 4 * step
        # a thick process is three parallel lines, so it looks wider than the deposits' smoothing
        thick = w_px > 1.2
        if thick.any():
            perp = np.stack([-dirs[:, 1], dirs[:, 0], np.zeros(k)], axis=1)
            perp /= np.linalg.norm(perp, axis=1, keepdims=True) + 1e-12
            off = perp[thick] * (0.3 * w_px[thick])[:, None]
            pos = np.concatenate([pos, pos[thick] + off, pos[thick] - off])
            mass = np.concatenate([np.where(thick, mass / 3, mass), mass[thick] / 3, mass[thick] / 3])
        inside = np.abs(pos[:, 2] - self.mid_at(pos[:, 0], pos[:, 1])) <= self.thickness / 2
        if inside.any():
            self.points.append(np.concatenate([pos[inside], mass[inside, None]], axis=1))

    def spectrum(self) -> np.ndarray:
        """rfft2 of every layer's absorbance (deposits splatted and smoothed laterally)."""
        n, px, h = self.field, self.p["pixel_um"], self.h
        pts = np.concatenate(self.points, 0) if self.points else np.zeros((0, 4))
        size = self.layers * n * n
        dep = np.zeros(size)
        if len(pts):
            # trilinear splatting onto the voxel grid
            fx, fy, fz = pts[:, 0] / px, pts[:, 1] / px, pts[:, 2] / h - self.j0
            x0, y0, z0 = np.floor(fx).astype(int), np.floor(fy).astype(int), np.floor(fz).astype(int)
            ax, ay, az = fx - x0, fy - y0, fz - z0
            # stain variation at the points
            mass = pts[:, 3] * self.stain[np.clip(y0, 0, n - 1), np.clip(x0, 0, n - 1)]
            indices, weights = [], []
            for oz, wz in ((0, 1 - az), (1, az)):
                for oy, wy in ((0, 1 - ay), (1, ay)):
                    for ox, wx in ((0, 1 - ax), (1, ax)):
                        zz, yy, xx = z0 + oz, y0 + oy, x0 + ox
                        ok = (zz >= 0) & (zz < self.layers) & (yy >= 0) & (yy < n) & (xx >= 0) & (xx < n)
                        indices.append((zz[ok] * n + yy[ok]) * n + xx[ok])
                        weights.append((mass * wz * wy * wx)[ok])
            dep = np.bincount(np.concatenate(indices), weights=np.concatenate(weights), minlength=size)
        dep = dep.reshape(self.layers, n, n).astype(np.float32) / (px * px)
        spec = sfft.rfft2(self.vol)
        spec += sfft.rfft2(dep) * _gauss_otf(n, px, self.p["speck_sigma_um"] / px)
        return spec


# ----------------------------------------------------------------------------- rendering


def _render(spec: _Specimen, plane_layers: np.ndarray, scanner: dict) -> tuple[np.ndarray, np.ndarray]:
    """Transmittance images (cropped: the fraction of the light that reaches the camera) with the focal
    plane at layer indices ``plane_layers``, and the specimen's layer spectra (absorbance).

    Defocus moves light about but neither adds nor removes it (the real stacks' mean intensity is the
    same at every depth): the shadow ``1 - exp(-A)`` of each pixel (``A`` the absorbance of its whole
    column) is shared among the layers in proportion to their absorbance, and each layer's share is
    blurred by the OTF of its distance from the focal plane; the image is 1 minus their sum. A faint
    stain is imaged linearly (``1 - A``), a dense one never below black, and a defocused cell's shadow
    spreads and fades. Where the shadows of overlapping cells add up to nearly all the light (the limit
    of sharing them linearly), the image goes smoothly to black (:func:`_soft_floor`) instead of below.
    """
    p, n = spec.p, spec.field
    j = spec.j0 + np.arange(spec.layers)
    dist = plane_layers[:, None] - j[None, :]  # > 0: the layer lies above the focal plane
    optics = (p["na"], p["n_medium"], p["wavelength_um"], p["core_sigma_um"], p["defocus_psf"])
    n_max = int(np.abs(dist).max())
    scale, asymmetry = scanner["blur_scale"], scanner["blur_asymmetry"]
    table = _otf_table(n, p["pixel_um"], p["layer_um"], n_max, optics, (scale, scale * (1 + asymmetry)))
    a = spec.spectrum()
    tiny = np.float32(1e-12)
    sharp = np.maximum(sfft.irfft2(a, s=(n, n)), 0)
    total = sharp.sum(axis=0)
    shadow = -np.expm1(-total * np.float32(scanner["stain_scale"]))
    # each layer's part of its column's absorbance: as it is where the column is faint (linear imaging),
    # smoothed over the stain's grain where it is opaque (black at every focus)
    smooth = np.maximum(sfft.irfft2(a * _gauss_otf(n, p["pixel_um"], SHARE_SMOOTHING_PX), s=(n, n)), 0)
    sharp *= (shadow * (1 - shadow) / np.maximum(total, tiny))[None]
    sharp += smooth * (shadow * shadow / np.maximum(smooth.sum(axis=0), tiny))[None]
    shadows = sfft.rfft2(sharp)
    out = np.empty((len(plane_layers), n, n // 2 + 1), np.complex64)
    for i in range(len(plane_layers)):
        np.sum(table[n_max + dist[i]] * shadows, axis=0, out=out[i])
    img = sfft.irfft2(out, s=(n, n))
    c = spec.pad
    return _soft_floor(1.0 - img[:, c : c + spec.size, c : c + spec.size]), a


def _soft_floor(x: np.ndarray, knee: float = 0.05) -> np.ndarray:
    """``x`` above ``knee``; below it ``knee * exp(x / knee - 1)``: positive, smooth at the knee."""
    low = x < knee
    x[low] = knee * np.exp(x[low] / knee - 1.0)
    return x


def _truth(spec: _Specimen, spectrum: np.ndarray, plane_w: np.ndarray) -> np.ndarray:
    p, n = spec.p, spec.field
    w = (spec.j0 + np.arange(spec.layers)) * spec.h
    s = p["truth_sigma_um"]
    weights = spec.thickness * np.exp(-0.5 * ((plane_w[:, None] - w[None, :]) / s) ** 2) / (s * math.sqrt(2 * np.pi))
    optics = (p["na"], p["n_medium"], p["wavelength_um"], p["core_sigma_um"], p["defocus_psf"])
    in_focus = _otf_table(n, p["pixel_um"], p["layer_um"], 0, optics)[0]  # dz = 0
    # a real matrix product on the spectra's (re, im) pairs
    flat = spectrum.view(np.float32).reshape(spectrum.shape[0], -1)
    mixed = (weights.astype(np.float32) @ flat).view(np.complex64).reshape((len(plane_w),) + spectrum.shape[1:])
    mixed *= in_focus
    img = sfft.irfft2(mixed, s=(n, n))
    c = spec.pad
    return img[:, c : c + spec.size, c : c + spec.size]


def _camera(rng: np.random.Generator, p: dict, size: int) -> tuple[float, np.ndarray]:
    i0 = _uniform(rng, p["illumination"])
    v = _uniform(rng, p["vignetting"])
    cy, cx = (size - 1) / 2 + rng.uniform(-0.15, 0.15, 2) * size
    yy, xx = np.ogrid[0:size, 0:size]
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (0.5 * size * size)
    return i0, (1.0 - v * r2).astype(np.float32)


_SCANNER_KEYS = ("blur_scale", "blur_asymmetry", "stain_scale", "flare", "gain", "read_noise", "noise_correlation")


def _scanner(rng: np.random.Generator, p: dict) -> dict:
    """What varies between scanners, drawn for one stack (a fixed value draws nothing)."""
    return {k: _uniform(rng, p[k]) for k in _SCANNER_KEYS}


def _flared(transmittance: np.ndarray, scanner: dict) -> np.ndarray:
    """The light reaching the camera with stray light ``flare`` (a fraction of the illumination)."""
    flare = scanner["flare"]
    return transmittance if flare == 0 else (1.0 - flare) * transmittance + flare


def _expose(rng: np.random.Generator, scanner: dict, intensity: np.ndarray) -> np.ndarray:
    """Poisson-Gaussian camera: shot noise of variance ``gain * I`` (Gaussian approximation of the
    Poisson law, exact at these thousands of photo-electrons per pixel) plus read noise; correlated
    between neighbouring pixels by ``noise_correlation`` (the filter ``[c, 1 - 2c, c]`` along y and x,
    variance kept: the real stacks' noise has less power at the highest frequencies)."""
    mean = intensity.astype(np.float32)
    std = np.sqrt(scanner["gain"] * mean + scanner["read_noise"] ** 2)
    noise = rng.standard_normal(mean.shape, dtype=np.float32)
    c = scanner["noise_correlation"]
    if c:
        kernel = np.array([c, 1 - 2 * c, c]) / math.sqrt((1 - 2 * c) ** 2 + 2 * c * c)
        for axis in (-2, -1):
            noise = ndimage.correlate1d(noise, kernel, axis=axis, mode="reflect")
    noisy = mean + std * noise
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _ideal(intensity: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(intensity), 0, 255).astype(np.uint8)


def _focal_range(p: dict, depth: int) -> tuple[int, int]:
    if p["focal_range"] is not None:
        lo, hi = (int(v) for v in p["focal_range"])
    else:
        half = round(4 * depth / 29)
        lo, hi = (depth - 1) // 2 - half, (depth - 1) // 2 + half + (depth - 1) % 2
    if not 0 <= lo <= hi < depth:
        raise ValueError(f"focal_range ({lo}, {hi}) must lie within the {depth} planes")
    return lo, hi


def simulate_stack(rng: np.random.Generator, size: int = 128, depth: int = 29, **params) -> tuple:
    """One simulated z-scan: ``(stack, truth, focus)``.

    ``stack``: uint8 ZYX (``depth`` x ``size`` x ``size``), plane ``i`` focused ``i * plane_um`` um
    deep; ``truth``: uint8 ZYX of the same shape, the sharp volume (module docstring); ``focus``: the
    sharpest plane, 0-based (the plane nearest the section's middle at the field's centre), uniform
    over ``focal_range`` (default 10..18, 0-based, for 29 planes). ``params`` override ``DEFAULTS``.
    """
    p = _params(params)
    lo, hi = _focal_range(p, depth)
    zf = rng.uniform(lo - 0.5, hi + 0.5)
    focus = int(np.clip(round(zf), lo, hi))
    q = round(p["plane_um"] / p["layer_um"])
    max_dz = max(hi + 0.5, depth - 1 - lo + 0.5) * p["plane_um"]
    spec = _Specimen(rng, p, size, zf * p["plane_um"], max_dz)
    i0, vig = _camera(rng, p, size)
    scanner = _scanner(rng, p)
    planes = np.arange(depth) * q
    transmitted, spectrum = _render(spec, planes, scanner)
    truth_abs = _truth(spec, spectrum, planes * p["layer_um"]) * scanner["stain_scale"]
    light = i0 * vig
    stack = _expose(rng, scanner, light * _flared(transmitted, scanner))
    truth = _ideal(light * _flared(np.exp(-truth_abs), scanner))
    return stack, truth, focus


def simulate_infocus(rng: np.random.Generator, size: int = 128, **params) -> np.ndarray:
    """One in-focus image (uint8 YX, ``size`` x ``size``) of an independent specimen: focused on the
    section's middle (+-0.25 um), same optics and camera as the stacks."""
    p = _params(params)
    w_mid = rng.uniform(-0.25, 0.25)
    spec = _Specimen(rng, p, size, w_mid, 0.0)
    i0, vig = _camera(rng, p, size)
    scanner = _scanner(rng, p)
    transmitted, _ = _render(spec, np.array([0]), scanner)
    return _expose(rng, scanner, i0 * vig * _flared(transmitted[0], scanner))


# ----------------------------------------------------------------------------- datasets


def _child(seed: int, kind: int, index: int) -> np.random.Generator:
    """Independent generator for file ``index`` of ``kind`` (0 stacks, 1 in-focus images): it does not
    depend on how many files are made."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(kind, index)))


_STACK_META = {"format": "tiff", "axes": "ZYX", "dtype": "uint8", "spacing": (1.0, 1.0, 1.0), "unit": "um"}


def simulate_dataset(
    out_dir,
    n_stacks: int = 40,
    n_infocus: int = 40,
    size: int = 128,
    depth: int = 29,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Write a simulated dataset: ``<out_dir>/stacks/sim_NNNNN.tif`` (ZYX uint8 z-stacks),
    ``<out_dir>/truth/sim_NNNNN.tif`` (their sharp volumes, same names), ``<out_dir>/infocus/
    sim_NNNNN.tif`` (unpaired in-focus images, ``size`` x ``size``) and :data:`STAMP` (this simulator's
    version and those files). 1 um voxels are recorded in the files. Stack ``i`` depends only on
    ``seed`` and ``i``. Returns a summary: ``dir``, ``n_stacks``, ``n_infocus``, ``size``, ``depth``,
    ``seed``, ``focal_planes`` (sharpest plane of each stack, 0-based) and ``seconds``.
    """
    out = Path(out_dir)
    start = time.perf_counter()
    focal = []
    step = max(1, (n_stacks + n_infocus) // 8)
    meta = dict(_STACK_META)
    written = []
    for i in range(n_stacks):
        stack, truth, focus = simulate_stack(_child(seed, 0, i), size=size, depth=depth)
        written += [out / "stacks" / f"sim_{i:05d}.tif", out / "truth" / f"sim_{i:05d}.tif"]
        write_stack(written[-2], stack, meta)
        write_stack(written[-1], truth, meta)
        focal.append(focus)
        if progress and ((i + 1) % step == 0 or i + 1 == n_stacks):
            logger.info("simulated %d/%d stacks", i + 1, n_stacks)
    for i in range(n_infocus):
        image = simulate_infocus(_child(seed, 1, i), size=size)
        written.append(out / "infocus" / f"sim_{i:05d}.tif")
        write_image(written[-1], image, spacing=(1.0, 1.0))
        if progress and ((i + 1) % step == 0 or i + 1 == n_infocus):
            logger.info("simulated %d/%d in-focus images", i + 1, n_infocus)
    write_stamp(out, written)
    seconds = time.perf_counter() - start
    return {
        "dir": str(out),
        "n_stacks": n_stacks,
        "n_infocus": n_infocus,
        "size": size,
        "depth": depth,
        "seed": seed,
        "focal_planes": focal,
        "seconds": round(seconds, 2),
    }


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(f.is_file() and not f.name.startswith(".") for f in folder.iterdir())


def say(message: str) -> None:
    """Log ``message``, or print it where logging would not show it (no handler, or level above INFO)."""
    if logger.hasHandlers() and logger.isEnabledFor(logging.INFO):
        logger.info(message)
    else:
        print(message, flush=True)


def generate_atomically(path: Path, simulate, last: str, **kwargs) -> dict:
    """Run ``simulate(folder, **kwargs)`` in a hidden folder inside ``path``, then move every file it wrote
    to the same place under ``path``, those in the top-level folder ``last`` at the end (the one whose
    presence says the data is there): an interrupted generation leaves no ``last`` behind, so the next call
    starts over. Returns what ``simulate`` returned."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob(".simulating-*"):  # left by an interrupted generation
        if time.time() - stale.stat().st_mtime > 600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = path / f".simulating-{os.getpid()}-{time.time_ns()}"
    try:
        summary = simulate(tmp, **kwargs)
        files = sorted(f for f in tmp.rglob("*") if f.is_file())
        for f in sorted(files, key=lambda f: f.relative_to(tmp).parts[0] == last):  # stable: `last` at the end
            target = path / f.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


#: The file that says which simulator version made a generated folder, and which files it wrote.
STAMP = "simulated.json"

_LEGACY_NAME = re.compile(r"sim_\d{5}\.[a-z.]+")  # the file names of the sets made before stamps


def _previous(path: Path, legacy: tuple[str, ...]) -> tuple[int, list[Path] | None] | None:
    """What an earlier generation left in ``path``: (its version, its files, or None where other files lie
    among them), or None where nothing says the folder was simulated. A folder without :data:`STAMP` whose
    ``legacy`` folders hold only files named like the simulator's counts as version 1."""
    stamp = path / STAMP
    if stamp.is_file():
        try:
            record = json.loads(stamp.read_text())
            version, listed = int(record["version"]), {path / f for f in record["files"]}
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(stamp, f"unreadable ({error}): delete the folder to simulate it again") from error
        folders = {f.relative_to(path).parts[0] for f in listed if len(f.relative_to(path).parts) > 1}
    elif legacy:
        version, listed, folders = 1, None, set(legacy)
    else:
        return None
    present = [f for d in sorted(folders) if (path / d).is_dir() for f in (path / d).rglob("*") if f.is_file()]
    present = [f for f in present if not f.name.startswith(".")]
    if listed is None:  # no stamp: only a folder of nothing but the simulator's file names
        if not present or not all(_LEGACY_NAME.fullmatch(f.name) for f in present):
            return None
        return version, present + [stamp]
    return version, (None if set(present) - listed else sorted(listed | {stamp}))


def ensure_generated(
    dataset_dir,
    required: str,
    simulate: Callable[..., dict],
    describe: Callable[[dict], str],
    what: str = "dataset",
    allowed: bool = True,
    hint: str = "",
    version: int | None = None,
    legacy: tuple[str, ...] = (),
    **kwargs,
) -> Path:
    """If ``dataset_dir/required`` holds no files (missing or empty), ``simulate(folder, **kwargs)`` the
    simulated ``what`` there (:func:`generate_atomically`, ``required`` moved in last: an interrupted
    generation leaves no ``required`` files behind, so the next call starts over) and say so and where
    (:func:`say`); otherwise leave it untouched. Return the path. ``describe`` turns ``simulate``'s summary
    into the closing message. With ``allowed`` False (a folder the user named: a typo must not train on
    simulated data), a folder without ``required`` files is an InputError (``hint``: what to put there).

    With ``version`` (the simulator's data version; ``simulate`` then writes a :data:`STAMP`,
    :func:`write_stamp`), a folder simulated by another version (its stamp, or no stamp but only the
    simulator's file names in the ``legacy`` folders: version 1) is simulated again, its old files deleted
    first, so that two versions are never mixed; if other files lie among them, that is an InputError. A
    folder the user named (``allowed`` False) is used as it is, with one line that says so.
    """
    path = Path(dataset_dir)
    if _has_files(path / required):
        previous = _previous(path, legacy) if version is not None else None
        if previous is None or previous[0] == version:
            return path
        old, files = previous
        made = f"{path} holds data simulated by version {old} of the simulator (this is version {version})"
        if not allowed:
            say(f"{made}: used as it is")
            return path
        if files is None:
            raise InputError(path, f"{made}, and other files among them: move yours out and delete the rest")
        say(f"{made}: simulating it again")
        for f in files:
            f.unlink(missing_ok=True)
    elif not allowed:
        if not path.is_dir():
            raise InputError(path, "no such dataset folder: check --dataset_dir")
        raise InputError(path / required, f"holds no {required}" + (f": {hint}" if hint else ""))
    else:
        say(f"{path} holds no {required}/ files: generating the simulated {what} there")
        previous = _previous(path, legacy) if version is not None and path.is_dir() else None
        for f in (previous[1] or []) if previous else []:  # what an interrupted regeneration left
            f.unlink(missing_ok=True)
    say(describe(generate_atomically(path, simulate, required, **kwargs)))
    return path


def write_stamp(out_dir, files: list[Path], version: int = SIMULATOR_VERSION) -> None:
    """Write :data:`STAMP` into ``out_dir``: the simulator's ``version`` and the ``files`` it wrote there."""
    out = Path(out_dir)
    names = sorted(str(Path(f).relative_to(out)) for f in files)
    (out / STAMP).write_text(json.dumps({"version": version, "files": names}, indent=1) + "\n")


def ensure_dataset(dataset_dir, simulate: bool = True, **kwargs) -> Path:
    """If dataset_dir has no stacks (missing or empty stacks/ folder), or holds a set made by another
    version of this simulator, generate the simulated set there (:func:`ensure_generated`, with
    :data:`SIMULATOR_VERSION`); otherwise leave it untouched. Return the path. ``kwargs`` go to
    ``simulate_dataset``. With ``simulate`` False (a folder the user named: a typo must not train on
    simulated data), a folder without stacks is an InputError.
    """

    def describe(summary: dict) -> str:
        return (
            f"simulated {summary['n_stacks']} stacks (with their truth in truth/) and {summary['n_infocus']} "
            f"in-focus images into {dataset_dir} in {summary['seconds']:.1f} s"
        )

    hint = f"put them there ({'/'.join(STACK_SUFFIXES)}), see the README's dataset layout"
    return ensure_generated(
        dataset_dir,
        "stacks",
        simulate_dataset,
        describe,
        "dataset",
        simulate,
        hint,
        version=SIMULATOR_VERSION,
        legacy=("stacks", "truth", "infocus"),
        **kwargs,
    )
