"""The simulator of brightfield z-scans (scripts/simulate/zstacks.py): optics, determinism, focus, look, datasets."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from scripts.errors import InputError
from scripts.simulate.optics import defocus_otf
from scripts.simulate.zstacks import (
    SIMULATOR_VERSION,
    SPECIMEN_V1,
    STAMP,
    ensure_dataset,
    simulate_dataset,
    simulate_infocus,
    simulate_stack,
)

ZSEGAN = "zsegan"


def gradient_energy(image: np.ndarray) -> float:
    """Mean squared gradient (forward differences): a simple focus measure."""
    a = image.astype(np.float64)
    return float((np.diff(a, axis=0)[:, :-1] ** 2 + np.diff(a, axis=1)[:-1] ** 2).mean())


def focus_curve(stack: np.ndarray) -> np.ndarray:
    return np.array([gradient_energy(p) for p in stack])


def sharpest(stack: np.ndarray) -> int:
    """The middle of the sharp plateau: the gradient-energy-weighted mean plane among those within 80%
    of the peak. A section ~12 um thick is sharp over several planes, and a plain argmax wanders over
    that plateau with the content (above or below the middle)."""
    g = focus_curve(stack)
    top = np.flatnonzero(g >= 0.8 * g.max())
    return int(round(float((top * g[top]).sum() / g[top].sum())))


@pytest.fixture(scope="module")
def stacks():
    """A few full-size stacks (128 x 128 x 29), each ``(stack, truth, focus)``."""
    return [simulate_stack(np.random.default_rng(seed)) for seed in range(5)]


# ----------------------------------------------------------------------------- optics


def test_otf_is_one_at_zero_frequency_real_and_even():
    otf = defocus_otf((64, 48), np.array([0.0, 1.0, 3.0, 10.0]))
    assert otf.shape == (4, 64, 48)
    assert np.isrealobj(otf)
    np.testing.assert_allclose(otf[:, 0, 0], 1.0)
    assert np.all(np.abs(otf) <= 1.0 + 1e-9)
    # the defocus sign does not matter, and the PSF is symmetric (OTF(f) == OTF(-f))
    np.testing.assert_array_equal(defocus_otf((32, 32), -4.0), defocus_otf((32, 32), 4.0))
    o = defocus_otf((32, 32), 4.0)
    np.testing.assert_allclose(o[1:, 1:], o[1:, 1:][::-1, ::-1])


def test_otf_at_mid_frequency_falls_with_defocus():
    dz = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 6.0])
    otf = defocus_otf((64, 64), dz)
    mid = np.abs(otf[:, 0, 8])  # 0.125 cycles/um, before the first zero of the defocus jinc
    assert np.all(np.diff(mid) < 0), mid
    assert mid[0] > 0.8 and mid[-1] < 0.5 * mid[0]


def test_psf_is_the_geometric_defocus_disc():
    """Far from focus the PSF is the uniform disc of radius R = |dz| tan(asin(NA/n)) (0.577 |dz| at
    NA 0.5 in air): nearly all its energy lies within R, a quarter within R/2; a higher NA blurs more."""
    n, dz = 128, 16.0
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    r = np.hypot(xx, yy)
    radius = dz * np.tan(np.arcsin(0.5))

    def encircled(psf, within):
        return float(psf[r <= within].sum() / psf.sum())

    psf = np.fft.fftshift(np.fft.ifft2(defocus_otf((n, n), dz)).real)
    assert encircled(psf, radius) > 0.9
    assert 0.18 < encircled(psf, radius / 2) < 0.35
    wider = np.fft.fftshift(np.fft.ifft2(defocus_otf((n, n), dz, na=0.7)).real)
    assert encircled(wider, radius) < 0.75


def test_otf_rejects_impossible_aperture():
    with pytest.raises(ValueError, match="na"):
        defocus_otf((16, 16), 1.0, na=1.2, n_medium=1.0)
    with pytest.raises(ValueError, match="psf"):
        defocus_otf((16, 16), 1.0, psf="square")


def test_gaussian_defocus_has_the_disc_s_width_and_no_contrast_reversals():
    """The real stacks' defocus is Gaussian (tools/defocus_from_stacks.py): the "gaussian" PSF has the
    geometric disc's second moment (R^2 / 4 per axis) and a positive OTF, where the disc's jinc changes sign."""
    n, dz = 128, 12.0
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    variances = {}
    for psf in ("disc", "gaussian"):
        otf = defocus_otf((n, n), dz, psf=psf, core_sigma_um=0.01, wavelength_um=0.001)  # defocus only
        image = np.fft.fftshift(np.fft.ifft2(otf).real)
        variances[psf] = float((image * xx**2).sum() / image.sum())
        if psf == "gaussian":
            assert otf.min() > -1e-12
        else:
            assert otf.min() < -0.05
    radius = dz * np.tan(np.arcsin(0.5))
    assert variances["gaussian"] == pytest.approx(radius**2 / 4, rel=0.05)
    assert variances["disc"] == pytest.approx(radius**2 / 4, rel=0.1)


# ----------------------------------------------------------------------------- stacks


def test_stack_shapes_dtypes_and_determinism():
    a = simulate_stack(np.random.default_rng(7), size=48)
    b = simulate_stack(np.random.default_rng(7), size=48)
    c = simulate_stack(np.random.default_rng(8), size=48)
    stack, truth, focus = a
    assert stack.shape == truth.shape == (29, 48, 48)
    assert stack.dtype == truth.dtype == np.uint8
    assert isinstance(focus, int) and 10 <= focus <= 18
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_other_depths_sizes_and_parameters():
    stack, truth, focus = simulate_stack(np.random.default_rng(3), size=40, depth=17)
    assert stack.shape == truth.shape == (17, 40, 40)
    assert 5 <= focus <= 11
    _, _, focus = simulate_stack(np.random.default_rng(3), size=32, focal_range=(6, 6))
    assert focus == 6
    with pytest.raises(TypeError, match="unknown simulation parameter"):
        simulate_stack(np.random.default_rng(0), size=32, not_a_parameter=1)
    with pytest.raises(ValueError, match="focal_range"):
        simulate_stack(np.random.default_rng(0), size=32, depth=17, focal_range=(11, 19))


def test_sharpest_plane_is_the_returned_focus(stacks):
    for stack, _, focus in stacks:
        measured = sharpest(stack)
        assert 10 <= focus <= 18
        assert abs(measured - focus) <= 2, (measured, focus)
    # the focus varies between stacks
    assert len({focus for _, _, focus in stacks}) >= 3


def test_blur_grows_away_from_focus(stacks):
    for stack, _, focus in stacks:
        g = focus_curve(stack)
        peak = g[focus]
        assert g[focus - 8] < 0.75 * peak and g[focus + 8] < 0.75 * peak
        assert g[0] < 0.35 * peak and g[-1] < 0.35 * peak
        # farther from the sharpest plane is blurrier (monotonic, up to a 10% wobble on the sharp plateau
        # of a thick section: 10% holds for 36 of the first 40 real zse-brain stacks, 5% for only 31)
        best = sharpest(stack)
        assert np.all(np.diff(g[best + 1 :]) < 0.1 * peak)
        assert np.all(np.diff(g[: best + 1]) > -0.1 * peak)


def test_defocus_keeps_the_light(stacks):
    """Defocus moves light about, it neither adds nor removes it: the mean of every plane is the focal
    plane's (the real stacks: 0.997-1.000 at 12 planes from focus; version 1 of the simulator, which
    blurred the absorbance, darkened them to 0.93)."""
    for stack, _, focus in stacks:
        means = stack.reshape(len(stack), -1).mean(axis=1)
        np.testing.assert_allclose(means / means[focus], 1.0, atol=0.01)


def test_what_varies_between_scanners_is_drawn_per_stack():
    """Blur scale, noise, stain strength and flare are drawn per stack from DEFAULTS' ranges; a fixed value
    gives them all to every stack."""
    from scripts.simulate.zstacks import DEFAULTS, _scanner

    draws = [_scanner(np.random.default_rng(seed), DEFAULTS) for seed in range(20)]
    for key in ("blur_scale", "blur_asymmetry", "stain_scale", "flare", "gain", "read_noise", "noise_correlation"):
        values = np.array([d[key] for d in draws])
        lo, hi = DEFAULTS[key]
        assert lo <= values.min() < values.max() <= hi and len(set(values)) == len(values), key

    # a larger blur scale blurs the outermost planes more, relative to the sharpest (the specimens differ:
    # the field is padded by the largest blur)
    def far_over_sharpest(scale, seed):
        stack = simulate_stack(
            np.random.default_rng(seed), size=64, depth=17, focal_range=(8, 8), blur_scale=scale, blur_asymmetry=0.0
        )[0]
        return (gradient_energy(stack[0]) + gradient_energy(stack[-1])) / 2 / max(gradient_energy(p) for p in stack)

    narrow, wide = (np.array([far_over_sharpest(scale, seed) for seed in range(4)]) for scale in (0.9, 1.3))
    assert np.all(wide < narrow) and wide.mean() < 0.85 * narrow.mean(), (narrow, wide)


def test_version_1_specimens_do_not_see_the_realism_parameters():
    """With SPECIMEN_V1 (the paired and defect datasets), the truth and the random numbers used do not
    depend on the scanner parameters: fixed values draw nothing, and the truth is the specimen's."""
    results = []
    for extra in ({}, {"noise_correlation": 0.1, "read_noise": 2.0, "gain": 0.02}):
        rng = np.random.default_rng(4)
        stack, truth, focus = simulate_stack(rng, size=32, depth=13, **{**SPECIMEN_V1, **extra})
        results.append((stack, truth, focus, rng.random()))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][2:] == results[1][2:]
    assert not np.array_equal(results[0][0], results[1][0])


def test_truth_is_sharp_and_blank_outside_the_section(stacks):
    for stack, truth, focus in stacks:
        sharp = gradient_energy(truth[focus])
        assert sharp > gradient_energy(stack[focus])
        assert sharp > 5 * max(gradient_energy(stack[0]), gradient_energy(stack[-1]))
        # the outermost planes lie outside the section: the truth shows only the (vignetted) light
        assert truth[0].std() < 6 and truth[-1].std() < 6
        assert truth[0].mean() > 180
        # same intensity scale as the stack (the same I0 and stain, no noise)
        assert abs(float(truth[focus].mean()) - float(stack[focus].mean())) < 35


def test_intensities_look_like_brightfield(stacks):
    means = [float(stack.mean()) for stack, _, _ in stacks]
    assert all(100 < m < 200 for m in means), means
    for stack, _, focus in stacks:
        assert (stack[focus] < 90).mean() > 0.005  # dark cells
        assert np.percentile(stack[focus], 90) > 150  # bright background
        assert stack.max() < 255  # not saturated


def test_infocus_images():
    a = simulate_infocus(np.random.default_rng(11), size=64)
    b = simulate_infocus(np.random.default_rng(11), size=64)
    c = simulate_infocus(np.random.default_rng(12), size=64)
    assert a.shape == (64, 64) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    big = simulate_infocus(np.random.default_rng(1))
    assert big.shape == (128, 128)
    assert 100 < big.mean() < 210 and (big < 90).mean() > 0.005


# ----------------------------------------------------------------------------- datasets


def test_dataset_layout_and_determinism(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    summary = simulate_dataset(tmp_path / "a", n_stacks=3, n_infocus=2, size=40, depth=17, seed=5, progress=False)
    names = ["sim_00000.tif", "sim_00001.tif", "sim_00002.tif"]
    assert sorted(p.name for p in (tmp_path / "a" / "stacks").iterdir()) == names
    assert sorted(p.name for p in (tmp_path / "a" / "truth").iterdir()) == names
    assert sorted(p.name for p in (tmp_path / "a" / "infocus").iterdir()) == names[:2]
    assert summary["n_stacks"] == 3 and summary["n_infocus"] == 2
    stamp = json.loads((tmp_path / "a" / STAMP).read_text())
    written = [f"{kind}/{name}" for kind in ("stacks", "truth") for name in names] + [
        f"infocus/{name}" for name in names[:2]
    ]
    assert stamp == {"version": SIMULATOR_VERSION, "files": sorted(written)}
    assert len(summary["focal_planes"]) == 3 and all(5 <= f <= 11 for f in summary["focal_planes"])
    stack = tifffile.imread(tmp_path / "a" / "stacks" / names[0])
    assert stack.shape == (17, 40, 40) and stack.dtype == np.uint8
    assert tifffile.imread(tmp_path / "a" / "truth" / names[0]).shape == (17, 40, 40)
    assert tifffile.imread(tmp_path / "a" / "infocus" / names[0]).shape == (40, 40)
    # same seed: byte-identical files; file i does not depend on how many are made
    simulate_dataset(tmp_path / "b", n_stacks=2, n_infocus=1, size=40, depth=17, seed=5, progress=False)
    for kind, name in [("stacks", names[0]), ("stacks", names[1]), ("truth", names[1]), ("infocus", names[0])]:
        assert (tmp_path / "a" / kind / name).read_bytes() == (tmp_path / "b" / kind / name).read_bytes()
    simulate_dataset(tmp_path / "c", n_stacks=1, n_infocus=0, size=40, depth=17, seed=6, progress=False)
    assert (tmp_path / "a" / "stacks" / names[0]).read_bytes() != (tmp_path / "c" / "stacks" / names[0]).read_bytes()


def test_dataset_progress_is_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger=ZSEGAN):
        simulate_dataset(tmp_path, n_stacks=2, n_infocus=1, size=32, depth=17, seed=0, progress=True)
    assert any("2/2 stacks" in r.getMessage() for r in caplog.records)


def test_ensure_dataset_generates_once(tmp_path, capsys, caplog):
    target = tmp_path / "data"
    kwargs = {"n_stacks": 2, "n_infocus": 2, "size": 32, "depth": 17, "progress": False}
    with caplog.at_level(logging.INFO, logger=ZSEGAN):  # logging shows it: said once, in the log
        assert ensure_dataset(target, **kwargs) == target
    assert any(str(target) in r.getMessage() and "simulat" in r.getMessage() for r in caplog.records)
    files = sorted(p for p in target.rglob("*") if p.is_file())
    assert len(files) == 7  # 2 stacks, 2 truths, 2 in-focus images and the stamp
    assert json.loads((target / STAMP).read_text())["version"] == SIMULATOR_VERSION
    stamps = {p: p.stat().st_mtime_ns for p in files}
    # a second call leaves it untouched and says nothing
    assert ensure_dataset(target, **kwargs) == target
    assert capsys.readouterr().out == ""
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()} == stamps


def test_ensure_dataset_prints_where_logging_is_silent(tmp_path, capsys):
    logging.getLogger(ZSEGAN).setLevel(logging.WARNING)
    try:
        ensure_dataset(tmp_path / "data", n_stacks=1, n_infocus=1, size=32, depth=17, progress=False)
    finally:
        logging.getLogger(ZSEGAN).setLevel(logging.NOTSET)
    out = capsys.readouterr().out
    assert str(tmp_path / "data") in out and "simulat" in out


def test_ensure_dataset_leaves_user_data_alone(tmp_path, capsys):
    own = tmp_path / "own"
    (own / "stacks").mkdir(parents=True)
    (own / "stacks" / "mine.npz").write_bytes(b"not touched")
    ensure_dataset(own, n_stacks=1, n_infocus=1, size=32, depth=17, progress=False)
    assert sorted(p.name for p in own.rglob("*")) == ["mine.npz", "stacks"]
    assert capsys.readouterr().out == ""
    # an empty stacks/ folder counts as no data
    empty = tmp_path / "empty"
    (empty / "stacks").mkdir(parents=True)
    ensure_dataset(empty, n_stacks=1, n_infocus=1, size=32, depth=17, progress=False)
    assert [p.name for p in (empty / "stacks").iterdir()] == ["sim_00000.tif"]


def test_a_folder_the_user_named_is_never_simulated(tmp_path):
    with pytest.raises(InputError, match="no such dataset folder") as error:
        ensure_dataset(tmp_path / "typo", simulate=False)
    assert error.value.path == str(tmp_path / "typo") and not (tmp_path / "typo").exists()
    (tmp_path / "empty" / "stacks").mkdir(parents=True)
    with pytest.raises(InputError, match="holds no stacks") as error:
        ensure_dataset(tmp_path / "empty", simulate=False)
    assert error.value.path == str(tmp_path / "empty" / "stacks")
    assert [p.name for p in (tmp_path / "empty").rglob("*")] == ["stacks"]


def test_interrupted_generation_leaves_no_stacks(tmp_path, monkeypatch):
    import scripts.simulate.zstacks as simulate

    real = simulate.simulate_dataset

    def interrupted(out_dir, **kwargs):
        real(out_dir, **{**kwargs, "n_stacks": 1, "n_infocus": 0})
        raise KeyboardInterrupt

    monkeypatch.setattr(simulate, "simulate_dataset", interrupted)
    target = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset(target, n_stacks=2, n_infocus=1, size=32, depth=17, progress=False)
    assert not any(target.rglob("*.tif"))
    assert not any(p.name.startswith(".simulating") for p in target.iterdir())


TINY = {"n_stacks": 2, "n_infocus": 1, "size": 32, "depth": 17, "progress": False}


def test_a_set_of_another_simulator_version_is_simulated_again(tmp_path, capsys):
    target = tmp_path / "data"
    ensure_dataset(target, **{**TINY, "n_stacks": 3})
    stamp = json.loads((target / STAMP).read_text())
    assert sorted(stamp["files"])[:2] == ["infocus/sim_00000.tif", "stacks/sim_00000.tif"]
    (target / STAMP).write_text(json.dumps({**stamp, "version": SIMULATOR_VERSION - 1}))
    before = (target / "stacks" / "sim_00000.tif").read_bytes()
    (target / "stacks" / "sim_00000.tif").write_bytes(b"old")
    capsys.readouterr()
    ensure_dataset(target, **TINY)  # now 2 stacks: the third of the old set must not stay behind
    assert f"version {SIMULATOR_VERSION - 1} of the simulator" in capsys.readouterr().out
    assert sorted(p.name for p in (target / "stacks").iterdir()) == ["sim_00000.tif", "sim_00001.tif"]
    assert (target / "stacks" / "sim_00000.tif").read_bytes() == before
    assert json.loads((target / STAMP).read_text())["version"] == SIMULATOR_VERSION


def test_an_unstamped_simulated_set_counts_as_version_1(tmp_path, capsys):
    """Sets generated before the stamps: only the simulator's file names in stacks/, truth/, infocus/."""
    target = tmp_path / "data"
    simulate_dataset(target, **TINY)
    (target / STAMP).unlink()
    (target / "truth" / "sim_00007.tif").write_bytes(b"left by an older, larger set")
    ensure_dataset(target, **TINY)
    assert "version 1 of the simulator" in capsys.readouterr().out
    assert sorted(p.name for p in (target / "truth").iterdir()) == ["sim_00000.tif", "sim_00001.tif"]
    assert (target / STAMP).is_file()


def test_an_old_set_with_other_files_among_it_is_refused(tmp_path):
    target = tmp_path / "data"
    ensure_dataset(target, **TINY)
    stamp = json.loads((target / STAMP).read_text())
    (target / STAMP).write_text(json.dumps({**stamp, "version": 1}))
    (target / "stacks" / "mine.tif").write_bytes(b"the user's")
    with pytest.raises(InputError, match="other files among them") as error:
        ensure_dataset(target, **TINY)
    assert error.value.path == str(target)
    assert (target / "stacks" / "mine.tif").read_bytes() == b"the user's"
    assert (target / "stacks" / "sim_00000.tif").is_file()


def test_a_folder_the_user_named_is_used_as_it_is_whatever_its_version(tmp_path, capsys):
    target = tmp_path / "data"
    ensure_dataset(target, **TINY)
    stamp = json.loads((target / STAMP).read_text())
    (target / STAMP).write_text(json.dumps({**stamp, "version": 1}))
    files = {p: p.read_bytes() for p in (target / "stacks").iterdir()}
    capsys.readouterr()
    assert ensure_dataset(target, simulate=False) == target
    assert "used as it is" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in (target / "stacks").iterdir()} == files
