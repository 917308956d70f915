"""The defocus optics of a brightfield microscope, shared by the simulators and the deconvolution baseline.

Incoherent imaging of the absorbance, layer by layer. For a layer at
defocus ``dz`` um the 2D OTF is the product of

- the diffraction-limited OTF of a circular pupil, ``(2/pi)(acos v - v sqrt(1 - v^2))``,
  ``v = rho / (2 NA / wavelength)`` (NA 0.5, 0.55 um);
- a Gaussian core ``exp(-2 pi^2 core_sigma^2 rho^2)`` (``core_sigma_um`` 0.2 um: residual
  aberrations, pixel integration);
- the geometric-optics defocus disc of radius ``R = |dz| tan(asin(NA / n_medium))`` (0.58 |dz| for
  NA 0.5 in air), whose OTF is the jinc ``2 J1(2 pi rho R) / (2 pi rho R)``,

so blur grows linearly with the distance from focus (with the disc's contrast reversals) and
objects above and below the focal plane bleed into it. With ``psf="gaussian"`` the disc is replaced by a
Gaussian of the same second moment (``sigma = R / 2``), without contrast reversals: what the real stacks
show (``tools/defocus_from_stacks.py``: Gaussian transfer functions, sigma growing by 0.27-0.30 px per
plane, about the disc's 0.29 at NA 0.5 in air). Plane ``z`` of the stack is the transmitted
intensity ``I(z) = I0 * V * exp(-sum_d OTF(z - d) (*) a_d)``, the sum over the specimen's layers
``d`` of their absorbance ``a_d`` convolved (in Fourier space, on a field padded by the largest blur
radius, then cropped) with the OTF of their defocus. Checked against the real stacks: the ratio of
spatial-frequency power between the sharpest plane and planes 4, 8 and 12 um away matches the real
one within about 0.1 from 0.05 to 0.3 cycles/px.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = ["OPTICS", "defocus_otf", "frequency_grid", "otf"]

#: The simulated microscope (the simulators' defaults; override any by keyword).
OPTICS: dict = {
    "pixel_um": 1.0,  # lateral pixel size
    "plane_um": 1.0,  # distance between the stack's focal planes
    "layer_um": 0.5,  # depth sampling of the specimen (plane_um must be a multiple of it)
    "na": 0.5,
    "n_medium": 1.0,
    "wavelength_um": 0.55,
    "core_sigma_um": 0.2,
}


def frequency_grid(shape_yx: tuple[int, int], pixel_um: float, half: bool) -> np.ndarray:
    """Radial spatial frequency (cycles/um) of the FFT grid (``half``: the rfft2 layout)."""
    ny, nx = shape_yx
    fy = np.fft.fftfreq(ny, d=pixel_um)
    fx = np.fft.rfftfreq(nx, d=pixel_um) if half else np.fft.fftfreq(nx, d=pixel_um)
    return np.hypot(fy[:, None], fx[None, :])


def otf(
    rho: np.ndarray, dz_um, na: float, n_medium: float, wavelength_um: float, core_sigma_um: float, psf: str = "disc"
):
    """OTF on the frequency grid ``rho`` for each defocus in ``dz_um``: shape dz.shape + rho.shape.
    ``psf``: the defocus blur, "disc" (geometric optics) or "gaussian" (same second moment)."""
    if psf not in ("disc", "gaussian"):
        raise ValueError(f"psf must be 'disc' or 'gaussian', got {psf!r}")
    dz = np.abs(np.asarray(dz_um, dtype=np.float64))
    nu = np.minimum(rho * wavelength_um / (2.0 * na), 1.0)
    in_focus = (2.0 / np.pi) * (np.arccos(nu) - nu * np.sqrt(1.0 - nu * nu))
    in_focus = in_focus * np.exp(-2.0 * np.pi**2 * core_sigma_um**2 * rho * rho)
    radius = dz * math.tan(math.asin(na / n_medium))
    if psf == "gaussian":
        sigma = radius[..., None, None] / 2.0
        return in_focus * np.exp(-2.0 * np.pi**2 * sigma * sigma * rho * rho)
    x = 2.0 * np.pi * radius[..., None, None] * rho
    jinc = np.ones_like(x)
    nz = x > 1e-9
    jinc[nz] = 2.0 * special.j1(x[nz]) / x[nz]
    return in_focus * jinc


def defocus_otf(
    shape_yx: tuple[int, int],
    dz_um: float | np.ndarray,
    pixel_um: float = 1.0,
    na: float = 0.5,
    n_medium: float = 1.0,
    wavelength_um: float = 0.55,
    core_sigma_um: float = OPTICS["core_sigma_um"],
    psf: str = "disc",
) -> np.ndarray:
    """The 2D OTF of a layer ``dz_um`` um from focus, on the ``numpy.fft.fft2`` grid of ``shape_yx``.

    Real and even (the PSF is symmetric), so ``ifft2(fft2(image) * otf).real`` blurs ``image`` as the
    microscope does; ``OTF[0, 0] == 1`` (the PSF conserves energy). The model (see the module
    docstring): diffraction-limited circular-pupil OTF x Gaussian core (``core_sigma_um``) x the jinc
    OTF of the geometric defocus disc of radius ``|dz| tan(asin(na / n_medium))``.

    ``psf="gaussian"``: a Gaussian defocus of the disc's second moment instead (the module docstring).
    ``dz_um`` a scalar gives shape ``shape_yx``; an array gives ``dz.shape + shape_yx`` (e.g. the
    3D OTF stack ``defocus_otf(shape, np.arange(-14, 15))`` for deconvolution, whose
    ``ifft2(...).real`` are the PSF planes with the origin at pixel (0, 0)).
    """
    if not 0 < na < n_medium:
        raise ValueError(f"na must be in (0, n_medium={n_medium}), got {na}")
    rho = frequency_grid(tuple(shape_yx), pixel_um, half=False)
    return otf(rho, dz_um, na, n_medium, wavelength_um, core_sigma_um, psf)
