"""The simulated wide-field / confocal pairs: determinism, shapes, systems, nuisance switches, physics."""

from __future__ import annotations

import numpy as np
import pytest
from scripts.data.io import read_image
from scripts.errors import InputError
from scripts.simulate.fluorescence import (
    NUISANCES,
    OFFSET_DN,
    SYSTEMS,
    ensure_paired_dataset,
    simulate_pair,
    simulate_pairs,
)

OFF = dict.fromkeys(NUISANCES, 0.0)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_a_pair_is_deterministic_from_its_seed():
    a = simulate_pair(rng(1), 32, "A")
    b = simulate_pair(rng(1), 32, "A")
    c = simulate_pair(rng(2), 32, "A")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_shapes_dtypes_and_info(system):
    widefield, confocal, info = simulate_pair(rng(), 32, system)
    assert widefield.shape == confocal.shape == (32, 32)
    assert widefield.dtype == confocal.dtype == np.uint16
    assert info["system"] == system and info["pixel_um"] == SYSTEMS[system]["pixel_um"]


def test_at_least_three_systems_that_differ_in_optics_and_camera():
    assert len(SYSTEMS) >= 3
    for key in ("na", "pixel_um", "photons", "read_noise", "stray", "gain"):
        assert len({s[key] for s in SYSTEMS.values()}) == len(SYSTEMS), key


def test_nuisances_are_switches():
    _, _, info = simulate_pair(rng(), 32, "B", **OFF)
    assert info["shift_px"] == (0.0, 0.0) and info["focus_offset_um"] == 0.0 and info["bleaching"] == 0.0
    assert info["gain"] == SYSTEMS["B"]["gain"]
    _, _, info = simulate_pair(rng(), 32, "B", jitter_px=0.5)
    assert 0 < max(abs(s) for s in info["shift_px"]) <= 0.5
    with pytest.raises(ValueError, match="nuisance"):
        simulate_pair(rng(), 32, "B", blur=1.0)
    with pytest.raises(ValueError, match="system"):
        simulate_pair(rng(), 32, "Z")


def _haze(image: np.ndarray) -> float:
    """The background level (median) relative to the bright structures (99.9th percentile), offset removed."""
    signal = image.astype(float) - OFFSET_DN
    return float(np.median(signal) / np.percentile(signal, 99.9))


def test_confocal_has_less_out_of_focus_haze_than_wide_field():
    for seed, system in enumerate(SYSTEMS):
        widefield, confocal, _ = simulate_pair(rng(seed), 64, system, **OFF)
        assert _haze(confocal) < 0.5 * _haze(widefield), system


def test_more_stray_light_more_haze():
    # the same specimen and optics, only the stray light differs
    low = simulate_pair(rng(3), 64, "A", **OFF)[0]
    SYSTEMS["A"]["stray"], stray = 1.0, SYSTEMS["A"]["stray"]
    try:
        high = simulate_pair(rng(3), 64, "A", **OFF)[0]
    finally:
        SYSTEMS["A"]["stray"] = stray
    assert _haze(high) > _haze(low)


def test_simulate_pairs_writes_registered_pairs_with_their_pixel_size(tmp_path):
    summary = simulate_pairs(tmp_path, n_per_system=1, size=32, seed=0, progress=False)
    assert summary["n_pairs"] == 3
    names = sorted(p.name for p in (tmp_path / "widefield").iterdir())
    assert (
        names
        == sorted(p.name for p in (tmp_path / "confocal").iterdir())
        == ["A_00000.tif", "B_00000.tif", "C_00000.tif"]
    )
    image, meta = read_image(tmp_path / "widefield" / "C_00000.tif")
    assert image.shape == (32, 32) and meta["spacing"] == pytest.approx((0.32, 0.32))
    # pair i of a system depends only on the seed, the system and i
    again = tmp_path / "again"
    simulate_pairs(again, n_per_system=2, size=32, systems=("C",), seed=0, progress=False)
    assert np.array_equal(read_image(again / "widefield" / "C_00000.tif")[0], image)


def test_ensure_paired_dataset_generates_once(tmp_path, capsys):
    target = tmp_path / "paired"
    ensure_paired_dataset(target, n_per_system=1, size=32, progress=False)
    assert "simulated 3 wide-field/confocal pairs" in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in target.rglob("*.tif")}
    assert len(stamps) == 6
    ensure_paired_dataset(target, n_per_system=1, size=32, progress=False)
    assert capsys.readouterr().out == ""
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*.tif")} == stamps


def test_a_paired_folder_the_user_named_is_never_simulated(tmp_path):
    with pytest.raises(InputError, match="no such dataset folder"):
        ensure_paired_dataset(tmp_path / "typo", simulate=False)
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no widefield") as error:
        ensure_paired_dataset(tmp_path / "empty", simulate=False)
    assert error.value.path == str(tmp_path / "empty" / "widefield")
    assert not any((tmp_path / "empty").iterdir())


def test_wide_field_z_stacks_around_the_confocal_plane(tmp_path):
    """planes > 1: a wide-field z-stack whose middle plane is the confocal's (the most alike of its planes), the other
    planes defocused; the single-plane pair is unchanged by the option (the same random numbers)."""
    widefield, confocal, _ = simulate_pair(rng(3), 64, "C", planes=5, plane_step_um=1.0, **OFF)
    assert widefield.shape == (5, 64, 64) and confocal.shape == (64, 64) and widefield.dtype == np.uint16
    alike = [np.corrcoef(plane.ravel(), confocal.ravel())[0, 1] for plane in widefield.astype(float)]
    assert int(np.argmax(alike)) == 2 and alike[2] > alike[0] + 0.03 and alike[2] > alike[4] + 0.03
    one = simulate_pair(rng(3), 64, "C", **OFF)
    assert np.array_equal(simulate_pair(rng(3), 64, "C", planes=1, **OFF)[0], one[0])
    with pytest.raises(ValueError, match="planes must be odd"):
        simulate_pair(rng(3), 64, "C", planes=4)
    simulate_pairs(tmp_path, n_per_system=1, size=32, systems=("A",), progress=False, planes=3, plane_step_um=0.5)
    from scripts.data.io import read_stack

    stack, meta = read_stack(tmp_path / "widefield" / "A_00000.tif")
    assert stack.shape == (3, 32, 32) and meta["spacing"] == pytest.approx((0.5, 0.5, 0.5))
    assert read_image(tmp_path / "confocal" / "A_00000.tif")[0].shape == (32, 32)
