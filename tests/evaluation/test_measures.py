"""Evaluation measures: known answers, vertical-section sizes, and PIQE against an independent implementation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scripts.evaluation.measures import (
    GRADIENT_EDGES,
    detail_support,
    fm,
    gradient_histogram,
    gradient_magnitude,
    hellinger,
    mean_abs_gradient,
    mutual_information,
    piqe,
    piqe_many,
    piqe_maps,
    psnr,
    spectral_error,
    ssim,
)


def _texture(shape=(128, 128), sigma=1.0, seed=0) -> np.ndarray:
    """Smoothed noise stretched to exactly [0, 1] (min 0, max 1)."""
    x = gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return (x - x.min()) / (x.max() - x.min())


def _entropy_bits(img: np.ndarray, bins: int = 64) -> float:
    counts = np.histogram(img, bins=bins, range=(0.0, 1.0))[0]
    p = counts[counts > 0] / img.size
    return float(-(p * np.log2(p)).sum())


# ---- reference measures ----------------------------------------------------------------------------------------


def test_identical_images():
    img = _texture()
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert psnr(img, img) == np.inf
    assert hellinger(img, img) == 0.0
    assert mutual_information(img, img) == pytest.approx(_entropy_bits(img), abs=1e-9)
    assert _entropy_bits(img) > 4  # a real test: the histogram is spread over many bins


def test_psnr_of_a_uniform_offset():
    img = 0.9 * _texture()
    assert psnr(img, img + 0.1) == pytest.approx(20.0)  # MSE 0.01, peak 1


def test_ssim_falls_with_blur_and_is_low_for_unrelated_images():
    img = _texture()
    blurred = ssim(img, gaussian_filter(img, 2.0))
    assert 0.2 < blurred < 0.99
    assert ssim(img, _texture(seed=1)) < 0.2 < blurred


def test_mutual_information_of_two_level_images():
    rows = np.zeros((32, 32))
    rows[16:] = 1.0  # top half 0, bottom half 1
    cols = rows.T.copy()  # left half 0, right half 1: each of the 4 combinations on a quarter of the pixels
    assert mutual_information(rows, rows) == pytest.approx(1.0)
    assert mutual_information(rows, cols) == pytest.approx(0.0, abs=1e-12)


def test_hellinger_known_values_and_shapes():
    zeros, ones = np.zeros((16, 16)), np.ones((16, 16))
    assert hellinger(zeros, ones) == pytest.approx(1.0)  # disjoint histograms
    half = np.concatenate([zeros, ones])  # p = (1, 0), q = (1/2, 1/2) -> sqrt(1 - sqrt(1/2))
    assert hellinger(zeros, half) == pytest.approx(np.sqrt(1 - np.sqrt(0.5)))
    stack = np.stack([_texture(seed=s) for s in range(3)])  # whole stacks against one slice: any shapes
    assert 0 < hellinger(stack, stack[0]) < hellinger(stack, ones) <= 1


def test_mutual_information_takes_whole_stacks():
    stack = np.stack([_texture(seed=s) for s in range(3)])
    assert mutual_information(stack, stack) == pytest.approx(_entropy_bits(stack), abs=1e-9)
    with pytest.raises(ValueError, match="differ in shape"):
        mutual_information(stack, stack[0])


# ---- sharpness -------------------------------------------------------------------------------------------------


def test_gradient_of_a_ramp():
    ramp = np.tile(0.015 * np.arange(40), (20, 1))  # 0.015 per pixel along x
    assert np.allclose(gradient_magnitude(ramp), 0.015)
    assert mean_abs_gradient(ramp) == pytest.approx(0.015)
    counts = gradient_histogram(ramp)
    assert counts[1] == ramp.size and counts.sum() == ramp.size  # all in [0.01, 0.02)


def test_gradient_histogram_edges_are_fixed():
    assert np.array_equal(GRADIENT_EDGES, np.linspace(0.0, 1.0, 101))
    checker = (np.indices((4, 4)).sum(axis=0) % 2).astype(float)
    # central differences cancel inside; one-sided differences at the borders give 1 (sides), sqrt 2 (corners)
    expected = np.full((4, 4), 1.0)
    expected[1:3, 1:3] = 0.0
    expected[[0, 0, 3, 3], [0, 3, 0, 3]] = np.sqrt(2)
    assert np.allclose(gradient_magnitude(checker), expected)
    counts = gradient_histogram(checker)
    assert len(counts) == 100 and counts[0] == 4 and counts[-1] == 12  # above the last edge: clipped into it
    assert np.array_equal(gradient_histogram(checker, bins=4), [4, 0, 0, 12])


def test_blurred_copy_is_less_sharp_and_worse_quality():
    img = _texture()
    blurred = gaussian_filter(img, 2.0)
    assert mean_abs_gradient(blurred) < 0.5 * mean_abs_gradient(img)
    assert fm(blurred) < 0.5 * fm(img)
    assert piqe(blurred) > piqe(img) + 20  # higher PIQE = worse
    sharp_counts, blurred_counts = gradient_histogram(img), gradient_histogram(blurred)
    assert blurred_counts[:5].sum() > sharp_counts[:5].sum()  # more gradients below 0.05 ...
    assert blurred_counts[10:].sum() < sharp_counts[10:].sum()  # ... and fewer above 0.1


def test_spectral_error_counts_smoothing_and_over_sharpening_where_a_gradient_counts_noise():
    """Issue 18's "sharper": 0 for the target itself, 1 for twice its power at every scale, above 0 for a blurred
    and for an over-sharpened copy; a noisy blurred copy has the target's gradient but not its spectrum."""
    rng = np.random.default_rng(3)
    target = 0.5 + 0.2 * (_texture() - 0.5)
    assert spectral_error(target, target) == 0
    assert spectral_error(0.5 + np.sqrt(2) * (target - 0.5), target) == pytest.approx(1, abs=1e-6)
    blurred = gaussian_filter(target, 1.5)
    sharpened = np.clip(target + 1.5 * (target - gaussian_filter(target, 1.0)), 0, 1)
    assert spectral_error(blurred, target) > 0.5 and spectral_error(sharpened, target) > 0.5
    noises = (np.clip(blurred + rng.normal(0, s, target.shape), 0, 1) for s in np.arange(0.005, 0.2, 0.005))
    noisy = next(n for n in noises if mean_abs_gradient(n) >= mean_abs_gradient(target))  # the target's gradient
    assert spectral_error(noisy, target) > 0.5


def test_fm_counts_frequencies_above_max_over_threshold():
    img = np.full((8, 8), 0.5)
    assert fm(img) == 1 / 64  # only the DC term
    assert fm(np.zeros((8, 8))) == 0.0
    cosine = 0.5 + 0.25 * np.cos(2 * np.pi * np.arange(8) / 4)  # DC 0.5*64 and two peaks of 0.125*64 each
    img = np.tile(cosine, (8, 1))
    assert fm(img) == 3 / 64
    assert fm(img, threshold=3.0) == 1 / 64  # 8 < 32 / 3: the two peaks no longer count


def test_constant_images():
    for value in (0.0, 0.5, 1.0):
        img = np.full((128, 29), value)
        assert np.array_equal(gradient_magnitude(img), np.zeros_like(img))
        assert mean_abs_gradient(img) == 0.0
        assert gradient_histogram(img)[0] == img.size
        assert piqe(img) == 100.0  # no active block: (0 + C) / (C + 0) * 100, as MATLAB documents for uniform images
    assert fm(np.full((128, 29), 0.5)) == 1 / (128 * 29)


@pytest.mark.parametrize("shape", [(128, 29), (29, 128), (29, 16)])
def test_vertical_section_sizes(shape):
    a, b = _texture(shape), _texture(shape, seed=1)
    assert 0 < ssim(a, gaussian_filter(a, 1.0)) < 1
    assert np.isfinite(psnr(a, b))
    assert mutual_information(a, b) > 0 and 0 < hellinger(a, b) < 1
    assert gradient_magnitude(a).shape == shape and mean_abs_gradient(a) > 0
    assert gradient_histogram(a).sum() == a.size
    assert 0 < fm(a) <= 1
    score, *masks = piqe_maps(a)
    assert 0 <= score <= 100 and score == piqe(a)
    assert all(mask.shape == shape and mask.dtype == bool for mask in masks)


def test_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11 px"):
        ssim(np.zeros((10, 29)), np.zeros((10, 29)))


def test_whole_stacks():
    stack = np.stack([_texture((32, 32), seed=s) for s in range(12)])
    assert ssim(stack, stack) == pytest.approx(1.0, abs=1e-12)
    assert ssim(stack, gaussian_filter(stack, 1.0)) < 1
    assert psnr(stack, 0.5 * stack) == pytest.approx(-10 * np.log10(np.mean((0.5 * stack) ** 2)))


@pytest.mark.parametrize(
    "img, problem",
    [
        (np.full((16, 16), 1.5), "in \\[0, 1\\]"),
        (np.full((16, 16), -0.1), "in \\[0, 1\\]"),
        (np.full((16, 16), np.nan), "in \\[0, 1\\]"),
        (np.zeros((2, 16, 16)), "2D image"),
        (np.zeros((16, 16), dtype=np.int16), "unsigned"),
    ],
)
def test_bad_images_are_refused(img, problem):
    with pytest.raises(ValueError, match=problem):
        fm(img)


# ---- PIQE ------------------------------------------------------------------------------------------------------


def test_piqe_uses_matlab_intensity_levels():
    """MATLAB scores round(255 * im2double(I)): a float image and its uint8 version score the same."""
    img = gaussian_filter(np.random.default_rng(3).random((64, 48)), 1.0)  # not stretched: max < 1
    as_uint8 = np.floor(255 * img + 0.5).astype(np.uint8)
    assert piqe(img) == piqe(as_uint8) == piqe(as_uint8 / 255.0)


def test_piqe_many_matches_piqe():
    sections = np.stack([_texture((29, 128), seed=s) for s in range(10)]).reshape(2, 5, 29, 128)
    scores = piqe_many(sections)
    assert scores.shape == (2, 5)
    assert np.array_equal(scores, [[piqe(s) for s in row] for row in sections])


def _pypiqe(img: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """pypiqe's score and masks in our order (it returns score, artifact, noise, activity)."""
    reference = pytest.importorskip("pypiqe")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its 0/0 check warns
        score, artifact, noise, active = reference.piqe(img)
    return score, active, artifact, noise


def _images_multiple_of_16():
    rng = np.random.default_rng(7)
    blocky = np.kron(rng.random((8, 8)), np.ones((8, 8)))  # piecewise constant: noticeable artifacts
    noisy = np.clip(_texture((64, 64), sigma=3.0) * 0.7 + 0.3 * rng.random((64, 64)), 0, 1)
    uniform = rng.random((32, 32))
    return {
        "texture 128x128": _texture(),
        "blurred 64x48": _texture((64, 48), sigma=3.0),
        "blocky 64x64": blocky / blocky.max(),
        "noisy 64x64": noisy / noisy.max(),
        "uniform noise 32x32": uniform / uniform.max(),
    }


@pytest.mark.parametrize("name", list(_images_multiple_of_16()))
def test_piqe_agrees_with_pypiqe(name):
    """pypiqe (an independent port of MATLAB's piqe) scales by the image's maximum instead of im2double, and
    pads symmetrically; on images with maximum 1 whose sides are multiples of 16 it follows MATLAB exactly."""
    img = _images_multiple_of_16()[name]
    assert img.max() == 1.0 and img.shape[0] % 16 == 0 == img.shape[1] % 16
    score, *masks = piqe_maps(img)
    expected, *expected_masks = _pypiqe(img)
    assert score == pytest.approx(expected, abs=1e-9)
    for mask, expected_mask in zip(masks, expected_masks, strict=False):
        assert np.array_equal(mask, expected_mask)
    assert any(mask.any() for mask in masks)  # some block is active, so the comparison means something


@pytest.mark.parametrize("shape", [(128, 29), (29, 128), (50, 37)])
def test_piqe_pads_like_matlab(shape):
    """MATLAB pads with padarray(I, pad, 'replicate', 'post') before anything else and scores every block of
    the padded image; pypiqe pads 'symmetric'. Given the image padded MATLAB's way, pypiqe pads nothing and
    must give our score; with its own padding it differs, so the padding does matter for these images."""
    img = _texture(shape, seed=2)
    padded = np.pad(img, ((0, -shape[0] % 16), (0, -shape[1] % 16)), mode="edge")
    score, *masks = piqe_maps(img)
    expected, *expected_masks = _pypiqe(padded)
    assert score == pytest.approx(expected, abs=1e-9)
    for mask, expected_mask in zip(masks, expected_masks, strict=False):
        assert np.array_equal(mask, expected_mask[: shape[0], : shape[1]])
    assert abs(score - _pypiqe(img)[0]) > 0.1


def test_detail_support_is_one_for_the_input_and_falls_with_invented_texture():
    focal = _texture(sigma=1.0)
    x = np.stack([gaussian_filter(focal, 0.3 * abs(z - 6)) for z in range(13)])  # a thin specimen's z-scan
    assert detail_support(x, x) == pytest.approx(np.ones(13))
    borrowed = np.repeat(focal[None], 13, axis=0)  # every plane sharpened to the focal one: nothing invented
    assert detail_support(borrowed, x) == pytest.approx(np.ones(13))
    ripples = 0.5 * (1 + np.sin(np.arange(128) / 1.2))[None, None, :]  # a texture no input plane holds
    invented = 0.8 * x + 0.2 * ripples
    support = detail_support(invented, x)
    assert support[0] < 0.5 < support[6] < 1  # the far plane's faint detail is swamped, the focal one less
    assert detail_support(np.full((2, 128, 128), 0.5), x) == pytest.approx([0, 0])  # no detail: 0
    with pytest.raises(ValueError, match="planes of one size"):
        detail_support(x[:, :64], x)
