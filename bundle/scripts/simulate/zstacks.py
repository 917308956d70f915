"""Simulated brightfield z-scans of a stained thin tissue section: the embedded default data.

Everything is deterministic from a ``numpy.random.Generator`` (``simulate_dataset``: from one seed,
with an independent child seed per file). Arrays are ZYX (stacks) and YX (images), uint8. Every
number below is a default of ``DEFAULTS`` and can be overridden by keyword.

**Specimen.** A 3D absorbance volume (natural-log absorbance per voxel) of a section of brain tissue
10-14 um thick (``thickness_um``), stained for cell bodies (Nissl-like), sampled at ``pixel_um``
(1 um) laterally and in layers ``layer_um`` (0.5 um) deep:

- neurons (20 per 100 x 100 um): dark bodies with a granular texture, ellipsoids (middle semi-axis
  3.5-7.5 um, the long one 1.2-1.5x, the short one 0.75-1x that: equivalent radius ~3.5-8 um), most
  tapered into a cone on a flattened base (pyramidal), 70% pointing their apex along the field's main
  direction (as in cortex), the rest randomly oriented; inside each a paler nucleus towards the base
  with a dark nucleolus; a quarter of them weakly stained; glia (6 per 100 x 100 um): small (2.2-3.5
  um), dense, round-ish bodies. Cell depths are stratified over the section (as much above its
  middle as below) and the section's surfaces cut the cells that cross them;
- processes: thin curved fibres (1-2 px wide, tapering) leaving 75% of the neurons (an apical
  dendrite from the apex, 15-50 um, and 0-2 basal ones) and free fibres (12 per 100 x 100 um,
  30-100 um long, mostly along the main direction), wandering slowly in depth;
- neuropil: a weak stain filling the section with a granular 3D texture (0.6 um laterally, ~1.2 um
  in depth), small specks at random depths (0.4 per um^2) and a mid-scale mottling, streaky along
  the main direction (paler and darker patches);
- a mild large-scale stain variation over the field (+-15%, multiplies all absorbance).

The section's middle lies at the focal depth ``zf`` (in plane units, 0-based), drawn uniformly so
that the returned sharpest plane ``round(zf)`` is uniform over ``focal_range`` (default for 29
planes: 10..18, 0-based, i.e. planes 11..19 counted from 1: the middle plane +-4; for other depths
the middle +- 4 * depth / 29). The section
tilts across the field (random direction, up to ``max_tilt`` = 1.5 planes per 128 um): every
object's depth is shifted by the tilt at its position. A plain gradient-energy argmax over planes
lies within about +-2 planes of ``round(zf)`` (the sharp plateau of a thick section is broad and the
content decides where in it the maximum falls), like the real stacks' 11..19 (counted from 1).

**Optics** (:mod:`scripts.simulate.optics`, ``defocus_otf``): incoherent imaging of the absorbance,
layer by layer; blur grows linearly with the distance from focus.

**Camera.** Illumination ``I0`` uniform in 200-230 (``illumination``), vignetting
``V = 1 - v r^2`` (``v`` in 0.03-0.10, ``r`` the distance from a slightly off-centre point over the
half-diagonal of the image), Poisson-Gaussian noise (``gain`` 0.01 DN per photo-electron: shot-noise
variance ``gain * I``, in its Gaussian approximation, exact at these ~20000 electrons; plus read
noise ``read_noise`` 0.8 DN: ~1.6 DN at 200), rounded and clipped to uint8. Stacks average about
130 (the real ones 136); the darkest 1% of an in-focus plane lies below ~5 (real: ~12).

**Ground truth** (``truth/``). What an ideal isotropic 1 um microscope would show of the same
specimen, in the same intensity scale: plane ``z`` is ``I0 * V * exp(-A_t(z))`` with only the
in-focus lateral OTF (``dz = 0``) and a narrow axial window,
``A_t(z) = T * sum_d N(z - d; truth_sigma_um) a_d`` (``N`` the normal density, ``truth_sigma_um``
1 um, ``T`` the section thickness): the local absorbance density at depth ``z`` scaled to the whole
section's thickness, so that a uniformly stained section looks as dark in the truth as in focus, and
a cell seen in the truth's plane is about as dark as in the in-focus image (small objects such as
the specks, thinner than the window, come out darker than in any focal plane). Planes outside the
section are blank (``I0 * V``). No noise; rounded and clipped to uint8; same vignetting and ``I0``
as its stack.

**In-focus images** (``infocus/``). Independent specimens (other places, unpaired with the stacks),
rendered with the same optics and camera at the focal depth (the section's middle, +-0.25 um).

Cost: about 0.15 s per 128x128x29 stack with its truth and 0.05 s per in-focus image on one CPU
core; the default 40 + 40 set in about 8-10 s.
"""

from __future__ import annotations

import logging
import math
import os
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
    "say",
    "simulate_dataset",
    "simulate_infocus",
    "simulate_stack",
]

logger = logging.getLogger("zsegan")

#: Parameters of ``simulate_stack``/``simulate_infocus`` (override any by keyword). Pairs are
#: ranges that each stack draws from uniformly.
DEFAULTS: dict = {
    **OPTICS,  # pixel_um, plane_um, layer_um, na, n_medium, wavelength_um, core_sigma_um
    # geometry
    "thickness_um": (10.0, 14.0),
    "focal_range": None,  # (lo, hi) sharpest plane, 0-based, inclusive; None: middle +- 4 * depth / 29
    "max_tilt": 1.5,  # planes per 128 um across the field, at most
    # specimen (densities per 100 x 100 um of field)
    "neurons": 20.0,
    "glia": 6.0,
    "neuron_radius_um": (3.5, 7.5),  # middle semi-axis; the long one 1.2-1.5x, the short 0.75-1x that
    "glia_radius_um": (2.2, 3.5),
    "cell_absorbance": (0.35, 0.55),  # per um of path
    "glia_absorbance": (0.45, 0.7),
    "nucleolus_absorbance": 1.5,
    "dendrite_fraction": 0.75,  # neurons with processes
    "aligned": 0.7,  # fraction of neurons (and fibres) along the field's main direction
    "pale_fraction": 0.25,  # weakly stained ("ghost") neurons
    "fibres": 12.0,  # free fibres
    "fibre_absorbance": (0.6, 1.0),  # per um of path
    "neuropil_absorbance": (0.005, 0.012),  # per um, the uniform part
    "texture": 0.8,  # relative std of the granular texture (neuropil and cells)
    "grain_um": 0.6,  # lateral correlation length (Gaussian sigma) of that texture; twice that in depth
    "speck_sigma_um": 0.3,  # lateral size (Gaussian sigma) of specks and fibres
    "specks": 0.4,  # per um^2 of field
    "speck_mass": 0.25,  # mean absorbance * um^2 of one speck
    "stain_variation": 0.15,  # relative amplitude, large scale
    "patchiness": 0.7,  # relative amplitude of the neuropil's mid-scale variation
    # camera
    "illumination": (200.0, 230.0),
    "vignetting": (0.03, 0.10),
    "gain": 0.01,  # DN per photo-electron
    "read_noise": 0.8,  # DN
    # ground truth
    "truth_sigma_um": 1.0,
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


def _uniform(rng: np.random.Generator, value) -> float:
    """A draw from a (lo, hi) range, or the value itself."""
    if isinstance(value, (tuple, list)):
        return float(rng.uniform(value[0], value[1]))
    return float(value)


# ----------------------------------------------------------------------------- optics


@lru_cache(maxsize=16)
def _otf_table(field: int, pixel_um: float, layer_um: float, n_max: int, optics: tuple) -> np.ndarray:
    """float32 OTFs (rfft2 layout of a ``field`` x ``field`` grid) for dz = 0, h, 2h, ... n_max h."""
    rho = frequency_grid((field, field), pixel_um, half=True)
    table = otf(rho, np.arange(n_max + 1) * layer_um, *optics).astype(np.float32)
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
        tan = math.tan(math.asin(p["na"] / p["n_medium"]))
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
        # in depth: two box filters (fast), together about a Gaussian of sigma 2 * grain_um
        box = max(1, 2 * round((math.sqrt(6.0 * (2.0 * p["grain_um"] / h) ** 2 + 1.0) - 1.0) / 2.0) + 1)
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
        value = np.maximum(1.0 + 0.8 * p["texture"] * self.texture[box], 0.0)
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


def _render(spec: _Specimen, plane_layers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absorbance images (cropped) seen with the focal plane at layer indices ``plane_layers``, and
    the specimen's layer spectra."""
    p, n = spec.p, spec.field
    j = spec.j0 + np.arange(spec.layers)
    dist = np.abs(plane_layers[:, None] - j[None, :])
    optics = (p["na"], p["n_medium"], p["wavelength_um"], p["core_sigma_um"])
    n_max = int(dist.max())
    table = _otf_table(n, p["pixel_um"], p["layer_um"], -(-n_max // 64) * 64, optics)
    a = spec.spectrum()
    out = np.empty((len(plane_layers), n, n // 2 + 1), np.complex64)
    for i in range(len(plane_layers)):
        np.sum(table[dist[i]] * a, axis=0, out=out[i])
    img = sfft.irfft2(out, s=(n, n))
    c = spec.pad
    return img[:, c : c + spec.size, c : c + spec.size], a


def _truth(spec: _Specimen, spectrum: np.ndarray, plane_w: np.ndarray) -> np.ndarray:
    p, n = spec.p, spec.field
    w = (spec.j0 + np.arange(spec.layers)) * spec.h
    s = p["truth_sigma_um"]
    weights = spec.thickness * np.exp(-0.5 * ((plane_w[:, None] - w[None, :]) / s) ** 2) / (s * math.sqrt(2 * np.pi))
    optics = (p["na"], p["n_medium"], p["wavelength_um"], p["core_sigma_um"])
    in_focus = _otf_table(n, p["pixel_um"], p["layer_um"], 0, optics)[0]
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


def _expose(rng: np.random.Generator, p: dict, light: np.ndarray, absorbance: np.ndarray) -> np.ndarray:
    """Poisson-Gaussian camera: shot noise of variance ``gain * I`` (Gaussian approximation of the
    Poisson law, exact at these thousands of photo-electrons per pixel) plus read noise."""
    mean = (light * np.exp(-absorbance)).astype(np.float32)
    std = np.sqrt(p["gain"] * mean + p["read_noise"] ** 2)
    noisy = mean + std * rng.standard_normal(mean.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _ideal(light: np.ndarray, absorbance: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(light * np.exp(-absorbance)), 0, 255).astype(np.uint8)


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
    planes = np.arange(depth) * q
    absorb, spectrum = _render(spec, planes)
    truth_abs = _truth(spec, spectrum, planes * p["layer_um"])
    i0, vig = _camera(rng, p, size)
    light = i0 * vig
    stack = _expose(rng, p, light, absorb)
    truth = _ideal(light, truth_abs)
    return stack, truth, focus


def simulate_infocus(rng: np.random.Generator, size: int = 128, **params) -> np.ndarray:
    """One in-focus image (uint8 YX, ``size`` x ``size``) of an independent specimen: focused on the
    section's middle (+-0.25 um), same optics and camera as the stacks."""
    p = _params(params)
    w_mid = rng.uniform(-0.25, 0.25)
    spec = _Specimen(rng, p, size, w_mid, 0.0)
    absorb, _ = _render(spec, np.array([0]))
    i0, vig = _camera(rng, p, size)
    return _expose(rng, p, i0 * vig, absorb[0])


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
    sim_NNNNN.tif`` (unpaired in-focus images, ``size`` x ``size``). 1 um voxels are recorded in the
    files. Stack ``i`` depends only on ``seed`` and ``i``. Returns a summary: ``dir``, ``n_stacks``,
    ``n_infocus``, ``size``, ``depth``, ``seed``, ``focal_planes`` (sharpest plane of each stack,
    0-based) and ``seconds``.
    """
    out = Path(out_dir)
    start = time.perf_counter()
    focal = []
    step = max(1, (n_stacks + n_infocus) // 8)
    meta = dict(_STACK_META)
    for i in range(n_stacks):
        stack, truth, focus = simulate_stack(_child(seed, 0, i), size=size, depth=depth)
        write_stack(out / "stacks" / f"sim_{i:05d}.tif", stack, meta)
        write_stack(out / "truth" / f"sim_{i:05d}.tif", truth, meta)
        focal.append(focus)
        if progress and ((i + 1) % step == 0 or i + 1 == n_stacks):
            logger.info("simulated %d/%d stacks", i + 1, n_stacks)
    for i in range(n_infocus):
        image = simulate_infocus(_child(seed, 1, i), size=size)
        write_image(out / "infocus" / f"sim_{i:05d}.tif", image, spacing=(1.0, 1.0))
        if progress and ((i + 1) % step == 0 or i + 1 == n_infocus):
            logger.info("simulated %d/%d in-focus images", i + 1, n_infocus)
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


def ensure_generated(
    dataset_dir,
    required: str,
    simulate: Callable[..., dict],
    describe: Callable[[dict], str],
    what: str = "dataset",
    allowed: bool = True,
    hint: str = "",
    **kwargs,
) -> Path:
    """If ``dataset_dir/required`` holds no files (missing or empty), ``simulate(folder, **kwargs)`` the
    simulated ``what`` there (:func:`generate_atomically`, ``required`` moved in last: an interrupted
    generation leaves no ``required`` files behind, so the next call starts over) and say so and where
    (:func:`say`); otherwise leave it untouched. Return the path. ``describe`` turns ``simulate``'s summary
    into the closing message. With ``allowed`` False (a folder the user named: a typo must not train on
    simulated data), a folder without ``required`` files is an InputError (``hint``: what to put there).
    """
    path = Path(dataset_dir)
    if _has_files(path / required):
        return path
    if not allowed:
        if not path.is_dir():
            raise InputError(path, "no such dataset folder: check --dataset_dir")
        raise InputError(path / required, f"holds no {required}" + (f": {hint}" if hint else ""))
    say(f"{path} holds no {required}/ files: generating the simulated {what} there")
    say(describe(generate_atomically(path, simulate, required, **kwargs)))
    return path


def ensure_dataset(dataset_dir, simulate: bool = True, **kwargs) -> Path:
    """If dataset_dir has no stacks (missing or empty stacks/ folder), generate the simulated set there
    (:func:`ensure_generated`); otherwise leave it untouched. Return the path. ``kwargs`` go to
    ``simulate_dataset``. With ``simulate`` False (a folder the user named: a typo must not train on
    simulated data), a folder without stacks is an InputError.
    """

    def describe(summary: dict) -> str:
        return (
            f"simulated {summary['n_stacks']} stacks (with their truth in truth/) and {summary['n_infocus']} "
            f"in-focus images into {dataset_dir} in {summary['seconds']:.1f} s"
        )

    hint = f"put them there ({'/'.join(STACK_SUFFIXES)}), see the README's dataset layout"
    return ensure_generated(dataset_dir, "stacks", simulate_dataset, describe, "dataset", simulate, hint, **kwargs)
