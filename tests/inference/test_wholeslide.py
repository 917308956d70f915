"""Whole-slide enhancement: lazy OME-Zarr/TIFF input, whole-stack statistics, seamless tiles, resume, Dask cluster."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from monai.data.utils import compute_importance_map
from monai.inferers import SimpleInferer, SlidingWindowInferer
from scripts.data.io import cast_to, read_stack, write_stack
from scripts.data.transforms import RobustNormalised, percentile_range
from scripts.errors import InputError
from scripts.inference import wholeslide
from scripts.inference.sliding_window import HaloInferer, SlidingWindow, enhance
from scripts.inference.wholeslide import (
    aligned_tiling,
    enhance_lazily,
    enhance_lazily_halo,
    enhance_slide,
    halo_steps,
    halo_tiling,
    ngff_multiscales,
    open_stack,
    stack_focal_plane,
    stack_range,
)
from scripts.nets.networks import Generator3D

ROOT = Path(__file__).resolve().parents[2]
SPACING = (2.0, 0.5, 0.25)  # z, y, x in um


def write_ome_zarr(path: Path, stack: np.ndarray, spacing=SPACING, chunks=(3, 40, 40)) -> Path:
    """An NGFF 0.4 OME-Zarr input, as other tools write them (chunks unlike ours)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=stack, chunks=chunks, chunk_key_encoding={"name": "v2", "separator": "/"})
    group.attrs.update(ngff_multiscales(path.name, spacing, "um"))
    return path


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes() + str(f.stat().st_mtime_ns).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return Generator3D(channels=4, n_residual_blocks=1).eval()  # the reference layout: not the identity


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    """9x100x100 uint16 with structure and bright outliers, so percentiles and instance norms matter."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:100, :100]
    base = 800 + 600 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + 300 * (xx > 60)
    x = base[None] + rng.normal(0, 80, (9, 100, 100))
    x[:, 10:13, 70:73] = 20000
    return np.clip(x, 0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def guided() -> torch.nn.Module:
    """The reference layout with the configs' default focal guide and batch norms (--g_focus_guide true, --g_norm
    batch)."""
    torch.manual_seed(0)
    return Generator3D(channels=4, n_residual_blocks=1, focus_guide=True, norm="batch").eval()


def inferer(overlap: float = 0.25) -> SlidingWindow:
    return SlidingWindow(roi_size=(-1, 32, 32), sw_batch_size=4, overlap=overlap, mode="gaussian")


def in_memory(network, stack, overlap=0.25) -> np.ndarray:
    """The in-memory sliding window over the whole stack (``sliding_window.enhance``), in the input dtype."""
    return cast_to(enhance(network, stack, inferer(overlap), RobustNormalised("image")), str(stack.dtype))


# ----------------------------------------------------------------------------- reading


def test_ome_zarr_plain_zarr_and_tiff_are_read_lazily_as_zyx_with_voxel_size(stack, tmp_path):
    lazy, meta = open_stack(write_ome_zarr(tmp_path / "a.ome.zarr", stack))
    assert isinstance(lazy, da.Array) and lazy.shape == (9, 100, 100) and lazy.dtype == np.uint16
    assert meta["format"] == "zarr" and meta["spacing"] == SPACING and meta["unit"] == "um"
    np.testing.assert_array_equal(lazy.compute(), stack)

    ngff05 = zarr.open_group(str(tmp_path / "v05.ome.zarr"), mode="w", zarr_format=3)  # NGFF 0.5: zarr 3, "ome"
    ngff05.create_array("0", data=stack[None, :, :20])  # with a channel axis of 1
    ms = ngff_multiscales("v05", SPACING, "um")["multiscales"]
    ms[0]["axes"].insert(0, {"name": "c", "type": "channel"})
    ms[0]["datasets"][0]["coordinateTransformations"][0]["scale"].insert(0, 1.0)
    ngff05.attrs["ome"] = {"version": "0.5", "multiscales": ms}
    lazy, meta = open_stack(tmp_path / "v05.ome.zarr")
    assert lazy.shape == (9, 20, 100) and meta["spacing"] == SPACING and meta["axes"] == "czyx"

    zarr.save_array(str(tmp_path / "plain.zarr"), stack[:, :50], zarr_format=3)  # a bare array: ZYX, no spacing
    lazy, meta = open_stack(tmp_path / "plain.zarr")
    assert lazy.shape == (9, 50, 100) and meta["spacing"] is None

    tiff_meta = {"format": "tiff", "axes": "ZYX", "dtype": "uint16", "spacing": SPACING, "unit": "um"}
    write_stack(tmp_path / "b.tif", stack, tiff_meta)
    lazy, meta = open_stack(tmp_path / "b.tif")
    array, expected = read_stack(tmp_path / "b.tif")
    np.testing.assert_array_equal(lazy.compute(), array)
    assert meta["spacing"] == pytest.approx(expected["spacing"]) and meta["unit"] == "um"


def test_bad_inputs_raise_one_clear_error_naming_the_file(stack, tmp_path):
    (tmp_path / "notzarr").mkdir()
    zarr.save_array(str(tmp_path / "plane.zarr"), stack[0])
    zarr.save_array(str(tmp_path / "rgb.zarr"), np.zeros((3, 4, 32, 32), np.uint8))
    write_ome_zarr(tmp_path / "thin.ome.zarr", stack[:2])
    (tmp_path / "x.png").write_bytes(b"")
    cases = {
        "notzarr": "is not a zarr",
        "plane.zarr": "expected one single-channel z-stack",
        "rgb.zarr": "expected one single-channel z-stack",
        "thin.ome.zarr": "has 2 planes",
        "x.png": "unsupported whole-slide input",
        "missing.zarr": "no such file",
    }
    for name, problem in cases.items():
        with pytest.raises(InputError, match=problem) as error:
            open_stack(tmp_path / name, min_planes=4)
        assert error.value.path == str(tmp_path / name)


def test_whole_stack_percentiles_are_exact_as_in_memory(stack, monkeypatch):
    lazy = da.from_array(stack, chunks=(9, 32, 32))
    lo, hi = stack_range(lazy, 0.5, 99.5)  # every voxel, as RobustNormalised
    expected = RobustNormalised("image")({"image": torch.as_tensor(stack[None].astype(np.float32))})["image"]
    assert (expected.min().item(), expected.max().item()) != (-1.0, 1.0)  # outliers lie beyond the percentiles
    np.testing.assert_allclose(
        RobustNormalised("image", intensity_range=(lo, hi))({"image": torch.as_tensor(stack[None] * 1.0)})["image"],
        expected,
        atol=1e-5,
    )
    with pytest.raises(InputError, match="constant intensity"):
        stack_range(da.ones((4, 64, 64)), 0.5, 99.5, "flat.zarr")
    # beyond 4 M voxels (where both paths took a subsample, each its own): still the same, for 8-bit data (one
    # pass), 16-bit and floats, of which the histogram's bins are narrowed (here down to 7 voxels a bin)
    rng = np.random.default_rng(1)
    shape = (21, 500, 500)
    monkeypatch.setattr(wholeslide, "RANGE_GATHER", 7)
    for values in (
        rng.integers(0, 256, shape, dtype=np.uint8),
        rng.integers(0, 60000, shape).astype(np.uint16),
        rng.normal(0, 100, shape).astype(np.float32),
    ):
        in_memory_range = percentile_range(values, 0.5, 99.5)
        assert stack_range(da.from_array(values, chunks=(7, 128, 128)), 0.5, 99.5) == pytest.approx(in_memory_range)
    small = rng.normal(0, 1e3, (9, 50, 50))  # float64: exact on its own values
    assert stack_range(da.from_array(small, chunks=(3, 16, 16)), 1, 99) == pytest.approx(
        np.quantile(small, [0.01, 0.99])
    )


# ----------------------------------------------------------------------------- seamless tiles


def test_tiles_follow_the_sliding_window_grid():
    # window 32, overlap 0.25: step 24, tiles of 48, windows overhang 8; the last 4 pixels join a tile
    assert aligned_tiling((-1, 32, 32), 0.25, 32, (9, 100, 90)) == (((48, 52), (48, 42)), (8, 8))
    assert aligned_tiling((-1, 32, 32), 0.5, 32, (9, 100, 96)) == (((32, 32, 36), (32, 32, 32)), (16, 16))
    tiles, overhangs = aligned_tiling((-1, 128, 128), 0.25, 1000, (29, 9000, 1096))
    assert tiles == ((1056,) * 8 + (552,), (1096,)) and overhangs == (32, 32)  # a 40-pixel tile joins
    # overlap 0.75: step 32, overhang 96: tiles at least that long, so windows overhang the next tile only;
    # a last tile shorter than the window joins the one before, as often as needed (96+96+96+12: 96+204)
    assert aligned_tiling((-1, 128, 128), 0.75, 16, (29, 300, 300)) == (((96, 204),) * 2, (96, 96))
    assert aligned_tiling((-1, 128, 128), 0.25, 1024, (29, 100, 100)) == (((100,), (100,)), (0, 0))


def test_window_weights_are_what_monais_sliding_window_divides_by():
    sw = SlidingWindowInferer(roi_size=(-1, 32, 32), sw_batch_size=3, overlap=0.25, mode="gaussian", with_coord=True)
    importance = compute_importance_map((9, 32, 32), "gaussian", 0.125).numpy()
    for shape in [(9, 70, 100), (9, 20, 50)]:  # 20 < 32: MONAI pads the region in y, centred
        windows = []  # where MONAI's sliding window really places its windows (in the padded region)
        sw(torch.zeros(1, 1, *shape), lambda x, coords, windows=windows: windows.extend(coords) or x)
        padded = [shape[0], max(shape[1], 32), max(shape[2], 32)]
        expected = np.zeros(padded, np.float32)
        for window in windows:
            expected[tuple(window[2:])] += importance
        start = [(m - n) // 2 for m, n in zip(padded, shape, strict=False)]
        expected = expected[tuple(slice(a, a + n) for a, n in zip(start, shape, strict=False))]
        assert len(windows) > 1 and expected.min() < expected.max()
        region = ((0, 9), (3, 3 + shape[1]), (5, 5 + shape[2]))  # the region's place in a stack
        box = ((0, 9), (10, 3 + shape[1]), (5, 41))  # a part of it
        np.testing.assert_allclose(wholeslide.window_weights(region, sw, box), expected[:, 7:, :36], rtol=1e-6)


class CountingWindows(torch.nn.Module):
    """``network``, counting the windows it is run on."""

    def __init__(self, network):
        super().__init__()
        self.network, self.windows = network, 0

    def forward(self, x):
        self.windows += x.shape[0]
        return self.network(x)


# a step that is no divisor of the window (0.3: 22 of 32), a stack lower than the window (padded in y), and an
# overlap in pixels (scripts.inference.sliding_window.window_overlap): one fraction per axis
@pytest.mark.parametrize(
    "overlap, height, width",
    [
        (0.25, 100, 100),
        (0.25, 100, 90),
        (0.5, 100, 100),
        (0.3, 100, 100),
        (0.25, 20, 100),
        ((0.25, 0.3125, 0.375), 100, 100),
    ],
)
def test_tiles_enhance_exactly_as_the_in_memory_sliding_window(network, stack, overlap, height, width):
    stack = stack[:, :height, :width]
    whole = CountingWindows(network)
    expected = enhance(whole, stack, inferer(overlap), RobustNormalised("image"))
    lazy = da.from_array(stack)
    intensity_range = stack_range(lazy, 0.5, 99.5)
    tiles, overhangs = aligned_tiling((-1, 32, 32), overlap, 32, stack.shape)
    tiled = CountingWindows(network)
    out = enhance_lazily(tiled, lazy, inferer(overlap), intensity_range, tiles, overhangs)
    assert out.numblocks[1] * out.numblocks[2] >= (2 if height < 32 else 4)  # several tiles
    # each tile reads its own input inside its task: no input chunk in the graph, so none shared between
    # tiles and kept in memory for a neighbour (what made memory grow with the slide's width)
    assert not [k for k in dict(out.__dask_graph__()) if lazy.name in str(k)]
    # the network is one node that every tile's task shares: sent once to each worker of a cluster
    assert len([k for k in dict(out.__dask_graph__()) if str(k).startswith("g_s-")]) == 1
    scale = expected.max() - expected.min()
    assert np.abs(out.compute(scheduler="sync") - expected).max() <= 1e-4 * scale
    assert tiled.windows == whole.windows  # each window run once, by one tile
    # tiles off the window grid: windows elsewhere, which G_S's instance norms show as seams
    if (overlap, height, width) == (0.25, 100, 100):
        seams = enhance_lazily(network, lazy, inferer(overlap), intensity_range, ((50, 50), (50, 50)), overhangs)
        assert np.abs(seams.compute(scheduler="sync") - expected).max() > 0.01 * scale


def test_halo_tiles_of_a_batch_norm_g_s_give_one_window_over_the_whole_odd_sized_slide(stack, tmp_path):
    """Issue 17, ``--sw_tiling halo``: each tile reads its halo on the whole stack's stride lattice (edge-padded
    at the border as G_S pads the whole stack), so tiles of odd sizes, off the windows, give one window's output
    over the whole field for a window-independent G_S, through enhance_slide too (written in the input dtype)."""
    torch.manual_seed(0)
    g_s = Generator3D(channels=4, n_residual_blocks=1, norm="batch", upsampling="pixelshuffle")
    with torch.no_grad():
        g_s(torch.randn(1, 1, 8, 48, 48))  # running statistics; its reach is 25 px
    g_s.eval()
    stack = stack[:, :99, :97]  # neither a multiple of G_S's stride 4
    lazy = da.from_array(stack)
    intensity_range = stack_range(lazy, 0.5, 99.5)
    normalise = RobustNormalised("image", intensity_range=intensity_range)
    whole = enhance(g_s, stack, SimpleInferer(), normalise)
    halo = HaloInferer((-1, 64, 64), 28, 4, sw_batch_size=2)
    assert halo_tiling(30, stack.shape) == ((32, 32, 32, 3), (32, 32, 32, 1))
    # tiles of whole windows: 256-px windows with a 32-px halo step by 192, so 1024 becomes 1152 (six windows)
    assert halo_steps(HaloInferer((-1, 256, 256), 32, 4)) == (192, 192) and halo_steps(halo) == (8, 8)
    assert halo_tiling(1024, (29, 2048, 2000), 4, (192, 192)) == ((1152, 896), (1152, 848))
    tiled = enhance_lazily_halo(g_s, lazy, halo, intensity_range, halo_tiling(30, stack.shape))
    assert tiled.numblocks == (1, 4, 4)
    np.testing.assert_allclose(tiled.compute(scheduler="sync"), whole, rtol=1e-5, atol=1e-5 * np.ptp(whole))
    np.testing.assert_allclose(enhance(g_s, stack, halo, normalise), whole, rtol=1e-5, atol=1e-5 * np.ptp(whole))
    source = write_ome_zarr(tmp_path / "slide.ome.zarr", stack)
    out = enhance_slide(g_s, source, tmp_path / "out.ome.zarr", halo, tile_size=40)
    run = json.loads((out / ".zsegan" / "run.json").read_text())
    assert (run["tiling"], run["halo"], run["tiles"]) == ("halo", 28, [[40, 40, 19], [40, 40, 17]])
    written = np.asarray(zarr.open_array(str(out / "0"), mode="r"))
    assert np.abs(written.astype(np.float64) - cast_to(whole, "uint16")).max() <= 1


def test_memory_holds_the_tiles_in_flight_whatever_the_number_of_tiles(network, tmp_path, monkeypatch):
    """A tile's values wait in memory only until the windows of the tiles before it are added in: with one
    tile in flight, dask's order keeps one tile's values at a time, over 5 x 5 tiles."""
    events = []  # +1: a tile's windows run (its values held), -1: the tile finished (let go once written)
    for name, step in (("_tile_windows", 1), ("_finish_tile", -1)):
        run = getattr(wholeslide, name)
        monkeypatch.setattr(wholeslide, name, lambda *a, run=run, step=step: (run(*a), events.append(step))[0])
    monkeypatch.setattr(wholeslide, "LOCAL_THREADS", 1)
    stack = np.random.default_rng(1).integers(0, 256, (9, 150, 150), dtype=np.uint8)
    source = write_ome_zarr(tmp_path / "slide.ome.zarr", stack)
    out = enhance_slide(network, source, tmp_path / "out.ome.zarr", inferer(), tile_size=24)
    assert json.loads((out / ".zsegan" / "run.json").read_text())["tiles"] == [[24] * 4 + [54]] * 2
    assert events.count(1) == events.count(-1) == 25 and np.cumsum(events).max() == 1


def test_whole_slide_output_is_ome_zarr_with_metadata_and_seamless(network, stack, tmp_path):
    source = write_ome_zarr(tmp_path / "in" / "slide.ome.zarr", stack)
    before = tree_digest(source)
    out = enhance_slide(network, source, tmp_path / "out" / "slide_enhanced.ome.zarr", inferer(), tile_size=32)
    assert tree_digest(source) == before  # the input is never touched
    assert sorted(p.name for p in out.parent.iterdir()) == ["slide_enhanced.ome.zarr"]  # no partial left
    group = zarr.open_group(str(out), mode="r")
    (ms,) = group.attrs["multiscales"]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["type"] == "space" and a["unit"] == "micrometer" for a in ms["axes"])
    assert ms["datasets"] == [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(SPACING)}]}]
    assert group["0"].dtype == np.uint16 and group["0"].chunks == (1, 48, 48)
    result, meta = open_stack(out)  # our reader takes it back with its voxel size
    assert meta["spacing"] == SPACING and meta["unit"] == "um"
    expected = in_memory(network, stack).astype(np.float64)
    diff = np.abs(result.compute().astype(np.float64) - expected)
    scale = expected.max() - expected.min()
    assert diff.max() <= 0.01 * scale and diff.mean() <= 0.001 * scale  # the seamless target
    assert diff.max() <= 1  # in fact equal but for the rounding of equal floats

    # what napari opens it with (napari-ome-zarr reads through ome-zarr-py), and the spec's own models
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v04 import Image

    (node,) = Reader(parse_url(str(out)))()
    np.testing.assert_array_equal(node.data[0].compute(), result.compute())
    assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]
    assert node.metadata["coordinateTransformations"] == [[{"type": "scale", "scale": list(SPACING)}]]
    image = Image.from_zarr(group)  # raises if the metadata break NGFF 0.4
    assert [a.unit for a in image.attributes.multiscales[0].axes] == ["micrometer"] * 3

    tiff = wholeslide.write_ome_tiff(out, tmp_path / "slide_enhanced.ome.tif", tile=80)  # tiles cut at the edges
    array, meta = read_stack(tiff)
    np.testing.assert_array_equal(array, result.compute())
    assert meta["spacing"] == pytest.approx(SPACING) and meta["unit"] == "um"


def test_a_compiled_network_is_compiled_once_before_the_tiles(network, stack, tmp_path, monkeypatch):
    from scripts.inference.sliding_window import Accelerated

    events = []
    fast = Accelerated(network)  # uncompiled: the test only watches the order of events
    monkeypatch.setattr(fast, "warm_up", lambda shape, device: events.append(("warm_up", shape)))
    monkeypatch.setattr(wholeslide._Region, "read", lambda self: events.append("read") or np.asarray(self.stack))
    source = write_ome_zarr(tmp_path / "slide.ome.zarr", stack)
    enhance_slide(fast, source, tmp_path / "out.ome.zarr", inferer(), tile_size=48)
    assert events == [("warm_up", (4, 1, 9, 32, 32))] + ["read"] * 4  # sw_batch_size windows of the roi


# ----------------------------------------------------------------------------- resume


def test_an_interrupted_run_resumes_with_the_chunks_not_yet_written(network, stack, tmp_path, monkeypatch):
    source = write_ome_zarr(tmp_path / "slide.ome.zarr", stack)
    out = tmp_path / "out" / "slide_enhanced.ome.zarr"
    partial = out.with_name(".slide_enhanced.ome.zarr.partial")
    write = wholeslide._write_block
    written: list[str] = []

    def crash_after_two(block, array_path, region, dtype, marker):
        if len(written) == 2:
            raise KeyboardInterrupt("the machine goes away")
        written.append(marker)
        return write(block, array_path, region, dtype, marker)

    monkeypatch.setattr(wholeslide, "_write_block", crash_after_two)
    # one tile at a time: with two, the other tile's write may still be under way when the crash is raised
    monkeypatch.setattr(wholeslide, "LOCAL_THREADS", 1)
    with pytest.raises(KeyboardInterrupt):
        enhance_slide(network, source, out, inferer(), tile_size=48)
    assert not out.exists() and len(list((partial / ".zsegan" / "done").iterdir())) == 2
    with pytest.raises(InputError, match="partial output of an interrupted whole-slide run"):
        open_stack(partial)  # never mistaken for a finished output
    with pytest.raises(InputError, match="another input, weights or settings"):
        enhance_slide(network, source, out, inferer(0.5), tile_size=48)

    written.clear()
    monkeypatch.setattr(wholeslide, "_write_block", lambda *a: (written.append(a[-1]), write(*a))[1])
    enhance_slide(network, source, out, inferer(), tile_size=48)  # the same command again
    assert len(written) == 2 and not partial.exists()  # only the 2 chunks left of 4
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"), mode="r")[:], in_memory(network, stack))
    written.clear()
    enhance_slide(network, source, out, inferer(), tile_size=48)  # complete: kept as it is
    assert written == []
    with pytest.raises(InputError, match="holds another result"):
        enhance_slide(network, source, out, inferer(), tile_size=96)


def test_a_run_stopped_while_finishing_is_finished_by_the_next(network, stack, tmp_path, monkeypatch):
    """Killed between the last tile and the end: before the rename (the partial output is complete) or
    after it (the done-markers not yet removed), the same command finishes, never stuck."""
    source = write_ome_zarr(tmp_path / "slide.ome.zarr", stack)
    out = tmp_path / "out" / "slide_enhanced.ome.zarr"
    replace, rmtree = wholeslide.os.replace, wholeslide.shutil.rmtree

    def killed_at_rename(src, dst):
        if Path(dst) == out:
            raise KeyboardInterrupt("killed")
        replace(src, dst)

    monkeypatch.setattr(wholeslide.os, "replace", killed_at_rename)
    with pytest.raises(KeyboardInterrupt):
        enhance_slide(network, source, out, inferer(), tile_size=48)
    monkeypatch.setattr(wholeslide.os, "replace", replace)
    monkeypatch.setattr(
        wholeslide.shutil, "rmtree", lambda p, **kw: (_ for _ in ()).throw(KeyboardInterrupt("killed"))
    )  # killed after the rename, at the clean-up
    with pytest.raises(KeyboardInterrupt):
        enhance_slide(network, source, out, inferer(), tile_size=48)
    assert (out / ".zsegan" / "done").is_dir()
    monkeypatch.setattr(wholeslide.shutil, "rmtree", rmtree)
    assert enhance_slide(network, source, out, inferer(), tile_size=48) == out  # complete: cleaned, kept
    assert not (out / ".zsegan" / "done").exists()
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"), mode="r")[:], in_memory(network, stack))


def test_every_slide_is_checked_before_the_first_output_is_written(network, stack, tmp_path):
    inputs = tmp_path / "in"
    write_ome_zarr(inputs / "a_good.ome.zarr", stack)
    write_ome_zarr(inputs / "b_const.ome.zarr", np.full_like(stack, 7))
    write_ome_zarr(inputs / "c_good.ome.zarr", stack)
    with pytest.raises(InputError, match="constant intensity") as error:
        wholeslide.enhance_slides(network, inputs, tmp_path / "out", inferer(), tile_size=48)
    assert error.value.path == str(inputs / "b_const.ome.zarr") and not (tmp_path / "out").exists()


def test_an_output_folder_that_is_the_input_folder_is_not_enhanced_again(network, stack, tmp_path):
    folder = tmp_path / "slides"
    write_ome_zarr(folder / "slide.ome.zarr", stack)
    for _ in range(2):
        wholeslide.enhance_slides(network, folder, folder, inferer(), tile_size=48, output_format="ome-tiff")
    assert sorted(p.name for p in folder.iterdir()) == [
        ".zsegan.lock", "slide.ome.zarr", "slide_enhanced.ome.tif", "slide_enhanced.ome.zarr"
    ]  # fmt: skip


# ----------------------------------------------------------------------------- bad values


def test_bool_and_complex_slides_are_refused_before_anything_is_read(tmp_path):
    for dtype in (bool, np.complex64):
        path = tmp_path / f"{np.dtype(dtype).name}.zarr"
        zarr.save_array(str(path), np.zeros((4, 32, 32), dtype))
        with pytest.raises(InputError, match=f"dtype {np.dtype(dtype).name} is not supported") as error:
            open_stack(path)
        assert error.value.path == str(path)


def test_nan_inf_and_values_beyond_float32_are_refused_before_anything_is_written(network, stack, tmp_path):
    for name, value, problem in (("nan", np.nan, "1 NaN / 0 Inf"), ("inf", -np.inf, "0 NaN / 1 Inf"),
                                 ("huge", 1e39, "beyond float32's range")):  # fmt: skip
        bad = stack.astype(np.float64)
        bad[4, 90, 91] = value
        source = write_ome_zarr(tmp_path / "in" / f"{name}.ome.zarr", bad)
        with pytest.raises(InputError, match=problem) as error:
            wholeslide.enhance_slides(network, source, tmp_path / "out", inferer(), tile_size=48)
        assert error.value.path == str(source)
    assert not (tmp_path / "out").exists()  # nothing written


def test_nan_in_a_tile_stops_the_run_before_the_tile_is_written(network, stack, tmp_path, monkeypatch):
    """Each tile's input is checked as it is read too: here the intensity range is given (so the whole stack is
    not read first). The tiles written stay; with the NaN fixed, the same command finishes the run."""
    monkeypatch.setattr(wholeslide, "LOCAL_THREADS", 1)
    bad = stack.astype(np.float32)
    intensity_range = stack_range(da.from_array(bad), 0.5, 99.5)
    bad[4, 90, 91] = np.nan
    source = write_ome_zarr(tmp_path / "slide.ome.zarr", bad)
    out = tmp_path / "out" / "slide_enhanced.ome.zarr"
    with pytest.raises(InputError, match=r"1 NaN / 0 Inf values in the tile at y 48\.\.100, x 48\.\.100"):
        enhance_slide(network, source, out, inferer(), tile_size=48, intensity_range=intensity_range)
    partial = wholeslide._partial_path(out)
    assert not out.exists() and (partial / ".zsegan" / "run.json").exists()
    written = zarr.open_array(str(partial / "0"), mode="r")
    for marker in (partial / ".zsegan" / "done").iterdir():  # the tiles written hold no NaN
        i, j = (int(n) for n in marker.name.split("."))
        assert np.isfinite(written[:, 48 * i : 48 * i + 48, 48 * j : 48 * j + 48]).all()
    zarr.open_array(str(source / "0"), mode="r+")[4, 90, 91] = 100.0
    enhance_slide(network, source, out, inferer(), tile_size=48)  # the same command, after the fix
    assert np.isfinite(zarr.open_array(str(out / "0"), mode="r")[:]).all()


# ----------------------------------------------------------------------------- Dask cluster and CLI


@pytest.mark.slow
def test_a_local_dask_cluster_gives_the_local_result(network, stack, tmp_path):
    distributed = pytest.importorskip("distributed")
    source = tmp_path / "slide.ome.tif"  # a TIFF: read on the workers by path, no open file sent
    write_stack(source, stack, {"format": "tiff", "dtype": "uint16", "spacing": SPACING, "unit": "um"})
    local = enhance_slide(network, source, tmp_path / "local.ome.zarr", inferer(), tile_size=48)
    with distributed.LocalCluster(
        n_workers=2, processes=True, host="127.0.0.1", threads_per_worker=1, dashboard_address=None
    ) as cluster:
        remote = enhance_slide(
            network, source, tmp_path / "remote.ome.zarr", inferer(), tile_size=48,
            scheduler_address=cluster.scheduler_address,
        )  # fmt: skip
        with distributed.Client(cluster) as client:  # workers import `scripts` from the uploaded package
            paths = client.run(lambda: [p for p in sys.path if p.endswith("zsegan_scripts.zip")])
        assert len(paths) == 2 and all(len(p) == 1 for p in paths.values())
    assert sys.modules["scripts"].__file__.startswith(str(ROOT)), "the scheduler (this process) keeps its `scripts`"
    assert not [p for p in sys.path if "zsegan_scripts" in p]
    np.testing.assert_array_equal(zarr.open_array(str(remote / "0"))[:], zarr.open_array(str(local / "0"))[:])
    assert json.loads((remote / ".zsegan" / "run.json").read_text())["tiles"] == [[48, 52], [48, 52]]


@pytest.mark.slow
def test_bundle_cli_enhances_a_whole_slide(guided, stack, tmp_path):
    torch.save(guided.state_dict(), tmp_path / "model.pt")
    source = write_ome_zarr(tmp_path / "in" / "slide.ome.zarr", stack)
    configs = [str(ROOT / "bundle" / "configs" / f) for f in ("inference.yaml", "inference_wholeslide.yaml")]
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", str(configs),
        "--input_path", str(source.parent), "--output_dir", str(tmp_path / "out"),
        "--model_path", str(tmp_path / "model.pt"), "--g_channels", "4", "--g_residual_blocks", "1",
        "--g_upsampling", "transpose", "--g_residual", "False", "--g_focal_skip", "False",  # the fixture's layout
        "--g_focal_gate", "False", "--sw_roi_size", "[-1, 32, 32]", "--sw_overlap_px", "8", "--sw_batch_size", "4",
        "--tile_size", "32",  # blend (whole slides' default) with overlap 0.25, as in_memory
        "--output_format", "ome-tiff",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vox/s" in result.stderr  # progress with the rate (and ETA)
    out = zarr.open_array(str(tmp_path / "out" / "slide_enhanced.ome.zarr" / "0"), mode="r")[:]
    run = json.loads((tmp_path / "out" / "slide_enhanced.ome.zarr" / ".zsegan" / "run.json").read_text())
    assert run["precision"] == "float32"
    # G_S compiled (inference_wholeslide.yaml): equal to the uncompiled in-memory result but for the rounding
    diff = np.abs(out.astype(np.int64) - in_memory(guided, stack))  # every tile borrowed the slide's focal plane
    assert diff.max() <= 1 and diff.mean() < 0.01 and run["focal_plane"] == stack_focal_plane(da.from_array(stack))
    tiff, meta = read_stack(tmp_path / "out" / "slide_enhanced.ome.tif")  # OME-TIFF on request, from the OME-Zarr
    np.testing.assert_array_equal(tiff, out)
    assert meta["spacing"] == pytest.approx(SPACING) and meta["unit"] == "um" and meta["dtype"] == "uint16"

    bad = subprocess.run([*cmd[:-2], "--tile_sise", "32"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown config key '--tile_sise'" in bad.stderr


@pytest.mark.slow
def test_bundle_cli_refuses_a_slide_with_nan_in_one_line(guided, stack, tmp_path):
    torch.save(guided.state_dict(), tmp_path / "model.pt")
    bad = stack.astype(np.float32)
    bad[4, 40:50, 40:50] = np.nan  # one patch: every output voxel would be NaN
    source = write_ome_zarr(tmp_path / "in" / "slide.ome.zarr", bad)
    configs = [str(ROOT / "bundle" / "configs" / f) for f in ("inference.yaml", "inference_wholeslide.yaml")]
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", str(configs),
        "--input_path", str(source), "--output_dir", str(tmp_path / "out"), "--model_path", str(tmp_path / "model.pt"),
        "--g_channels", "4", "--g_residual_blocks", "1", "--g_upsampling", "transpose", "--g_residual", "False",
        "--g_focal_skip", "False", "--g_focal_gate", "False", "--sw_roi_size", "[-1, 32, 32]", "--sw_overlap_px", "16",
        "--tile_size", "32",
        "--compile", "False",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [line for line in result.stderr.splitlines() if line.startswith("error: ")] == [
        f"error: {source}: contains 100 NaN / 0 Inf values: replace them (e.g. by 0) before running"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_slide_beyond_4_million_voxels_enhances_as_in_memory(network, tmp_path):
    """Both paths take exact percentiles over every voxel (they once took different subsamples beyond 4 M)."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:480, :480]
    base = 150 + 40 * np.sin(xx / 9.0) * np.cos(yy / 13.0) - 60 * (yy % 2)  # odd rows darker: a subsample of
    stack = np.clip(base[None] + rng.normal(0, 15, (21, 480, 480)), 0, 255).astype(np.uint8)  # rows misses them
    window = SlidingWindowInferer(roi_size=(-1, 96, 96), sw_batch_size=4, overlap=0.25, mode="gaussian")
    source = write_ome_zarr(tmp_path / "big.ome.zarr", stack, chunks=(7, 128, 128))
    out = enhance_slide(network, source, tmp_path / "big_enhanced.ome.zarr", window, tile_size=192)
    expected = cast_to(enhance(network, stack, window, RobustNormalised("image")), "uint8")
    diff = np.abs(zarr.open_array(str(out / "0"), mode="r")[:].astype(int) - expected)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999  # the same but for float rounding at .5
