"""Restoration measures (fixed domain and min-max), the interpolation baselines, and defect distances."""

import numpy as np
import pytest
from scripts.evaluation.restoration import (
    baseline_table,
    defect_distances,
    gradient_hellinger,
    minmax_planes,
    restoration_scores,
)
from scripts.simulate.defects import add_defect, simulate_defect_dataset


def volume(seed: int = 0) -> np.ndarray:
    from scripts.simulate.zstacks import simulate_stack

    return simulate_stack(np.random.default_rng(seed), size=24, depth=13)[1]


def test_minmax_planes():
    v = np.stack([np.full((3, 3), 7.0), np.arange(9.0).reshape(3, 3)])
    out = minmax_planes(v)
    assert out[0].max() == 0 and out[1].min() == 0 and out[1].max() == 1
    np.testing.assert_allclose(out[1], np.arange(9.0).reshape(3, 3) / 8)


def test_restoration_scores_fixed_and_minmax():
    clean = volume()
    same = restoration_scores(clean, clean)
    assert same["psnr"] == np.inf and same["ssim"] == pytest.approx(1.0)
    darker = (clean * 0.5).astype(np.uint8)  # a rescaled output: bad on the fixed domain, fine after min-max
    scores = restoration_scores(darker, clean)
    assert scores["psnr"] < 15 and scores["psnr_minmax"] > 35 and scores["ssim_minmax"] > scores["ssim"]
    with pytest.raises(ValueError, match="ZYX volumes of one shape"):
        restoration_scores(clean[:-1], clean)


def test_baseline_table_on_test_pairs(tmp_path):
    simulate_defect_dataset(tmp_path, n_pairs=1, n_clean=1, n_test=2, size=24, depth=13, progress=False)
    rows = baseline_table(tmp_path)
    assert [(r["task"], r["method"]) for r in rows] == [
        ("denoising", "input"),
        ("axial", "input"),
        ("axial", "cubic"),
        ("super_resolution", "input"),
        ("super_resolution", "cubic"),
    ]
    assert all(r["n"] == 2 and 0 < r["ssim"] < 1 and np.isfinite(r["psnr"]) for r in rows)


def test_defect_distances_prefer_the_true_defect():
    clean = [volume(i) for i in range(2)]
    rng = np.random.default_rng(0)
    true = [add_defect(v, "denoising", rng, photon_levels=(10.0,)) for v in clean]
    others = [volume(i) for i in (5, 6)]
    synthesised = [add_defect(v, "denoising", rng, photon_levels=(10.0,)) for v in others]  # the same defect
    d = defect_distances(synthesised, true, others)
    assert d["intensity_synthesised"] < d["intensity_clean"] and d["gradient_synthesised"] < d["gradient_clean"]
    assert gradient_hellinger(true, true) == 0
    with pytest.raises(ValueError, match="at least one volume"):
        defect_distances([], true, clean)
