"""The paired workflow's evaluation: [0, 1] mapping, measures, the true-PSF Richardson-Lucy baseline, the report."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer
from scipy import ndimage
from scripts.data.io import write_image
from scripts.data.transforms import RobustNormalised
from scripts.evaluation.paired import (
    PairedEvaluation,
    compare,
    deconvolve,
    spread_views,
    system_of,
    unit_range,
    widefield_psf,
)
from scripts.simulate.fluorescence import OFFSET_DN, simulate_pair


def test_unit_range_maps_the_percentiles_to_0_and_1():
    image = np.arange(1000, dtype=np.float32).reshape(20, 50)
    unit = unit_range(image, 10, 90)
    assert unit.min() == 0 and unit.max() == 1
    assert unit[10, 0] == pytest.approx((500 - 99.9) / (899.1 - 99.9))


def test_compare_scores_an_image_against_itself_perfectly():
    image = np.random.default_rng(0).random((32, 32))
    scores = compare(image, image)
    assert scores["mse"] == 0 and scores["ssim"] == pytest.approx(1) and scores["psnr"] == np.inf
    assert scores["spectrum"] == 0
    worse = compare(np.clip(image + 0.1, 0, 1), image)
    assert worse["mse"] > 0 and worse["psnr"] < 25


def test_the_psf_is_centred_symmetric_and_normalised():
    psf = widefield_psf("A", 33)
    assert psf.sum() == pytest.approx(1) and np.unravel_index(psf.argmax(), psf.shape) == (16, 16)
    assert np.allclose(psf, psf[::-1, ::-1], atol=1e-9)
    assert psf[15:18, 15:18].sum() > 0.8  # in focus: most light within a pixel of the centre


def test_richardson_lucy_sharpens_a_blurred_point():
    truth = np.zeros((33, 33))
    truth[16, 16] = 1000.0
    blurred = ndimage.convolve(truth, widefield_psf("A"), mode="constant") + OFFSET_DN
    restored = deconvolve(blurred, "A", 30)
    assert restored[16, 16] > 1.5 * (blurred[16, 16] - OFFSET_DN)


def test_the_picture_shows_every_system_grouped():
    candidates = {"A": ["a1", "a2", "a3"], "B": ["b1"], "C": ["c1", "c2", "c3"]}
    assert spread_views(candidates, 1) == ["a1"]
    assert spread_views(candidates, 4) == ["a1", "a2", "b1", "c1"]  # turns: a, b, c, a
    assert spread_views(candidates, 6) == ["a1", "a2", "a3", "b1", "c1", "c2"]  # then c, a (B has no second)
    assert spread_views(candidates, 10) == ["a1", "a2", "a3", "b1", "c1", "c2", "c3"]
    assert spread_views({None: ["x1", "x2", "x3"]}, 2) == ["x1", "x2"]  # files of no known system: the first


def test_system_of_reads_the_prefix():
    assert system_of("/x/widefield/B_00003.tif") == "B" and system_of("/x/mine.tif") is None


def test_the_evaluation_writes_its_report(tmp_path):
    data = tmp_path / "data"
    items = []
    for i, system in enumerate(("A", "C")):
        widefield, confocal, _ = simulate_pair(np.random.default_rng(i), 32, system)
        for kind, image in (("widefield", widefield), ("confocal", confocal)):
            write_image(data / kind / f"{system}_00000.tif", image)
        name = f"{system}_00000.tif"
        items.append({"image": str(data / "widefield" / name), "label": str(data / "confocal" / name)})
    identity = torch.nn.Identity()
    result = PairedEvaluation(
        items,
        identity,
        SlidingWindowInferer(roi_size=(32, 32)),
        RobustNormalised(keys="image"),
        tmp_path / "out",
        baseline=identity,
        rl_iterations=5,
        n_views=1,
    ).run()
    methods = {r["method"] for r in result["rows"]}
    assert methods == {"input", "gan", "l1", "richardson_lucy", "confocal"}
    by_method = {(r["method"], r["system"]): r for r in result["rows"]}
    # G as the identity: its output is the input, up to the float round trip of the percentile mapping
    assert by_method[("gan", "A")]["psnr"] == pytest.approx(by_method[("input", "A")]["psnr"], abs=1e-3)
    summary = {(s["method"], s["view"], s["measure"]): s for s in result["summary"]}
    assert summary[("input", "all", "psnr")]["n"] == 2 and summary[("input", "C", "psnr")]["n"] == 1
    for name in ("metrics.csv", "summary.csv", "metrics.json", "views/test_pairs.png", "views/spectra.png"):
        assert (tmp_path / "out" / name).is_file()
    with open(tmp_path / "out" / "spectra.csv") as f:
        spectra = {(r["group"], r["method"], float(r["frequency"])): float(r["power_ratio"]) for r in csv.DictReader(f)}
    assert {(g, m) for g, m, _ in spectra} == {(g, m) for g in ("all", "A", "C") for m in ("input", "gan", "l1")} | {
        ("all", "richardson_lucy"),
        ("A", "richardson_lucy"),
        ("C", "richardson_lucy"),
    }
    assert sorted(f for g, m, f in spectra if (g, m) == ("all", "gan"))[::15] == [1 / 64, 31 / 64]  # 16 bins
    # the identity G has the input's spectrum; the spectral error is their mean |log2| over all bins but the first
    ratios = np.array([spectra[("A", "gan", f)] for f in sorted(f for g, m, f in spectra if (g, m) == ("A", "gan"))])
    assert np.mean(np.abs(np.log2(ratios[1:]))) == pytest.approx(by_method[("gan", "A")]["spectrum"], rel=1e-3)
    with open(tmp_path / "out" / "summary.csv") as f:
        assert {"median", "mean"} <= set(next(csv.DictReader(f)))
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["summary"]
