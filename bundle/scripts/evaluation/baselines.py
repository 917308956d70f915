"""Non-learned baselines that an enhanced stack is compared against.

Each baseline takes a brightfield z-stack (ZYX, any real dtype, in its own intensity units: a
bright background and dark stained cells) and returns a float32 ZYX array of the same shape in the
same units (nothing is normalised; the evaluation maps intensities itself):

- :func:`identity`: the input itself;
- :func:`sharpest_slice`: the plane with the highest :func:`scripts.zsegan.focus.focus_measure`, at every
  depth;
- :func:`focal_detail`: every plane plus the detail of the sharpest plane that defocus removes at that
  plane's distance from it (a Gaussian defocus): exactly the focal plane at every depth for a specimen
  thinner than the depth of field, the focal plane's detail laid over each plane otherwise;
- :func:`focal_transfer`: each plane's low frequencies, and the focal plane's high frequencies that the plane's
  defocus removed (:func:`scripts.nets.networks.focal_transfer`, the base of a ``focal_skip`` G_S);
- :func:`edf`: an extended-depth-of-field composite (per pixel, the plane of highest local focus),
  at every depth;
- :func:`richardson_lucy`: 3D Richardson-Lucy deconvolution of the stack's absorbance with the
  defocus PSF of :func:`defocus_psf` (the simulator's optics, :func:`scripts.simulate.optics.defocus_otf`);
- :class:`Unrelated`: another stack of the same dataset: not a method but the chance level of every
  measure that compares x and y (what a number like SSIM 0.25 is worth).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from scipy import fft as sfft
from scipy import ndimage
from scripts.data.io import read_stack
from scripts.nets import networks
from scripts.simulate.optics import OPTICS, defocus_otf
from scripts.zsegan.focus import sharpest_index

__all__ = [
    "Unrelated",
    "defocus_psf",
    "edf",
    "focal_detail",
    "focal_transfer",
    "identity",
    "richardson_lucy",
    "sharpest_slice",
]

#: Gaussian defocus sigma per plane from focus (px/plane) of :func:`focal_detail`: the real brain stacks'
#: (``tools/defocus_from_stacks.py`` measured 0.271 above focus and 0.298 below; docs/results.md)
DEFOCUS_K = 0.29

#: Smallest transmission I / I0 taken into account (absorbance at most -ln(1e-3) = 6.9).
TRANSMISSION_FLOOR = 1e-3


def _as_stack(stack) -> np.ndarray:
    """``stack`` as a float32 ZYX array (not copied if it is one); ValueError unless 3D."""
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"expected a ZYX stack, got shape {stack.shape}")
    return stack.astype(np.float32, copy=False)


def identity(stack) -> np.ndarray:
    """The input as a float32 copy (ZYX)."""
    return np.array(_as_stack(stack), dtype=np.float32, copy=True)


def sharpest_slice(stack) -> np.ndarray:
    """The plane with the highest :func:`scripts.zsegan.focus.focus_measure`, copied to every depth (ZYX float32)."""
    stack = _as_stack(stack)
    best = sharpest_index(stack)
    return np.repeat(stack[best : best + 1], len(stack), axis=0)


def focal_detail(stack, k: float = DEFOCUS_K) -> np.ndarray:
    """Each plane z plus f - G(k |z - focus|) * f, with f the sharpest plane and G a Gaussian (ZYX float32).

    The detail that a Gaussian defocus of sigma ``k`` px per plane takes from the focal plane f at z's
    distance is added back to plane z: if plane z is f so defocused (a specimen thinner than the depth
    of field), the result is f itself; otherwise f's detail lies over z's own content. A non-learned
    reading of "borrow the focal plane's detail": what G_S could reach without inventing anything.
    """
    stack = _as_stack(stack)
    best = sharpest_index(stack)
    focal = stack[best].astype(np.float64)
    out = stack.astype(np.float64)
    for z in range(len(stack)):
        sigma = k * abs(z - best)
        if sigma > 0:
            out[z] += focal - ndimage.gaussian_filter(focal, sigma, mode="nearest")
    return out.astype(np.float32)


def focal_transfer(stack) -> np.ndarray:
    """Each plane z as f + G_z * (x_z - f), f the focal plane and G_z plane z's Gaussian defocus (ZYX float32):
    :func:`scripts.nets.networks.focal_transfer` with the focal plane G_S finds
    (:func:`scripts.nets.networks.focal_plane`), exactly what a ``focal_skip`` G_S starts its training from."""
    x = torch.from_numpy(np.array(_as_stack(stack), dtype=np.float32))[None, None]
    with torch.no_grad():
        return networks.focal_transfer(x, networks.focal_plane(x), torch.tensor(networks.FOCAL_DEFOCUS))[0, 0].numpy()


class Unrelated:
    """The chance level: for a stack, another stack of ``datalist`` with the same shape (read from its file).

    Which one is fixed by the stack's content (a hash), so evaluations are repeatable; a stack equal
    to the input is never returned. ValueError when the datalist has no other stack of that shape.
    """

    def __init__(self, datalist):
        self.paths = [str(item["image"]) if isinstance(item, dict) else str(item) for item in datalist]

    def __call__(self, stack) -> np.ndarray:
        stack = _as_stack(stack)
        start = int.from_bytes(hashlib.sha256(stack.tobytes()).digest()[:4], "little") % max(len(self.paths), 1)
        for path in self.paths[start:] + self.paths[:start]:
            other = read_stack(path)[0].astype(np.float32)
            if other.shape == stack.shape and not np.array_equal(other, stack):
                return other
        raise ValueError(f"no other stack of shape {stack.shape} in the datalist for the chance level")


def edf(
    stack, laplace_sigma: float = 1.0, energy_sigma: float = 3.0, median_size: int = 9, depth_sigma: float = 2.0
) -> np.ndarray:
    """Extended depth of field: per pixel, the plane of highest local focus, copied to every depth.

    The classic energy-of-Laplacian EDF of brightfield microscopy (Valdecasas et al., "On the extended
    depth of focus algorithms for bright field microscopy", Micron 32:559-569, 2001; focus operators
    as reviewed by Pertuz et al., Pattern Recognition 46:1415-1432, 2013):

    1. local focus of plane z: the squared Laplacian of Gaussian (``laplace_sigma`` px, which ignores
       camera noise) averaged by a Gaussian window of ``energy_sigma`` px;
    2. depth map: per pixel the plane of highest local focus, regularised by a median filter
       (``median_size`` px, removes isolated wrong picks in textureless background) and then a
       Gaussian (``depth_sigma`` px, 0 to skip) so that neighbouring pixels come from nearby planes;
    3. composite: the stack sampled at the (fractional) depth, linearly interpolated between the two
       nearest planes.

    ZYX in, ZYX float32 out (the composite at every depth), same units as the input.
    """
    stack = _as_stack(stack)
    depth = len(stack)
    energy = np.empty_like(stack)
    for z in range(depth):
        ndimage.gaussian_laplace(stack[z], laplace_sigma, output=energy[z])
    np.square(energy, out=energy)
    ndimage.gaussian_filter(energy, (0, energy_sigma, energy_sigma), output=energy)
    depth_map = np.argmax(energy, axis=0).astype(np.float32)
    if median_size > 1:
        depth_map = ndimage.median_filter(depth_map, size=median_size, mode="nearest")
    if depth_sigma > 0:
        depth_map = ndimage.gaussian_filter(depth_map, depth_sigma, mode="nearest")
    lower = np.clip(np.floor(depth_map).astype(np.intp), 0, depth - 1)
    upper = np.minimum(lower + 1, depth - 1)
    frac = depth_map - lower
    below = np.take_along_axis(stack, lower[None], axis=0)[0]
    above = np.take_along_axis(stack, upper[None], axis=0)[0]
    composite = (1 - frac) * below + frac * above
    return np.repeat(composite[None].astype(np.float32), depth, axis=0)


def defocus_psf(
    depth: int,
    shape_yx: tuple[int, int],
    plane_um: float = OPTICS["plane_um"],
    pixel_um: float = OPTICS["pixel_um"],
    na: float = OPTICS["na"],
    n_medium: float = OPTICS["n_medium"],
    wavelength_um: float = OPTICS["wavelength_um"],
    core_sigma_um: float = OPTICS["core_sigma_um"],
) -> np.ndarray:
    """The 3D brightfield PSF of a stack of ``depth`` planes: float32 ZYX, ``(2 depth - 1,) + shape_yx``.

    Plane ``k`` (0-based) is the 2D PSF of a layer ``(k - depth + 1) * plane_um`` um from focus, from
    :func:`scripts.simulate.optics.defocus_otf` (the simulator's optics; for real data pass the microscope's
    NA, immersion index, pixel size and plane spacing): the inverse FFT of its OTF on a grid wide
    enough for the largest defocus disc, centred, cropped to ``shape_yx`` (odd sizes; the centre pixel
    is the optical axis) and tiny negative ringing clipped. ``2 depth - 1`` planes hold every defocus
    between two planes of the stack. Each plane is scaled to the same sum, as in the simulator where
    every layer's light is spread but conserved at every defocus, and the whole PSF sums to 1.
    Symmetric in z, y and x.

    ``shape_yx`` need not hold the widest disc (radius ``(depth - 1) plane_um tan(asin(na / n_medium))``,
    16 px for 29 planes at the defaults): on the simulated stacks (29 planes, 1 um, NA 0.5) a 17 x 17
    PSF deconvolves as well as 33 x 33 (:func:`richardson_lucy`'s correlation with the truth within
    0.01) and faster.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if len(shape_yx) != 2 or any(int(s) < 1 or int(s) % 2 == 0 for s in shape_yx):
        raise ValueError(f"shape_yx must be two odd sizes, got {shape_yx}")
    ny, nx = (int(s) for s in shape_yx)
    dz = np.arange(-(depth - 1), depth) * plane_um
    radius_px = (depth - 1) * plane_um * np.tan(np.arcsin(na / n_medium)) / pixel_um
    # a grid twice as wide as the largest disc (and the crop), so that its tails do not wrap around
    grid = sfft.next_fast_len(int(2 * max(ny, nx, 2 * radius_px + 8)))
    otf = defocus_otf((grid, grid), dz, pixel_um, na, n_medium, wavelength_um, core_sigma_um)
    psf = np.fft.fftshift(np.fft.ifft2(otf).real, axes=(-2, -1))
    c = grid // 2
    psf = np.clip(psf[:, c - ny // 2 : c + ny // 2 + 1, c - nx // 2 : c + nx // 2 + 1], 0.0, None)
    psf /= psf.sum(axis=(1, 2), keepdims=True) * len(psf)
    return psf.astype(np.float32)


def richardson_lucy(
    stack, psf: np.ndarray, num_iter: int = 10, background: float | None = None, accelerate: bool = True
) -> np.ndarray:
    """3D Richardson-Lucy deconvolution of a brightfield stack's absorbance (ZYX in, ZYX float32 out).

    Brightfield images absorbance, not intensity (``I = I0 exp(-psf (*) a)``, the simulator's model),
    so the deconvolution runs on ``A = -ln(clip(I / I0, TRANSMISSION_FLOOR, 1)) >= 0``, with ``I0`` the
    bright level ``background`` (default: the stack's 99.5th percentile), and returns
    ``I0 exp(-A_hat)``: never brighter than ``I0``, and pixels brighter than ``I0`` come back as ``I0``.

    ``psf``: ZYX, odd sizes, non-negative, e.g. :func:`defocus_psf` for this stack's depth; only its
    planes within ``depth - 1`` of the centre are used. The iteration is
    ``a <- a * psf^T (*) (A / (psf (*) a))`` from a constant start (Richardson 1972, Lucy 1974), as in
    ``skimage.restoration.richardson_lucy`` (tested to agree where both boundary models do), but with
    the PSF's FFT computed once and the convolutions cut to the stack's planes: on one core, for 10
    iterations on a 29 x 128 x 128 stack with a 17 x 17 PSF, scikit-image's takes about 1.9 s, this
    about 0.2 s. ``accelerate``: the
    vector extrapolation of Biggs & Andrews (Applied Optics 36:1766, 1997; as in MATLAB's
    ``deconvlucy``), which reaches in 10 iterations about what 20 plain ones do. ``num_iter`` is the
    regularisation: more iterations, sharper and noisier.

    Boundaries. In z the absorbance is taken as zero beyond the stack's planes (a thin section scanned
    through: nothing absorbs above or below the scanned range); with a ``2 depth - 1`` plane PSF every
    plane sees every other and each plane is equally sensitive, so each iteration conserves the total
    absorbance, laterally uniform parts of the stack (which carry no depth information) stay as they
    are, and a constant stack stays constant. In y and x the tissue continues beyond the field: the
    absorbance is reflect-padded by at least the PSF's half-size (to a fast FFT size), convolved
    periodically on that padded field, and cropped back, so the wrap-around of the padded field's
    opposite edges stays in the padding.
    """
    stack = _as_stack(stack)
    psf = np.asarray(psf, dtype=np.float32)
    if psf.ndim != 3 or any(s % 2 == 0 for s in psf.shape) or psf.min() < 0 or psf.sum() <= 0:
        raise ValueError(f"psf must be a non-negative ZYX array of odd sizes, got shape {psf.shape}")
    if num_iter < 1:
        raise ValueError(f"num_iter must be at least 1, got {num_iter}")
    i0 = float(np.percentile(stack, 99.5)) if background is None else float(background)
    if not np.isfinite(i0) or i0 <= 0:
        raise ValueError(f"the background (bright level) must be positive, got {i0}")
    absorbance = -np.log(np.clip(stack / np.float32(i0), TRANSMISSION_FLOOR, 1.0))
    a_hat = _deconvolve(absorbance, psf, num_iter, accelerate)
    return (i0 * np.exp(-a_hat)).astype(np.float32)


def _deconvolve(data: np.ndarray, psf: np.ndarray, num_iter: int, accelerate: bool) -> np.ndarray:
    """Richardson-Lucy of a non-negative float32 ZYX array (boundaries: :func:`richardson_lucy`)."""
    depth, ny, nx = data.shape
    c, kz = psf.shape[0] // 2, min(psf.shape[0] // 2, depth - 1)
    psf = psf[c - kz : c + kz + 1]
    ky, kx = psf.shape[1] // 2, psf.shape[2] // 2
    grid = tuple(sfft.next_fast_len(n, real=True) for n in (depth + kz, ny + 2 * ky, nx + 2 * kx))
    pad_y, pad_x = (grid[1] - ny) // 2, (grid[2] - nx) // 2
    data = np.pad(data, ((0, 0), (pad_y, grid[1] - ny - pad_y), (pad_x, grid[2] - nx - pad_x)), mode="reflect")
    kernel = np.zeros(grid, np.float32)
    kernel[: psf.shape[0], : psf.shape[1], : psf.shape[2]] = psf / psf.sum()
    otf = sfft.rfftn(np.roll(kernel, (-kz, -ky, -kx), axis=(0, 1, 2)))
    otf_mirror = otf.conj()  # the flipped PSF, for the correlation

    def blur(volume, transfer):
        """Convolution on the grid: 2D FFTs of the stack's planes only, the z FFT zero-padded to grid[0]."""
        spectrum = sfft.fft(sfft.rfft2(volume), n=grid[0], axis=0)
        spectrum *= transfer
        return sfft.irfft2(sfft.ifft(spectrum, axis=0)[:depth], s=grid[1:])

    estimate, previous = np.ones_like(data), None
    step = step_before = None  # the last two RL updates, for the extrapolation
    ratio = np.empty_like(data)
    for _ in range(num_iter):
        point = estimate
        if accelerate and step_before is not None:
            alpha = float(np.vdot(step, step_before)) / max(float(np.vdot(step_before, step_before)), 1e-30)
            point = np.maximum(estimate + min(max(alpha, 0.0), 1.0) * (estimate - previous), 0.0)
        model = blur(point, otf)
        np.divide(data, model, out=ratio, where=model > 1e-6)
        ratio[model <= 1e-6] = 0.0  # nothing modelled there, and (A >= 0) nothing seen
        previous, estimate = estimate, point * blur(ratio, otf_mirror)
        step, step_before = estimate - point, step
    return np.maximum(estimate[:, pad_y : pad_y + ny, pad_x : pad_x + nx], 0.0)
