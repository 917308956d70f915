"""Adversarial criterion, anisotropic loss (eqs 1-3) and weighted cycle / identity losses (eq 8)."""

import math

import pytest
import torch
from scripts.zsegan.losses import (
    AdversarialCriterion,
    anisotropic_adversarial_loss,
    correction_tv_loss,
    focal_detail_loss,
    weighted_cycle_loss,
    weighted_identity_loss,
)


def test_lsgan_known_values():
    c = AdversarialCriterion()
    assert c.mode == "lsgan"
    ones = torch.ones(2, 1, 3, 3)
    assert c(ones, True).item() == 0.0
    assert c(ones, False).item() == 1.0
    assert c(torch.full((2, 1, 3, 3), 0.5), True).item() == pytest.approx(0.25)


def test_bce_known_values():
    c = AdversarialCriterion("bce")
    zeros = torch.zeros(2, 1, 4, 4)
    assert c(zeros, True).item() == pytest.approx(math.log(2))
    assert c(zeros, False).item() == pytest.approx(math.log(2))
    logits = torch.full((1, 1, 2, 2), 2.0)
    assert c(logits, True).item() == pytest.approx(-math.log(1 / (1 + math.exp(-2))))
    assert c(logits, False).item() == pytest.approx(-math.log(1 - 1 / (1 + math.exp(-2))))


def test_weights_scale_per_sample_means_without_renormalising():
    c = AdversarialCriterion()
    # per-sample losses (target real): 1 for logits 0, 4 for logits -1
    logits = torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), -1.0)])
    assert c(logits, True).item() == pytest.approx(2.5)
    weight = torch.tensor([2.0, 0.5])
    assert c(logits, True, weight).item() == pytest.approx((2 * 1 + 0.5 * 4) / 2)
    assert c(logits, True, torch.ones(2)).item() == pytest.approx(2.5)
    with pytest.raises(ValueError):
        c(logits, True, torch.ones(3))


def test_unknown_mode_lists_valid_ones():
    with pytest.raises(ValueError, match="lsgan.*bce"):
        AdversarialCriterion("wgan")


def test_anisotropic_is_parallel_plus_p_perpendicular():
    c = AdversarialCriterion()
    torch.manual_seed(0)
    d_par, d_perp = torch.randn(4, 1, 8, 8), torch.randn(2, 1, 1, 8)
    for real in (True, False):
        expected = c(d_par, real) + 0.3 * c(d_perp, real)
        got = anisotropic_adversarial_loss(c, d_par, d_perp, real, p=0.3)
        assert got.item() == pytest.approx(expected.item())
    alpha = torch.tensor([1.0, 1.2, 1.4, 1.67])
    got = anisotropic_adversarial_loss(c, d_par, d_perp, True, p=2.0, weight=alpha)
    assert got.item() == pytest.approx((c(d_par, True, alpha) + 2.0 * c(d_perp, True)).item())


def test_weighted_cycle_loss_known_numbers():
    x = torch.zeros(2, 1, 3, 2, 2)
    x_rec = torch.zeros_like(x)
    x_rec[0, :, 0] = 1.0  # |diff| mean 1 on (b=0, z=0)
    x_rec[1, :, 2] = -2.0  # |diff| mean 2 on (b=1, z=2)
    weight = torch.tensor([[3.0, 1.0, 1.0], [1.0, 1.0, 0.5]])
    # mean over the 6 (b, z) of weight * per-slice L1: (3*1 + 0.5*2) / 6
    assert weighted_cycle_loss(x, x_rec, weight).item() == pytest.approx(4 / 6)
    # all weights 1: the plain L1 loss
    ones = torch.ones(2, 3)
    assert weighted_cycle_loss(x, x_rec, ones).item() == pytest.approx((x - x_rec).abs().mean().item())
    # a (Z,) weight broadcasts over the batch
    z_weight = torch.tensor([2.0, 1.0, 1.0])
    assert weighted_cycle_loss(x, x_rec, z_weight).item() == pytest.approx((2 * 1 + 1 * 2) / 6)


def test_weighted_cycle_loss_gradients_and_shape_checks():
    x = torch.randn(1, 1, 4, 3, 3)
    x_rec = torch.randn(1, 1, 4, 3, 3, requires_grad=True)
    weighted_cycle_loss(x, x_rec, torch.ones(1, 4)).backward()
    assert x_rec.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        weighted_cycle_loss(x, x_rec, torch.ones(1, 5))
    with pytest.raises(ValueError):
        weighted_cycle_loss(x, x_rec[:, :, :2], torch.ones(1, 4))


def test_weighted_identity_loss_same_form():
    torch.manual_seed(0)
    x, y = torch.randn(2, 1, 5, 4, 4), torch.randn(2, 1, 5, 4, 4)
    w = torch.rand(2, 5)
    assert weighted_identity_loss(x, y, w).item() == pytest.approx(weighted_cycle_loss(x, y, w).item())


def test_lowpass_fidelity_ignores_fine_detail_but_not_moved_structure():
    from scripts.zsegan.losses import lowpass, lowpass_fidelity_loss

    torch.manual_seed(0)
    x = torch.zeros(1, 1, 3, 48, 48)
    x[..., 20:28, 20:28] = 1.0  # a "cell"
    checker = (torch.arange(48)[:, None] + torch.arange(48)[None, :]) % 2 * 2 - 1
    fine = x + 0.3 * checker  # added fine texture
    moved = torch.roll(x, shifts=10, dims=-1)
    w = torch.ones(())
    assert lowpass(x, 3.0).shape == x.shape
    assert lowpass(torch.full_like(x, 0.4), 3.0).allclose(torch.full_like(x, 0.4))
    assert lowpass_fidelity_loss(x, x, 3.0, w) == 0
    assert lowpass_fidelity_loss(x, fine, 3.0, w) < 0.2 * lowpass_fidelity_loss(x, moved, 3.0, w)


def test_line_spectrum_shapes_and_frequency():
    from scripts.zsegan.losses import line_spectrum

    volume = torch.zeros(2, 1, 9, 16, 16)
    stripes = torch.cos(2 * torch.pi * torch.arange(16) * 3 / 9)  # 3 cycles per 9-sample segment, along x
    volume[..., :] = stripes
    along_x, along_y, along_z = line_spectrum(volume, 4, 9), line_spectrum(volume, 3, 9), line_spectrum(volume, 2, 9)
    assert along_x.shape == along_y.shape == (2, 9, 4) and along_z.shape == (2, 4)
    assert along_x[0, 0].argmax() == 2  # frequencies 1..4 cycles per segment: the stripes' 3 is index 2
    assert along_y.abs().max() < 1e-6 and along_z.abs().max() < 1e-6  # constant along y and z
    with pytest.raises(ValueError, match="segments of 20"):
        line_spectrum(volume, 2, 20)


def test_spectral_loss_asks_for_the_focal_planes_detail_in_every_section():
    from scripts.zsegan.losses import lowpass, spectral_loss

    torch.manual_seed(0)
    sharp = torch.randn(1, 1, 9, 32, 32)  # every section, xy and vertical, as detailed as any other
    focus = torch.tensor([4])
    stack = lowpass(sharp, 2.0)
    stack[:, :, 4] = sharp[:, :, 4]  # a stack sharp at its focal plane only
    copied = sharp[:, :, 4:5].expand_as(sharp)  # the focal plane copied: sharp xy, flat vertical sections
    assert spectral_loss(stack, sharp, focus) < 0.2
    assert spectral_loss(stack, stack, focus) > 5 * spectral_loss(stack, sharp, focus)
    assert spectral_loss(stack, copied, focus) > 5 * spectral_loss(stack, sharp, focus)
    y = stack.clone().requires_grad_(True)
    spectral_loss(stack, y, focus).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_correction_tv_costs_ripples_by_amplitude_and_frequency_not_an_offset():
    x = torch.rand(1, 1, 3, 32, 32)
    assert correction_tv_loss(x, x + 0.3) < 1e-6  # a constant correction has no variation (but float rounding)
    columns = torch.arange(32.0)
    slow = 0.1 * torch.sin(2 * math.pi * columns / 16).expand(1, 1, 3, 32, 32)
    fast = 0.1 * torch.sin(2 * math.pi * columns / 4).expand(1, 1, 3, 32, 32)
    assert correction_tv_loss(x, x + fast) > 2.5 * correction_tv_loss(x, x + slow) > 0
    assert correction_tv_loss(x, x + 2 * fast) == pytest.approx(2 * correction_tv_loss(x, x + fast).item())
    with pytest.raises(ValueError, match="one shape"):
        correction_tv_loss(x, x[:, :, :2])


def test_focal_detail_prior_is_met_by_the_focal_plane_everywhere_not_by_the_blur_or_ripples():
    from scripts.nets.optical import gaussian_blur_planes

    torch.manual_seed(0)
    focal = torch.rand(1, 1, 1, 32, 32)
    depth, focus = 7, torch.tensor([3])
    sigma = 0.5 * (torch.arange(depth, dtype=torch.float32) - 3).abs()[None] + 1e-3  # (1, Z), ~0 at focus
    x = gaussian_blur_planes(focal.expand(1, 1, depth, 32, 32), sigma)  # the focal plane defocused
    assert focal_detail_loss(x, focal.expand_as(x), focus, sigma) < 1e-3  # the detail put back is f's own
    blurred = focal_detail_loss(x, x, focus, sigma)
    columns = torch.arange(32.0)
    ripples = x + 0.2 * torch.sin(2 * math.pi * columns / 3).expand_as(x)
    assert focal_detail_loss(x, ripples, focus, sigma) > blurred > 0.01
    y = x.clone().requires_grad_(True)
    focal_detail_loss(x, y, focus, sigma).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="one shape"):
        focal_detail_loss(x, x[:, :, :2], focus, sigma)
