"""Non-learned baselines: identity, sharpest slice, extended depth of field, Richardson-Lucy."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from scripts.evaluation.baselines import (
    defocus_psf,
    edf,
    focal_detail,
    focal_transfer,
    identity,
    richardson_lucy,
    sharpest_slice,
)
from scripts.simulate.optics import defocus_otf
from scripts.simulate.zstacks import SPECIMEN_V1, simulate_stack
from scripts.zsegan.focus import focus_measure
from skimage.restoration import richardson_lucy as skimage_richardson_lucy

BASELINES = {
    "identity": identity,
    "sharpest_slice": sharpest_slice,
    "edf": edf,
    "richardson_lucy": lambda stack: richardson_lucy(stack, defocus_psf(len(stack), (17, 17))),
}


def texture(shape, seed=0) -> np.ndarray:
    """A random grain (float32, ~0-1): enough detail at every scale for a focus measure."""
    return ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 0.7).astype(np.float32)


def defocused(image: np.ndarray, depth: int, focus: int) -> np.ndarray:
    """(depth, Y, X) stack of ``image``, sharp at plane ``focus``, Gaussian-blurred by 0.8 px per plane away."""
    return np.stack([ndimage.gaussian_filter(image, 0.8 * abs(z - focus)) for z in range(depth)])


def absorbance(stack, background) -> np.ndarray:
    return -np.log(np.clip(np.asarray(stack, np.float64) / background, 1e-3, 1.0))


def correlation(a, b) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("shape", [(3, 9, 11), (29, 128, 128)])
def test_baselines_keep_shape_units_and_dtype(name, shape):
    stack = (60 + 150 * texture(shape)).astype(np.uint8)
    out = BASELINES[name](stack.astype(np.float32))
    assert out.shape == shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    # the input's units, no normalisation: never brighter than the input, about as bright on average
    assert 0 <= out.min() and out.max() <= stack.max() + 1e-3
    assert abs(out.mean() - stack.mean()) < 0.2 * stack.mean()


def test_identity_is_a_copy():
    stack = texture((4, 8, 8))
    out = identity(stack)
    np.testing.assert_array_equal(out, stack)
    out[0, 0, 0] = -1
    assert stack[0, 0, 0] != -1


def test_baselines_reject_non_stacks():
    for baseline in (identity, sharpest_slice, edf):
        with pytest.raises(ValueError, match="ZYX"):
            baseline(np.ones((8, 8)))


def test_sharpest_slice_copies_the_sharp_plane_to_every_depth():
    stack = 100 + 100 * defocused(texture((48, 48)), depth=7, focus=4)
    out = sharpest_slice(stack)
    for z in range(7):
        np.testing.assert_array_equal(out[z], stack[4])


def test_edf_takes_each_region_from_its_sharp_plane():
    truth = texture((96, 96), seed=1)
    left = defocused(truth, depth=7, focus=1)
    right = defocused(truth, depth=7, focus=5)
    stack = 100 + 100 * np.concatenate([left[:, :, :48], right[:, :, 48:]], axis=2)
    out = edf(stack)
    assert np.all(out == out[0])  # the composite at every depth
    sharp = 100 + 100 * truth
    # away from the seam (x = 48), each half comes from its own sharp plane exactly
    np.testing.assert_allclose(out[0][:, :30], sharp[:, :30], atol=1e-3)
    np.testing.assert_allclose(out[0][:, 66:], sharp[:, 66:], atol=1e-3)
    # and across the whole image it is far closer to the truth than any single plane
    error = np.abs(out[0] - sharp).mean()
    assert error < 0.3 * min(np.abs(plane - sharp).mean() for plane in stack)


def test_defocus_psf_is_normalised_symmetric_and_widens_away_from_focus():
    depth = 9
    psf = defocus_psf(depth, (33, 33))
    assert psf.shape == (2 * depth - 1, 33, 33) and psf.dtype == np.float32
    assert psf.min() >= 0 and psf.sum() == pytest.approx(1.0, abs=1e-5)
    # every defocus spreads the light of a layer but keeps all of it
    np.testing.assert_allclose(psf.sum(axis=(1, 2)), 1 / len(psf), rtol=1e-5)
    np.testing.assert_allclose(psf, psf[::-1], atol=1e-9)
    np.testing.assert_allclose(psf, psf[:, ::-1], atol=1e-9)
    np.testing.assert_allclose(psf, psf[:, :, ::-1], atol=1e-9)
    np.testing.assert_allclose(psf, psf.transpose(0, 2, 1), atol=1e-9)
    # the central plane is the simulator's in-focus PSF (computed here on another grid)
    in_focus = np.fft.fftshift(np.fft.ifft2(defocus_otf((64, 64), 0.0)).real)[32 - 16 : 32 + 17, 32 - 16 : 32 + 17]
    in_focus = np.clip(in_focus, 0, None)
    np.testing.assert_allclose(psf[depth - 1] * len(psf), in_focus / in_focus.sum(), atol=1e-4)
    assert psf[depth - 1, 16, 16] == psf.max()
    # the mean squared distance from the axis grows with the defocus
    yy, xx = np.mgrid[-16:17, -16:17]
    spread = (psf * (yy**2 + xx**2)).sum(axis=(1, 2)) / psf.sum(axis=(1, 2))
    assert np.all(np.diff(spread[depth - 1 :]) > 0)


def test_defocus_psf_follows_the_optics():
    """A wider aperture blurs more at the same defocus; coarser planes too."""
    yy, xx = np.mgrid[-10:11, -10:11]

    def spread(psf):
        return float((psf[0] * (yy**2 + xx**2)).sum() / psf[0].sum())

    base = spread(defocus_psf(5, (21, 21)))
    assert spread(defocus_psf(5, (21, 21), na=0.3)) < base
    assert spread(defocus_psf(5, (21, 21), plane_um=0.5)) < base
    with pytest.raises(ValueError, match="odd"):
        defocus_psf(5, (20, 21))


def test_richardson_lucy_matches_scikit_image():
    """Same iteration as skimage.restoration.richardson_lucy on the absorbance, where both boundary models
    agree (no absorbance within twice the PSF's reach of the field's edges, none beyond the stack's planes)."""
    depth, background = 5, 200.0
    a = np.zeros((depth, 24, 24), np.float32)
    a[:, 8:16, 8:16] = 0.2 + texture((depth, 8, 8), seed=2)
    stack = background * np.exp(-a)
    psf = defocus_psf(depth, (5, 5))
    ours = richardson_lucy(stack, psf, num_iter=5, background=background, accelerate=False)
    theirs = skimage_richardson_lucy(a, psf, num_iter=5, clip=False)
    np.testing.assert_allclose(absorbance(ours, background), theirs, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("accelerate", [False, True])
def test_richardson_lucy_keeps_a_constant_stack_constant(accelerate):
    psf = defocus_psf(6, (9, 9))
    blank = np.full((6, 20, 20), 200.0, np.float32)
    np.testing.assert_allclose(richardson_lucy(blank, psf, accelerate=accelerate), 200.0, rtol=1e-6)
    # a uniform absorbance carries no depth information: it stays as it is
    grey = np.full((6, 20, 20), 150.0, np.float32)
    out = richardson_lucy(grey, psf, background=200.0, accelerate=accelerate)
    np.testing.assert_allclose(out, 150.0, rtol=1e-4)


def test_richardson_lucy_sharpens_a_simulated_stack_towards_its_truth():
    # the version-1 specimen and optics (a disc PSF of fixed size): what defocus_psf models; the default
    # simulator draws a Gaussian blur of another size for each stack, as scanners differ
    stack, truth, focus = simulate_stack(np.random.default_rng(0), size=48, depth=15, **SPECIMEN_V1)
    stack = stack.astype(np.float32)
    out = richardson_lucy(stack, defocus_psf(15, (17, 17)))
    background = np.percentile(stack, 99.5)
    assert np.isfinite(out).all() and out.max() <= background * (1 + 1e-5)
    # the absorbance comes closer to the truth's (the input: 0.75, the deconvolved: 0.83; the simulator
    # images the absorbance linearly since version 2, which defocus_psf's exponential model matches less)
    before = correlation(absorbance(stack, background), absorbance(truth, background))
    after = correlation(absorbance(out, background), absorbance(truth, background))
    assert after > before + 0.05
    # and the in-focus plane is sharper (the input: 93, the deconvolved: 227)
    sharpness = focus_measure(torch.from_numpy(np.stack([stack[focus], out[focus]])))
    assert sharpness[1] > 1.5 * sharpness[0]


def test_richardson_lucy_handles_black_and_saturated_pixels():
    stack = (60 + 150 * texture((7, 32, 32), seed=3)).astype(np.float32)
    stack[3, 10:14, 10:14] = 0.0  # black (no light): the transmission floor
    stack[:, 0, :] = 255.0  # brighter than the background: clipped to it
    out = richardson_lucy(stack, defocus_psf(7, (9, 9)), background=220.0)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 220.0 * (1 + 1e-6)


def test_richardson_lucy_rejects_bad_arguments():
    stack = np.full((3, 8, 8), 100.0)
    with pytest.raises(ValueError, match="psf"):
        richardson_lucy(stack, np.ones((3, 4, 4)))
    with pytest.raises(ValueError, match="background"):
        richardson_lucy(stack, defocus_psf(3, (3, 3)), background=0.0)
    with pytest.raises(ValueError, match="num_iter"):
        richardson_lucy(stack, defocus_psf(3, (3, 3)), num_iter=0)


def test_focal_detail_restores_a_thin_specimens_planes_and_keeps_the_focal_one():
    rng = np.random.default_rng(0)
    focal = ndimage.gaussian_filter(rng.random((48, 40)), 1.0) * 100 + 50
    stack = np.stack([ndimage.gaussian_filter(focal, 0.3 * abs(z - 4), mode="nearest") for z in range(11)])
    out = focal_detail(stack, k=0.3)
    assert out.dtype == np.float32 and out.shape == stack.shape
    assert np.array_equal(out[4], stack[4].astype(np.float32))  # the focal plane as it is
    assert np.abs(out - focal).max() < 1e-3  # every plane of a thin specimen becomes the focal one
    assert np.abs(stack - focal).max() > 1  # (which the planes were not)
    thick = stack.copy()
    thick[9] += 10 * (np.arange(40) % 2)  # content of its own at plane 9 stays, with f's detail over it
    assert np.allclose(focal_detail(thick, k=0.3)[9] - out[9], thick[9] - stack[9], atol=1e-3)


def test_focal_transfer_baseline_is_the_focal_skip_generators_base():
    from scripts.nets.networks import FOCAL_DEFOCUS, focal_plane
    from scripts.nets.networks import focal_transfer as base

    stack = defocused(60 + 100 * texture((40, 36)), 9, 3) + 20 * texture((9, 40, 36), seed=1)
    out = focal_transfer(stack)
    assert out.shape == stack.shape and out.dtype == np.float32
    x = torch.from_numpy(stack.astype(np.float32))[None, None]
    assert int(focal_plane(x)) == 3
    np.testing.assert_array_equal(out, base(x, torch.tensor([3]), torch.tensor(FOCAL_DEFOCUS))[0, 0].numpy())
    np.testing.assert_array_equal(out[3], stack[3].astype(np.float32))
