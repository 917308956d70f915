"""The defect models (denoising, axial inpainting, super-resolution) and the defect dataset."""

import numpy as np
import pytest
from scripts.data.io import read_stack
from scripts.errors import InputError
from scripts.simulate.defects import (
    TASKS,
    add_defect,
    axial_defect,
    ensure_defect_dataset,
    noise_defect,
    simulate_defect_dataset,
    super_resolution_defect,
)

TINY = {"n_pairs": 2, "n_clean": 1, "n_test": 1, "size": 16, "depth": 9, "progress": False}


def test_noise_is_poisson_gaussian_at_the_photon_level():
    rng = np.random.default_rng(0)
    clean = np.full((4, 64, 64), 100, np.uint8)  # far enough from 255 that little clips
    for photons in (30.0, 100.0):
        noisy = noise_defect(clean, rng, photons, read_noise=2.0).astype(float)
        scale = 255.0 / photons
        expected_var = 100 * scale + (2.0 * scale) ** 2  # Poisson (mean photons * scale^2) + read noise
        assert noisy.mean() == pytest.approx(100, abs=1.5)
        assert noisy.var() == pytest.approx(expected_var, rel=0.1)


def test_axial_keeps_every_nth_plane_and_interpolates_between():
    z = np.arange(9, dtype=float)[:, None, None]
    ramp = np.broadcast_to(20 + 20 * z, (9, 4, 4)).astype(np.uint8)  # linear in z: interpolation is exact
    np.testing.assert_array_equal(axial_defect(ramp, 4, 1e-3), ramp)
    spike = np.zeros((9, 4, 4), np.uint8)
    spike[2] = 200  # a plane between the kept ones (0, 4, 8) is lost
    out = axial_defect(spike, 4, 1e-3)
    assert out.max() == 0
    spike[4] = 200
    np.testing.assert_array_equal(axial_defect(spike, 4, 1e-3)[:, 0, 0], [0, 50, 100, 150, 200, 150, 100, 50, 0])


def test_super_resolution_is_lateral_only():
    rng = np.random.default_rng(1)
    planes = np.broadcast_to(rng.integers(0, 255, (9, 1, 1)), (9, 16, 16)).astype(np.uint8)
    np.testing.assert_array_equal(super_resolution_defect(planes, 4), planes)  # nothing varies in Y, X
    image = rng.integers(0, 255, (1, 16, 16)).astype(np.uint8)
    out = super_resolution_defect(image, 4, sigma=1e-3)
    np.testing.assert_array_equal(out[:, ::4, ::4], image[:, ::4, ::4])  # the kept pixels
    assert np.abs(out.astype(int) - image).mean() > 10  # the rest is lost


@pytest.mark.parametrize("task", TASKS)
def test_every_task_keeps_shape_and_dtype_and_changes_the_volume(task):
    from scripts.simulate.zstacks import simulate_stack

    clean = simulate_stack(np.random.default_rng(0), size=16, depth=9)[1]
    out = add_defect(clean, task, np.random.default_rng(1))
    assert out.shape == clean.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - clean).mean() > 0.5


def test_bad_tasks_and_parameters_are_one_clear_error():
    clean = np.zeros((9, 8, 8), np.uint8)
    with pytest.raises(InputError, match="unknown defect task 'deblur'; the tasks are denoising, axial"):
        add_defect(clean, "deblur", np.random.default_rng(0))
    with pytest.raises(InputError, match="axial_factor must be an integer >= 2"):
        add_defect(clean, "axial", np.random.default_rng(0), axial_factor=1)
    with pytest.raises(InputError, match="unknown defect parameter"):
        add_defect(clean, "axial", np.random.default_rng(0), blur=3)
    with pytest.raises(InputError, match="unknown defect task"):
        ensure_defect_dataset("/nonexistent/never/made", tasks=["deblur"])


def test_dataset_layout_and_determinism(tmp_path):
    summary = simulate_defect_dataset(tmp_path / "a", seed=5, **TINY)
    a = tmp_path / "a"
    assert summary["tasks"] == list(TASKS)
    assert len(list((a / "clean").glob("*.tif"))) == 1
    for task in TASKS:
        for split, n in (("train", 2), ("test", 1)):
            clean = sorted((a / task / split / "clean").glob("*.tif"))
            defective = sorted((a / task / split / "defective").glob("*.tif"))
            assert len(clean) == n and [f.name for f in clean] == [f.name for f in defective]
            volume, meta = read_stack(clean[0])
            assert volume.shape == (9, 16, 16) and meta["axes"] == "ZYX"
    simulate_defect_dataset(tmp_path / "b", seed=5, tasks=["denoising"], **TINY)
    same = "denoising/train/defective/sim_00001.tif"
    np.testing.assert_array_equal(read_stack(a / same)[0], read_stack(tmp_path / "b" / same)[0])
    simulate_defect_dataset(tmp_path / "c", seed=6, tasks=["denoising"], **TINY)
    assert not np.array_equal(read_stack(a / same)[0], read_stack(tmp_path / "c" / same)[0])
    # independent specimens: the unpaired clean volume is none of the pairs' clean volumes
    unpaired = read_stack(a / "clean" / "sim_00000.tif")[0]
    assert not np.array_equal(unpaired, read_stack(a / "axial/train/clean/sim_00000.tif")[0])


def test_ensure_defect_dataset_generates_once(tmp_path, capsys):
    target = tmp_path / "defects"
    assert ensure_defect_dataset(target, tasks=["axial"], **TINY) == target
    assert "generating the simulated defect dataset" in capsys.readouterr().out
    assert len(list((target / "axial" / "train" / "defective").glob("*.tif"))) == 2
    assert not any(p.name.startswith(".simulating") for p in target.iterdir())
    before = {p: p.stat().st_mtime_ns for p in target.rglob("*.tif")}
    ensure_defect_dataset(target, tasks=["axial"], **TINY)
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*.tif")} == before
    assert capsys.readouterr().out == ""


def test_a_named_folder_without_clean_volumes_is_an_error_not_simulated(tmp_path):
    missing = tmp_path / "typo"
    with pytest.raises(InputError, match="no such dataset folder"):
        ensure_defect_dataset(missing, simulate=False, tasks=["axial"], **TINY)
    assert not missing.exists()
    empty = tmp_path / "empty"
    (empty / "clean").mkdir(parents=True)
    with pytest.raises(InputError, match="holds no clean: put the unpaired clean volumes there"):
        ensure_defect_dataset(empty, simulate=False, tasks=["axial"], **TINY)
    assert list(empty.rglob("*.tif")) == []
    simulate_defect_dataset(empty, tasks=["axial"], **TINY)  # a folder that holds data is used as it is
    assert ensure_defect_dataset(empty, simulate=False, tasks=["axial"]) == empty
