"""orthogonal_views and comparison_png."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scripts.evaluation.views import comparison_png, orthogonal_views


def _stack(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32) * 100


@pytest.mark.parametrize("shape", [(5, 12, 20), (30, 12, 20), (9, 16, 16)])
def test_orthogonal_views_shape(shape):
    depth, height, width = shape
    row = orthogonal_views(_stack(shape), gap=4)
    assert row.dtype == np.uint8
    # three xy tiles (Y x X), the xz tile (Z x X) and the yz tile (Z x Y), 4 gaps
    assert row.shape == (max(height, depth), 3 * width + width + height + 4 * 4)


def test_orthogonal_views_layout_and_grey_levels():
    depth, height, width, gap = 6, 10, 8, 3
    stack = np.zeros((depth, height, width), np.float32)
    stack[2] = 100.0  # one bright plane
    row = orthogonal_views(stack, depths=[0, 2], gap=gap)
    assert row.shape == (height, 2 * width + width + height + 3 * gap)
    assert np.all(row[:, width : width + gap] == 255)  # gaps are white
    assert np.all(row[:, :width] == 0)  # plane 0: dark
    assert np.all(row[:, width + gap : 2 * width + gap] == 255)  # plane 2: bright
    xz = row[:depth, 2 * (width + gap) : 2 * (width + gap) + width]
    assert np.all(xz[2] == 255) and np.all(xz[[0, 1, 3, 4, 5]] == 0)  # z runs down the rows
    assert np.all(row[depth:, 2 * (width + gap) :] == 255)  # below the short vertical tiles: background


def test_comparison_png_is_readable_with_expected_size(tmp_path):
    a, b = _stack((5, 12, 20)), _stack((5, 12, 20), seed=1)
    truth = _stack((20, 12, 20), seed=2)
    path = tmp_path / "views" / "epoch_0001.png"
    comparison_png(path, {"input x": a, "G_S(x)": b, "truth": truth})
    rows = [orthogonal_views(s) for s in (a, b, truth)]
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.mode == "L"
        assert img.size == (max(r.shape[1] for r in rows) + 70, 14 + 12 + 12 + 20 + 3 * 4)  # header + rows + gaps
        pixels = np.asarray(img)
    np.testing.assert_array_equal(pixels[14 : 14 + 12, 70:], rows[0])  # the first row beside the label column
    assert pixels[:, :70].min() < 255  # labels are drawn
    assert [p.name for p in path.parent.iterdir()] == ["epoch_0001.png"]


def test_comparison_png_with_depths(tmp_path):
    stack = _stack((7, 16, 16))
    comparison_png(tmp_path / "v.png", {"x": stack}, depths=[1, 3])
    with Image.open(tmp_path / "v.png") as img:
        assert img.size == (70 + 2 * 16 + 16 + 16 + 3 * 4, 14 + 16 + 4)
