"""A focus-guided G_S (``--g_focus_guide true``) borrows one focal plane per stack, found over the whole field,
whatever the windows and tiles: in memory (blend and halo), on whole slides, and in a batch of stacks."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr
from scripts.data.io import cast_to
from scripts.data.transforms import RobustNormalised
from scripts.errors import InputError
from scripts.inference.sliding_window import HaloInferer, SlidingWindow, enhance
from scripts.inference.wholeslide import (
    aligned_tiling,
    enhance_lazily,
    enhance_lazily_halo,
    enhance_slide,
    halo_tiling,
    stack_focal_plane,
    stack_range,
)
from scripts.nets.networks import Generator3D, focal_plane


def plane_of(array: np.ndarray) -> int:
    return int(focal_plane(torch.as_tensor(array, dtype=torch.float64)[None, None])[0])


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    """9x99x97 uint16 whose left part is sharpest at plane 2 and whose right part, and so the whole field, at
    plane 6: a window on the left alone would borrow another plane than the stack's."""
    rng = np.random.default_rng(1)
    amplitude = np.full((9, 1, 97), 60.0)
    amplitude[2, :, :64] = 300.0
    amplitude[6, :, 64:] = 500.0
    x = 2000 + amplitude * rng.standard_normal((9, 99, 97))
    return np.clip(x, 0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def g_s() -> Generator3D:
    """A window-independent (batch-norm, eval) focus-guided G_S, not the identity."""
    torch.manual_seed(0)
    net = Generator3D(channels=4, n_residual_blocks=1, norm="batch", upsampling="pixelshuffle", focus_guide=True)
    with torch.no_grad():
        net(torch.randn(1, 1, 9, 48, 48))  # running statistics
    return net.eval()


def test_the_stack_and_a_window_of_it_have_different_focal_planes(stack):
    assert (plane_of(stack), plane_of(stack[:, :64, :36])) == (6, 2)


def normalised(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(
        RobustNormalised("image")({"image": torch.as_tensor(array, dtype=torch.float32)[None]})["image"]
    )


def test_halo_windows_borrow_the_stacks_focal_plane_and_give_one_window_over_the_field(stack, g_s):
    x = normalised(stack)[None]
    halo = HaloInferer((-1, 64, 64), 28, 4, sw_batch_size=2)
    with torch.no_grad():
        whole = g_s(x)  # one window over the whole field: its focal plane is the stack's
        torch.testing.assert_close(halo(x, g_s), whole, rtol=1e-5, atol=1e-5)
        own = halo.windows(x, g_s)  # each window finding its own plane, as training's crops do
    assert (own - whole).abs().max() > 1e-2  # the left windows borrow plane 2: not the whole field's output


@pytest.mark.parametrize("gate", [False, True])
def test_a_focal_skip_g_s_tiles_exactly_too(stack, gate):
    """G_S = focal_transfer(x) + correction (--g_focal_skip true): its base blurs each plane's difference from the
    stack's focal plane, within the halo's reach, so halo tiling still equals one window over the field; so does
    the correction weighed per plane by its distance from that plane (--g_focal_gate true)."""
    torch.manual_seed(0)
    net = Generator3D(
        channels=4, n_residual_blocks=1, norm="batch", residual=True, focus_guide=True, focal_skip=True, focal_gate=gate
    )
    with torch.no_grad():
        [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)][-1].weight.normal_(0, 0.1)  # a correction, not 0
        net(torch.randn(1, 1, 9, 48, 48))  # running statistics
    net.eval()
    x = normalised(stack)[None]
    with torch.no_grad():
        whole = net(x)
        torch.testing.assert_close(
            HaloInferer((-1, 64, 64), 28, 4, sw_batch_size=2)(x, net), whole, rtol=1e-5, atol=1e-5
        )
        base = net.base(x, torch.tensor([6]))
    assert (whole - base).abs().max() > (2e-3 if gate else 1e-2) and (base - x).abs().max() > 1e-1  # both at work


def test_each_stack_of_a_batch_borrows_its_own_focal_plane(stack, g_s):
    pair = torch.stack([normalised(stack), normalised(stack[::-1].copy())])  # focal planes 6 and 2
    blend = SlidingWindow((-1, 32, 32), sw_batch_size=4, overlap=0.25, mode="gaussian")
    with torch.no_grad():
        together = blend(pair, g_s)
        alone = [blend(pair[i : i + 1], g_s) for i in range(2)]
        given = blend(pair[1:], g_s, focus=6)  # the first stack's plane handed to the second
    for i in range(2):
        torch.testing.assert_close(together[i : i + 1], alone[i])
    assert (given - alone[1]).abs().max() > 1e-2


def test_windows_that_do_not_hold_all_planes_are_refused_for_a_guided_g_s(stack, g_s):
    for inferer in (SlidingWindow((4, 32, 32), 1, 0.25), HaloInferer((-1, 64, 64), 28, 4)):
        inferer.roi_size = (4, 64, 64)
        with pytest.raises(InputError, match="focus-guided.*all 9 planes"):
            enhance(g_s, stack, inferer, RobustNormalised("image"))


@pytest.mark.parametrize("seed", range(12))
def test_a_whole_slides_focal_plane_is_the_in_memory_one_block_by_block(seed):
    """Independent noise planes differ in energy by a few per cent; leaving out the pairs of pixels across the
    blocks' borders (a fifth of them here) would move the argmax in many of these stacks."""
    rng = np.random.default_rng(seed)
    array = rng.standard_normal((7, 23, 31)).astype(np.float32)
    lazy = da.from_array(array, chunks=(7, (5, 5, 5, 7, 1), (9, 9, 9, 4)))
    assert stack_focal_plane(lazy) == plane_of(array)


@pytest.mark.parametrize("tiling", ["blend", "halo"])
def test_every_tile_of_a_whole_slide_borrows_the_slides_focal_plane(stack, g_s, tiling, tmp_path):
    """The slide's plane is found before its tiles (block by block), kept in the run's record, and every tile
    borrows it: the tiles give the in-memory result over the whole stack, where each tile alone would not."""
    lazy = da.from_array(stack, chunks=(9, 40, 40))
    intensity_range = stack_range(lazy, 0.5, 99.5)
    normalise = RobustNormalised("image", intensity_range=intensity_range)
    if tiling == "halo":
        inferer = HaloInferer((-1, 64, 64), 28, 4, sw_batch_size=2)
        chunks = halo_tiling(30, stack.shape)
        tiled = enhance_lazily_halo(g_s, lazy, inferer, intensity_range, chunks, focus=stack_focal_plane(lazy))
    else:
        inferer = SlidingWindow((-1, 32, 32), sw_batch_size=4, overlap=0.25, mode="gaussian")
        chunks, overhangs = aligned_tiling(inferer.roi_size, 0.25, 30, stack.shape)
        tiled = enhance_lazily(g_s, lazy, inferer, intensity_range, chunks, overhangs, focus=stack_focal_plane(lazy))
    whole = enhance(g_s, stack, inferer, normalise)
    np.testing.assert_allclose(tiled.compute(scheduler="sync"), whole, rtol=1e-5, atol=1e-5 * np.ptp(whole))
    source = tmp_path / "slide.tif"
    tifffile.imwrite(source, stack)
    out = enhance_slide(g_s, source, tmp_path / "out.ome.zarr", inferer, tile_size=40)
    assert json.loads((out / ".zsegan" / "run.json").read_text())["focal_plane"] == 6
    written = np.asarray(zarr.open_array(str(out / "0"), mode="r"))
    assert np.abs(written.astype(np.float64) - cast_to(whole, "uint16")).max() <= 1
    own = enhance_lazily_halo(
        g_s, lazy, HaloInferer((-1, 64, 64), 28, 4), intensity_range, halo_tiling(30, stack.shape)
    )
    assert np.abs(own.compute(scheduler="sync") - whole).max() > 1e-3 * np.ptp(whole)  # each tile its own plane
