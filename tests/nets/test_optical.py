"""The optical G_B: a learnable defocus blur relative to each stack's focal plane."""

from __future__ import annotations

import math

import pytest
import torch
from scripts.nets.optical import OpticalBlur, blur_per_plane


def test_blur_per_plane_is_half_the_geometric_disc_radius():
    assert blur_per_plane(0.5, 1.0, 1.0, 1.0) == pytest.approx(math.tan(math.asin(0.5)) / 2)
    assert blur_per_plane(0.5, 1.0, 2.0, 1.0) == pytest.approx(2 * blur_per_plane())
    with pytest.raises(ValueError, match="na"):
        blur_per_plane(1.2, 1.0)


def test_sigmas_grow_with_the_distance_from_each_stacks_focus():
    g = OpticalBlur(blur_per_plane=0.5, core_sigma=0.1)
    s = g.sigmas(9, torch.tensor([2.0, 6.0])).detach()
    assert s.shape == (2, 9)
    assert s[0].argmin() == 2 and s[1].argmin() == 6
    assert s[0, 2] == pytest.approx(0.1) and s[0, 8] == pytest.approx(math.hypot(0.1, 3.0), rel=1e-5)


def test_focal_plane_is_kept_and_planes_away_from_it_are_blurred():
    torch.manual_seed(0)
    g = OpticalBlur(blur_per_plane=1.0, core_sigma=1e-3)
    y = torch.rand(2, 1, 9, 32, 32) * 1.8 - 0.9
    x = g(y, torch.tensor([4.0, 1.0]))
    assert x.shape == y.shape
    assert torch.allclose(x[0, 0, 4], y[0, 0, 4], atol=1e-4) and torch.allclose(x[1, 0, 1], y[1, 0, 1], atol=1e-4)
    # blur lowers the variance of a noise image, more so further from focus
    spread = [float(x[0, 0, k].std()) for k in (4, 5, 8)]
    assert spread[0] > spread[1] > spread[2]
    # a constant plane stays constant (the PSF conserves energy, in absorbance)
    flat = torch.full((1, 1, 9, 16, 16), 0.3)
    assert torch.allclose(g(flat, torch.tensor([4.0])), flat, atol=1e-5)


def test_parameters_learn_from_a_loss_or_stay_fixed():
    y = torch.rand(1, 1, 5, 16, 16) * 2 - 1
    g = OpticalBlur()
    g(y, torch.tensor([2.0])).square().mean().backward()
    assert g.log_k.grad is not None and g.log_k.grad.abs().sum() > 0 and g.log_core.grad is not None
    fixed = OpticalBlur(learnable=False)
    assert not any(p.requires_grad for p in fixed.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match="blur_per_plane"):
        OpticalBlur(blur_per_plane=0)
    with pytest.raises(ValueError, match="floor"):
        OpticalBlur(floor=1.0)
    with pytest.raises(ValueError, match="one plane per stack"):
        OpticalBlur()(torch.zeros(2, 1, 5, 8, 8), torch.zeros(3))


def test_gaussian_blur_planes_blurs_each_plane_by_its_own_sigma_and_keeps_the_mean():
    from scipy import ndimage
    from scripts.nets.optical import gaussian_blur_planes

    torch.manual_seed(0)
    volume = torch.rand(2, 1, 3, 40, 40)
    sigma = torch.tensor([[0.01, 1.0, 2.5], [2.0, 0.01, 1.5]])
    out = gaussian_blur_planes(volume, sigma)
    assert out.shape == volume.shape
    assert torch.allclose(out[0, 0, 0], volume[0, 0, 0], atol=1e-3)  # sigma ~0: unchanged (FFT rounding)
    for b, z in ((0, 1), (0, 2), (1, 0), (1, 2)):
        expected = ndimage.gaussian_filter(volume[b, 0, z].double().numpy(), float(sigma[b, z]), mode="mirror")
        inner = slice(8, -8)  # away from the borders, whose padding differs
        assert torch.allclose(out[b, 0, z, inner, inner].double(), torch.from_numpy(expected)[inner, inner], atol=2e-3)
    assert torch.allclose(out.mean(dim=(-2, -1)), volume.mean(dim=(-2, -1)), atol=0.02)
    with pytest.raises(ValueError, match="one value per plane"):
        gaussian_blur_planes(volume, sigma[:, :2])


def test_intensity_domain_keeps_each_planes_mean_where_absorbance_darkens():
    torch.manual_seed(0)
    y = torch.rand(1, 1, 9, 32, 32) * 2 - 1
    focus = torch.tensor([4.0])
    kept = (OpticalBlur(blur_per_plane=0.5, domain="intensity")(y, focus) - y).mean(dim=(-2, -1))[0, 0]
    assert kept.abs().max() < 0.01  # light is kept at every depth
    darker = (OpticalBlur(blur_per_plane=0.5)(y, focus) - y).mean(dim=(-2, -1))[0, 0]
    assert (darker < -0.05).all() and darker[0] < darker[4] - 0.05  # more blur, less light (Jensen)
    with pytest.raises(ValueError, match="domain"):
        OpticalBlur(domain="phase")
