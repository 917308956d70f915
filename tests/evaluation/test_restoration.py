"""Restoration measures (fixed domain and min-max), the interpolation baselines, restorers' evaluation and its
report, and defect distances."""

import csv
import json

import numpy as np
import pytest
from monai.inferers import SlidingWindowInferer
from scripts.data.transforms import RobustNormalised
from scripts.evaluation.restoration import (
    RestorationEvaluation,
    baseline_table,
    defect_distances,
    evaluate_task,
    gradient_hellinger,
    middle_depths,
    minmax_planes,
    restoration_scores,
)
from scripts.nets.networks import ResNetGenerator
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


def test_evaluate_task_scores_each_restorer_beside_the_baselines(tmp_path):
    simulate_defect_dataset(
        tmp_path, tasks=["axial"], n_pairs=1, n_clean=1, n_test=2, size=24, depth=13, progress=False
    )
    shown = []
    restorers = {"same": lambda v: v.astype(np.float32), "flat": lambda v: np.full(v.shape, 128.0)}
    rows = evaluate_task(tmp_path, "axial", restorers, view=shown.append)
    assert [(r["volume"], r["method"]) for r in rows[:4]] == [
        ("sim_00000.tif", m) for m in ("input", "cubic", "same", "flat")
    ]
    for i in (0, 4):  # returning the input scores as the input does
        assert {k: rows[i + 2][k] for k in ("psnr", "ssim")} == pytest.approx({k: rows[i][k] for k in ("psnr", "ssim")})
        assert rows[i + 3]["ssim"] < rows[i]["ssim"] and rows[i + 3]["psnr_minmax"] < rows[i]["psnr_minmax"]
    assert len(shown) == 1 and list(shown[0]) == ["input", "cubic", "same", "flat", "clean"]
    assert all(0 <= v.min() and v.max() <= 1 for v in shown[0].values())
    assert middle_depths(29) == [12, 14, 15] and middle_depths(1) == [0]


def test_the_restoration_report_of_an_identity_restorer(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    simulate_defect_dataset(data, tasks=["denoising"], n_pairs=1, n_clean=1, n_test=2, size=24, depth=9, progress=False)
    identity = ResNetGenerator(3, channels=2, n_residual_blocks=1, output="residual").eval()  # zero last conv: x
    normalise = RobustNormalised("image", intensity_range=(0, 255))
    evaluation = RestorationEvaluation(
        data, "denoising", {"restorer": identity}, SlidingWindowInferer([-1, 16, 16]), normalise, out
    )
    result = evaluation.run()
    summary = {s["method"]: s for s in result["summary"]}
    assert list(summary) == ["input", "restorer"] and summary["input"]["n"] == 2
    assert summary["restorer"]["psnr"] == pytest.approx(summary["input"]["psnr"], abs=1e-3)
    with open(out / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert json.loads((out / "metrics.json").read_text())["summary"] == result["summary"]
    assert (out / "views" / "denoising.png").is_file() and (out / "summary.csv").is_file()
    with pytest.raises(ValueError, match="fixed intensity_range"):
        RestorationEvaluation(data, "denoising", {}, None, RobustNormalised("image"), out)
