"""The paper's losses, eqs (1)-(10): adversarial terms on 2D sections and the weighted cycle loss.

The paper writes the adversarial terms in log form (eqs 2, 3, 5, 6); :class:`AdversarialCriterion`
computes them as binary cross-entropy on D's logits ("bce"), or, by default and as the reference
code does, as least squares ("lsgan", Mao et al.). Both are minimised: D minimises the loss of its
real/fake labels, a generator the loss of its fakes labelled real.

Exponents in the paper become weights on log-likelihoods: log(D(y_par) * D(y_perp)^p) =
log D(y_par) + p log D(y_perp) (eqs 2-3), and log(D(.)^alpha) = alpha log D(.) (eqs 5-6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers import gaussian_1d, separable_filtering
from scripts.nets.optical import gaussian_blur_planes

__all__ = [
    "AdversarialCriterion",
    "anisotropic_adversarial_loss",
    "correction_tv_loss",
    "focal_detail_loss",
    "lowpass",
    "lowpass_fidelity_loss",
    "line_spectrum",
    "spectral_loss",
    "weighted_cycle_loss",
    "weighted_identity_loss",
]

_MODES = ("lsgan", "bce")


class AdversarialCriterion:
    """GAN loss on patch logits: "lsgan" (MSE to 1 / 0, default) or "bce" (the paper's log form).

    Called with N,... logits: each sample's loss is the mean over its patch map; the result is
    sum_i w_i * l_i / N with per-sample weights w (the plain mean when ``weight`` is None), so
    weights scale the loss rather than re-normalise it (D_B's alpha, eqs 5-6).
    """

    def __init__(self, mode: str = "lsgan"):
        if mode not in _MODES:
            raise ValueError(f"adversarial mode must be one of {list(_MODES)}, got {mode!r}")
        self.mode = mode

    def __call__(self, logits: torch.Tensor, target_is_real: bool, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted mean over samples of the per-sample patch-mean loss against a real/fake target."""
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        if self.mode == "lsgan":
            per_patch = (logits - target) ** 2
        else:
            # -log D(.) for real targets, -log(1 - D(.)) for fake: the log terms of eqs (2)-(3), (5)-(6)
            per_patch = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        per_sample = per_patch.reshape(logits.shape[0], -1).mean(dim=1)
        if weight is None:
            return per_sample.mean()
        weight = weight.to(per_sample).reshape(-1)
        if weight.shape != per_sample.shape:
            raise ValueError(
                f"weight must hold one value per sample ({per_sample.shape[0]}), got shape {tuple(weight.shape)}"
            )
        return (weight * per_sample).sum() / per_sample.shape[0]


def anisotropic_adversarial_loss(
    criterion: AdversarialCriterion,
    d_parallel: torch.Tensor,
    d_perpendicular: torch.Tensor,
    target_is_real: bool,
    p: float,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """D_S's anisotropic term: L(y_par) + p * L(y_perp) on D_S's logits for both kinds of section.

    ``weight`` (optional, one per horizontal section) weighs the y_par term, e.g. by alpha as the
    reference code does; the y_perp term is unweighted.
    """
    # eqs (1)-(3): log(D(y_par) * D(y_perp)^p) = log D(y_par) + p * log D(y_perp)
    return criterion(d_parallel, target_is_real, weight) + p * criterion(d_perpendicular, target_is_real)


def _weighted_slice_l1(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean over (b, z) of weight[b, z] * mean |a - b| over (C, Y, X), for B,C,Z,Y,X tensors."""
    if a.shape != b.shape or a.ndim != 5:
        raise ValueError(f"expected two B,C,Z,Y,X tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    per_slice = (a - b).abs().mean(dim=(1, 3, 4))  # (B, Z)
    try:
        weight = torch.broadcast_to(weight.to(per_slice), per_slice.shape)
    except RuntimeError as err:
        raise ValueError(
            f"weight must be (B, Z) = {tuple(per_slice.shape)} or broadcast to it, got {tuple(weight.shape)}"
        ) from err
    return (weight * per_slice).mean()


def weighted_cycle_loss(x: torch.Tensor, x_rec: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq (8) with per-slice weights s: mean over b, z of s[b, z] * mean |x - G_B(G_S(x))| over C, Y, X.

    x, x_rec: B,C,Z,Y,X; weight: (B, Z) (or anything broadcasting to it, e.g. (Z,)). Not divided by
    the sum of the weights: with all weights 1 this is the plain L1 loss, and larger weights make
    the cycle term larger. This is the mean over slices, sum_z s_z L1_z / Z; the reference notebook
    trains with the max over slices instead (docs/design.md, the notebook's settings beside ours).
    """
    # eq (8): L_CON = E[||x - G_B(G_S(x))||_1], here weighted per slice
    return _weighted_slice_l1(x, x_rec, weight)


def weighted_identity_loss(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Optional identity term |G_S(x) - x| (``y`` = G_S(x)), weighted per slice like the cycle loss.

    Weight by normalised sharpness so that slices already in focus are kept as they are. Same
    normalisation as :func:`weighted_cycle_loss`. Not in the paper (CycleGAN's identity loss).
    """
    return _weighted_slice_l1(x, y, weight)


def lowpass(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each xy plane of a B,C,Z,Y,X volume blurred by a 2D Gaussian of ``sigma`` px (replicate borders)."""
    gauss = gaussian_1d(torch.tensor(float(sigma)), truncated=3.0, normalize=True).to(volume)
    planes = volume.reshape(-1, 1, *volume.shape[-2:])
    return separable_filtering(planes, [gauss, gauss], mode="replicate").reshape(volume.shape)


def lowpass_fidelity_loss(x: torch.Tensor, y: torch.Tensor, sigma: float, weight: torch.Tensor) -> torch.Tensor:
    """|lowpass(G_S(x)) - lowpass(x)| per slice, weighted like the cycle loss (``y`` = G_S(x)).

    Keeps the specimen where it is at the scale that defocus leaves it (a Gaussian of ``sigma`` px),
    and leaves G_S free above that scale: the fine detail it adds to a blurred slice costs nothing
    here. Not in the paper.
    """
    return _weighted_slice_l1(lowpass(x, sigma), lowpass(y, sigma), weight)


def correction_tv_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Total variation of G_S's correction y - x within each plane: mean |d/dy (y - x)| + |d/dx (y - x)|.

    A prior on what G_S adds (``y`` = G_S(x)): a correction made of few edges costs little, one made of
    ripples or a grid costs in proportion to its amplitude and frequency. The blur it undoes is left to
    the cycle and the adversarial terms. Not in the paper.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    r = y - x
    return (r[..., 1:, :] - r[..., :-1, :]).abs().mean() + (r[..., :, 1:] - r[..., :, :-1]).abs().mean()


def focal_detail_loss(x: torch.Tensor, y: torch.Tensor, focus: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """|D_z(G_S(x)_z) - D_z(x_f)|: the detail that defocus takes from each plane of y is the focal plane's.

    ``D_z(v) = v - G(sigma_z) * v`` is the detail that a Gaussian defocus of ``sigma`` (B, Z) px, each
    plane's PSF width relative to the stack's focal plane ``focus`` (B,) (the optical G_B's ``sigmas``),
    removes from an image v. The cycle through an optical G_B fixes what is left after that blur and
    nothing of what it removes, so G_S may put any texture there; this term asks that texture to be
    the focal plane's own (a specimen thinner than the depth of field seen at every depth), softly, as
    a prior the adversarial terms can overrule. Mean absolute difference over planes and pixels
    (``y`` = G_S(x)). Not in the paper.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    sigma = sigma.detach().to(y.device)
    focal = x[torch.arange(x.shape[0], device=x.device), :, focus.long()].unsqueeze(2).expand_as(x)
    detail_y = y.float() - gaussian_blur_planes(y, sigma)
    detail_focal = focal.float() - gaussian_blur_planes(focal, sigma)
    return (detail_y - detail_focal).abs().mean()


def line_spectrum(volume: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """Mean power spectrum of ``length``-sample segments along ``dim`` (mean removed, Hann window, DC left out).

    volume: B,C,Z,Y,X; ``dim`` 2 (z), 3 (y) or 4 (x). Segments start every ``length // 2`` samples.
    Returns (B, Z, F) for ``dim`` 3 or 4 (one spectrum per plane) and (B, F) for ``dim`` 2, with
    ``F = length // 2`` frequencies (1 .. length // 2 cycles per segment).
    """
    if volume.ndim != 5 or dim not in (2, 3, 4):
        raise ValueError(f"expected a B,C,Z,Y,X volume and dim 2, 3 or 4, got shape {tuple(volume.shape)}, dim {dim}")
    if volume.shape[dim] < length or length < 4:
        raise ValueError(f"segments of {length} samples need 4 <= length <= {volume.shape[dim]} along dim {dim}")
    segments = volume.float().unfold(dim, length, max(length // 2, 1))  # ..., n_segments (at dim), length
    segments = segments - segments.mean(dim=-1, keepdim=True)  # no leak of each segment's mean into low bins
    window = torch.hann_window(length, periodic=False, device=volume.device)
    power = torch.fft.rfft(segments * window, dim=-1).abs().square()[..., 1 : length // 2 + 1]
    keep = (0, 2) if dim != 2 else (0,)  # batch and, for lines within planes, the plane
    return power.mean(dim=[d for d in range(power.ndim - 1) if d not in keep])


def spectral_loss(x: torch.Tensor, y: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
    """|log S(G_S(x)) - log S(x at focus)|: every section of y with the power spectrum of the in-focus slice.

    S is :func:`line_spectrum` over segments as long as the stack is deep (so that lines along z,
    x and y are compared at the same frequencies): along x and y in every plane of ``y`` (the xy
    sections), and along z (the vertical sections), each against the spectrum along x and y of the
    stack's own focal plane ``focus`` (B,). Phase-free: it asks for as much detail per frequency as
    the in-focus slice has, not for any particular detail, and leaves where the specimen is to the
    cycle and identity terms; a band of invented ripples raises its band above the target and costs.
    The two terms (xy, z) are averaged. Not in the paper.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    length = x.shape[2]
    planes = x[torch.arange(x.shape[0], device=x.device), :, focus.long()].unsqueeze(2)  # B,C,1,Y,X
    target = 0.5 * (line_spectrum(planes, 3, length) + line_spectrum(planes, 4, length))  # (B, 1, F)
    eps = 1e-6 * target.mean(dim=-1, keepdim=True)
    log_target = torch.log(target + eps)
    xy = 0.5 * (line_spectrum(y, 3, length) + line_spectrum(y, 4, length))  # (B, Z, F)
    z = line_spectrum(y, 2, length)  # (B, F)
    return 0.5 * (
        (torch.log(xy + eps) - log_target).abs().mean() + (torch.log(z + eps[:, 0]) - log_target[:, 0]).abs().mean()
    )
