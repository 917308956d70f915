"""An optical G_B: the microscope's defocus as a small, differentiable, learnable blur.

ZSE-GAN's G_B maps the sharp volume y = G_S(x) back to the stack x. A second 3D network (the
paper's) can do that by any means, including reading a code that G_S hides in invisible
high-frequency detail (Chu et al. 2017), so the cycle loss need not keep the specimen in place.
:class:`OpticalBlur` is G_B as the microscope itself: plane z of y, seen ``d = z - z_f`` planes away
from the stack's focal plane ``z_f``, is blurred by a Gaussian point-spread function of width

    sigma(d) = sqrt(sigma_0^2 + (k * d)^2)     (k = k_above for d < 0, k_below for d > 0),

in absorbance (``domain="absorbance"``: an absorbing specimen multiplies transmissions, so blur acts on
-log of the transmitted light), or on the intensity itself (``domain="intensity"``: light is kept, so
each plane keeps its mean, as the real stacks' planes do: docs/results.md), as in Lim, Park & Ye 2020
(CycleGAN with a blur kernel for deconvolution microscopy). Its three parameters (sigma_0, k_above,
k_below, in pixels and pixels per plane) are learnt with the generators. It cannot hide information,
and it costs a few FFTs instead of a 3D network's forward and backward passes.

Initialisation (:func:`blur_per_plane`): a geometric defocus disc of radius ``|dz| tan(asin(NA/n))``
(the disc of :func:`scripts.simulate.optics.defocus_otf`) has the second moment of a Gaussian of sigma =
radius / 2, so k starts at ``plane_um / pixel_um * tan(asin(NA / n)) / 2`` (0.29 px per plane for the
simulator's NA 0.5 in air, 1 um planes and pixels).

Intensities: the stacks are mapped to [-1, 1] by their percentiles (``scripts.transforms``), so the
transmission is taken as ``t = floor + (1 - floor) (y + 1) / 2``: the brightest background 1, the
darkest cell core ``floor`` (0.1: an absorbance of 2.3), not 0, whose absorbance would be infinite.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["OpticalBlur", "blur_per_plane", "gaussian_blur_planes"]


def blur_per_plane(na: float = 0.5, n_medium: float = 1.0, plane_um: float = 1.0, pixel_um: float = 1.0) -> float:
    """Gaussian sigma (pixels) per plane of defocus with the second moment of the geometric defocus disc."""
    if not 0 < na < n_medium:
        raise ValueError(f"na must be in (0, n_medium={n_medium}), got {na}")
    return plane_um / pixel_um * math.tan(math.asin(na / n_medium)) / 2.0


def gaussian_blur_planes(volume: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each xy plane of a B,C,Z,Y,X volume blurred by a 2D Gaussian of its own sigma, (B, Z) px, through FFTs.

    Reflect padding by 3 sigma of the widest PSF (at most the image size less one), so that the FFT's
    circular convolution does not wrap one border onto the other. Differentiable in volume and sigma.
    """
    size_y, size_x = volume.shape[-2:]
    if sigma.shape != (volume.shape[0], volume.shape[2]):
        raise ValueError(
            f"sigma must hold one value per plane, shape {tuple(volume.shape[::2])}, got {tuple(sigma.shape)}"
        )
    pad = int(min(math.ceil(3 * float(sigma.max().detach())), size_y - 1, size_x - 1))
    padded = nn.functional.pad(volume.float().flatten(1, 2), (pad, pad, pad, pad), mode="reflect")
    freq_y = torch.fft.fftfreq(padded.shape[-2], device=volume.device)
    freq_x = torch.fft.rfftfreq(padded.shape[-1], device=volume.device)
    rho2 = freq_y[:, None] ** 2 + freq_x[None, :] ** 2
    otf = torch.exp(-2.0 * math.pi**2 * sigma[..., None, None] ** 2 * rho2)  # a Gaussian PSF's OTF
    blurred = torch.fft.irfft2(torch.fft.rfft2(padded) * otf, s=padded.shape[-2:])
    return blurred[..., pad : pad + size_y, pad : pad + size_x].reshape(volume.shape)


class OpticalBlur(nn.Module):
    """G_B as a learnable defocus blur: ``forward(y, focus)`` blurs each plane of y by its distance from focus.

    Args:
        blur_per_plane: initial k, sigma's growth in pixels per plane of defocus, on both sides of focus.
        core_sigma: initial sigma_0 in pixels: the blur at the focal plane itself.
        floor: transmission of the darkest value (-1) when converting to absorbance.
        learnable: learn k_above, k_below and sigma_0 with the generators (else fixed).
        domain: "absorbance" (blur -log of the transmission) or "intensity" (blur the image, keeping its mean).
    """

    needs_focus = True  # the trainer passes each stack's focal plane

    def __init__(
        self,
        blur_per_plane: float = 0.29,
        core_sigma: float = 0.3,
        floor: float = 0.1,
        learnable: bool = True,
        domain: str = "absorbance",
    ):
        super().__init__()
        if domain not in ("absorbance", "intensity"):
            raise ValueError(f"domain must be 'absorbance' or 'intensity', got {domain!r}")
        if blur_per_plane <= 0 or core_sigma <= 0:
            raise ValueError(f"blur_per_plane and core_sigma must be > 0, got {blur_per_plane}, {core_sigma}")
        if not 0 < floor < 1:
            raise ValueError(f"floor must be in (0, 1), got {floor}")
        log_k = torch.full((2,), math.log(blur_per_plane))
        log_core = torch.tensor(math.log(core_sigma))
        self.log_k = nn.Parameter(log_k, requires_grad=learnable)  # (above focus, below focus)
        self.log_core = nn.Parameter(log_core, requires_grad=learnable)
        self.floor, self.domain = floor, domain

    def sigmas(self, depth: int, focus: torch.Tensor) -> torch.Tensor:
        """(B,) focal planes (0-based, may be fractional) -> (B, Z) PSF sigmas in pixels."""
        d = torch.arange(depth, device=focus.device, dtype=torch.float32)[None, :] - focus.float()[:, None]
        k = torch.where(d < 0, self.log_k[0].exp(), self.log_k[1].exp())
        return torch.sqrt(self.log_core.exp() ** 2 + (k * d) ** 2)

    def forward(self, y: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        """y: B,1,Z,Y,X in [-1, 1]; focus: (B,) focal plane of each stack -> the blurred stack, same shape."""
        if y.ndim != 5:
            raise ValueError(f"OpticalBlur expects a B,C,Z,Y,X tensor, got shape {tuple(y.shape)}")
        if focus.shape != (y.shape[0],):
            raise ValueError(f"focus must hold one plane per stack ({y.shape[0]}), got shape {tuple(focus.shape)}")
        sigma = self.sigmas(y.shape[2], focus)  # (B, Z)
        if self.domain == "intensity":
            return gaussian_blur_planes(y, sigma).to(y.dtype)
        transmission = self.floor + (1.0 - self.floor) * (y.float() + 1.0) / 2.0
        absorbance = -torch.log(transmission.clamp(min=1e-3))
        blurred = gaussian_blur_planes(absorbance, sigma)
        transmitted = torch.exp(-blurred)
        return (2.0 * (transmitted - self.floor) / (1.0 - self.floor) - 1.0).to(y.dtype)
