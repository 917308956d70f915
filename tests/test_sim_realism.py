"""The measures of tools/sim_realism.py (simulated vs real z-stacks) on tiny synthetic inputs of known answer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import sim_realism  # noqa: E402


@pytest.mark.parametrize("cycles, diagonal", [(5, False), (11, False), (21, False), (5, True), (9, True), (16, True)])
def test_radial_power_puts_a_sinusoid_in_its_frequency_bin(cycles, diagonal):
    """``cycles`` periods over 64 px along x (or along both axes: sqrt(2) times the frequency), chosen
    to fall near the middle of a bin of 1/32 cycles per pixel."""
    n = 64
    yy, xx = np.mgrid[0:n, 0:n]
    image = 100 + 10 * np.sin(2 * np.pi * cycles * (xx + yy * diagonal) / n)
    rho = cycles / n * (np.sqrt(2) if diagonal else 1.0)
    spectrum = sim_realism.radial_power(image, n_bins=16)
    assert spectrum.argmax() == int(rho / 0.5 * 16), spectrum.round(2)


def test_radial_power_of_white_noise_is_flat_and_scales_with_contrast():
    rng = np.random.default_rng(0)
    low = sim_realism.radial_power(100 + rng.normal(0, 1, (128, 128)))
    high = sim_realism.radial_power(100 + rng.normal(0, 3, (128, 128)))
    assert low[2:].max() / low[2:].min() < 2.0  # flat within the scatter of a single image
    assert 7 < high[2:].mean() / low[2:].mean() < 11  # power goes as the square of the contrast
    # a blurred image loses its high band relative to the mid band
    blurred = sim_realism.radial_power(ndimage.gaussian_filter(100 + rng.normal(0, 3, (128, 128)), 1.5))
    ratio = sim_realism.band_power(blurred, sim_realism.BANDS["high"]) / sim_realism.band_power(
        blurred, sim_realism.BANDS["mid"]
    )
    assert ratio < 0.1 * sim_realism.band_power(high, sim_realism.BANDS["high"]) / sim_realism.band_power(
        high, sim_realism.BANDS["mid"]
    )


def test_noise_sigma_recovers_the_noise_on_a_smooth_image():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:128, 0:128]
    smooth = 120 + 40 * np.sin(xx / 20.0) * np.cos(yy / 25.0) + 0.3 * xx
    for sigma in (1.0, 2.5, 6.0):
        estimate = sim_realism.noise_sigma(smooth + rng.normal(0, sigma, smooth.shape))
        assert abs(estimate - sigma) < 0.1 * sigma, (sigma, estimate)
    assert sim_realism.noise_sigma(smooth) < 0.1


def test_cells_counts_dark_discs_and_their_area():
    image = np.full((100, 100), 200.0)
    yy, xx = np.mgrid[0:100, 0:100]
    centres = [(20, 20), (20, 70), (70, 30), (60, 75), (85, 85)]
    for cy, cx in centres:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 30.0  # radius 6: about 113 px
    image[50, 50] = 30.0  # a dark speck, smaller than a cell
    count, area, fraction = sim_realism.cells(image)
    assert count == len(centres)
    assert 90 < area < 140
    assert abs(fraction - len(centres) * area / image.size) < 0.02


def synthetic_stack(rng: np.random.Generator, focus: int, depth: int = 13, size: int = 32, noise: float = 2.0):
    """A specimen of dark blobs on a bright background, blurred by sigma 0.5 |z - focus| px, with noise."""
    specimen = ndimage.gaussian_filter(rng.random((size, size)), 1.0)
    specimen = 200 - 150 * (specimen > np.percentile(specimen, 80))
    planes = [ndimage.gaussian_filter(specimen, 0.3 + 0.5 * abs(z - focus), mode="wrap") for z in range(depth)]
    return np.stack(planes) + rng.normal(0, noise, (depth, size, size))


def test_stack_measures_find_the_focus_and_the_loss_of_contrast():
    rng = np.random.default_rng(2)
    edge = sim_realism.EDGE
    m = sim_realism.stack_measures(synthetic_stack(rng, focus=edge + 1, depth=2 * edge + 3))
    s = m["scalars"]
    assert s["focal plane (0-based)"] == edge + 1
    assert m["curves"]["focus"][sim_realism.DEPTHS] == 1.0
    # blur keeps the light (mean) and loses contrast away from focus
    assert abs(s[f"mean {edge} planes away / focal"] - 1.0) < 0.02
    assert s[f"contrast {edge} planes away / focal"] < 0.8
    assert s[f"focus curve {edge} planes away"] < 0.2
    assert 1.5 < s["noise sigma (DN), farthest slice"] < 2.5
    # depths the stack does not have are NaN in the curves, and the table reads the side it has
    m = sim_realism.stack_measures(synthetic_stack(rng, focus=2, depth=edge + 3))
    assert np.isnan(m["curves"]["mean"][0]) and np.isfinite(m["curves"]["mean"][sim_realism.DEPTHS + edge])
    assert np.isfinite(m["scalars"][f"contrast {edge} planes away / focal"])


def two_kinds(rng, n, noise):
    return [synthetic_stack(rng, focus=int(rng.integers(3, 10)), noise=noise).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("kind", ["features", pytest.param("cnn", marks=pytest.mark.slow)])
def test_classifier_is_at_chance_on_one_distribution_and_near_perfect_on_two(kind):
    rng = np.random.default_rng(3)
    a, b = two_kinds(rng, 8, 2.0), two_kinds(rng, 8, 2.0)
    same, _ = sim_realism.classify(a, b, kind, seed=0, steps=100)
    assert 0.25 <= same <= 0.75, same
    different, training = sim_realism.classify(a, two_kinds(rng, 8, 20.0), kind, seed=0, steps=100)
    assert different >= 0.9 and training >= 0.9, (different, training)


def test_classifier_needs_stacks_of_both_kinds():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="at least 2"):
        sim_realism.classify(two_kinds(rng, 1, 2.0), two_kinds(rng, 3, 2.0), "features")


def test_table_marks_what_lies_outside_the_real_spread():
    real = {"m": np.linspace(10, 20, 21)}
    text = sim_realism.table(
        real,
        {"a": {"m": np.array([15.0])}, "b": {"m": np.array([30.0])}},
        {"a": {"LR": (0.5, 0.55), "CNN": (0.6, 0.7)}, "b": {"LR": (1.0, 1.0), "CNN": (0.99, 1.0)}},
    )
    row = next(line for line in text.splitlines() if line.startswith("| m |"))
    assert row == "| m | 15 [10.5-19.5] | 15 | 30 * |"
    assert (
        "| real-vs-simulated accuracy, LR (50% = indistinguishable) | - | 50% (train 55%) | 100% (train 100%) |" in text
    )
    assert (
        "| real-vs-simulated accuracy, CNN (50% = indistinguishable) | - | 60% (train 70%) | 99% (train 100%) |" in text
    )


def test_by_depth_keeps_the_slices_near_or_far_from_each_stack_s_focus():
    rng = np.random.default_rng(6)
    stacks = [synthetic_stack(rng, focus=f, depth=13) for f in (3, 9)]
    near = sim_realism.by_depth(stacks, 0, 2)
    assert [len(s) for s in near] == [5, 5]
    np.testing.assert_array_equal(near[0], stacks[0][1:6])
    far = sim_realism.by_depth(stacks, 8, None)
    np.testing.assert_array_equal(far[0], stacks[0][11:])
    np.testing.assert_array_equal(far[1], stacks[1][:2])


@pytest.mark.slow
def test_the_tool_writes_its_table_and_figures(tmp_path, capsys):
    rng = np.random.default_rng(5)
    for name, noise in (("real", 2.0), ("sim", 8.0)):
        (tmp_path / name).mkdir()
        for i, stack in enumerate(two_kinds(rng, 4, noise)):
            np.savez(tmp_path / name / f"{i}.npz", arr_0=stack.transpose(1, 2, 0).astype(np.uint8))  # YXZ
    out = tmp_path / "out"
    sim_realism.main(
        ["--real", str(tmp_path / "real"), "--sim", f"noisy={tmp_path / 'sim'}", "--out", str(out), "--cnn_steps", "5"]
    )
    table = (out / "table.md").read_text()
    assert "| measure | real: median [5th-95th pct] | noisy |" in table
    assert table in capsys.readouterr().out
    pngs = ["intensity_per_depth", "histograms", "spectra", "focus_curves", "examples"]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(pngs)
    with pytest.raises(SystemExit):
        sim_realism.main(["--real", str(tmp_path / "real"), "--sim", "no-equals-sign", "--out", str(out)])
