"""Whole-slide enhancement: G_S's sliding window over a stack larger than memory, tile by tile with Dask.

Inputs are read lazily as ZYX dask arrays: OME-Zarr (NGFF: axes and voxel size from ``multiscales``, the first
dataset), a plain zarr array (taken as ZYX), or a large TIFF/OME-TIFF (tifffile's zarr store). Each xy tile
(full depth in z) is one Dask task: it reads its region and the overhang of the windows that start in it, runs
them by the same in-memory sliding window as ``scripts.inference.sliding_window.enhance``, and a second task
adds in the windows of the tiles before it that overhang it; then the tile is written to an OME-Zarr on its
own. Tiles share no input in Dask's graph, so memory is that of the tiles in flight (and of the thin overhang
sums waiting for the next row), whatever the slide's size. A network that compiles
(``scripts.inference.sliding_window.Accelerated``, as inference_wholeslide.yaml sets it) is compiled once
before the first tile is read.

Seamless by construction, and each window computed once: the intensity mapping uses the percentiles of
the whole stack (exact, a histogram streamed over every voxel: ``stack_range``), tiles follow the
sliding window's grid (``aligned_tiling``), each window is run whole by the one tile it starts in, and
where windows of neighbouring tiles overlap, their weighted sums and weights are added before dividing,
as MONAI's sliding window over the whole stack does. So the result is the in-memory one but for the order of float
additions. Cutting windows at tile borders instead shows seams: G_S's instance norm makes a window's
output depend on all of the window (with the shipped weights and a plain 64-pixel halo, tiles differed
by up to half the output range at their borders). Running every window that touches a tile within
that tile (a halo on the window grid) is exact too, but runs the windows across tile borders twice
(19% more windows with 1024-px tiles).

Output: OME-Zarr, NGFF 0.4 on zarr format 2 (axes z, y, x; unit micrometer; one dataset "0" with
a scale; chunks of one plane of a tile), which napari (napari-ome-zarr) and Fiji (N5 / OME-Zarr
readers, BigDataViewer, MoBIE) open, also in older installs: NGFF 0.5 (zarr 3) needs ome-zarr-py
0.12 (2025) under napari-ome-zarr and a recent n5-ij in Fiji, and Bio-Formats' converters still
write 0.4. The output is built in a hidden folder ``.<name>.partial`` beside it and renamed into
place once every tile is written, so the output path never holds a partial result.
``.zsegan/run.json`` records what is computed (input, weights, settings, intensity range) and
``.zsegan/done/<i>.<j>`` marks each tile written; the same command run again after an interruption
skips the tiles already done; a run stopped after its last tile, before or after the rename, is finished
by the next. OME-TIFF on request: written from the finished OME-Zarr, tile by tile.

``--sw_tiling halo`` (``scripts.inference.sliding_window.HaloInferer``, for a window-independent G_S,
``--g_norm batch``) tiles otherwise: tiles of ``tile_size`` on G_S's stride (``halo_tiling``) each read
their halo, on the stride lattice of the whole stack padded as G_S pads it (``enhance_lazily_halo``), and
keep only themselves: no sums to add between tiles, and the result is the in-memory HaloInferer's, which is
one window's over the whole field; windows across tile borders run for both tiles.

Bad values are refused, never written: the dtype (bool, complex) when the slide is opened; NaN, Inf and
float values beyond float32's range by the percentiles' pass over every voxel, before any output is made
(``enhance_slides`` takes every input's percentiles before the first output); and, should the input change
during a run (or the range be given), in each tile's input as the tile reads it, before anything computed
from it is written. A run stopped so keeps the tiles written: once the input is fixed, the same command
finishes it (or delete the ``.partial`` folder).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import tifffile
import torch
import zarr
from dask.callbacks import Callback
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers.utils import _get_scan_interval  # the step MONAI's sliding window takes (no public name)
from monai.utils import ensure_tuple_rep, fall_back_tuple
from numcodecs import Blosc
from scripts.data.atomic import atomic, hold_lock
from scripts.data.io import READ_ERRORS, cast_to, check_counts, check_dtype, check_values, tiff_spacing, um_per_unit
from scripts.data.transforms import RobustNormalised, check_range
from scripts.errors import InputError
from scripts.inference.sliding_window import HaloInferer, enhance, round_up, weights_digest, without_outputs
from scripts.nets.networks import box_smooth, focus_guided
from tqdm import tqdm

logger = logging.getLogger("zsegan")

SLIDE_SUFFIXES = (".zarr", ".tif", ".tiff")
_STATE = ".zsegan"
# tiles enhanced at once by local threads: two keep the cores busier than one, though torch already uses
# every core inside a tile (20% faster on 2 cores, docs/benchmarks.md); memory is about two tiles
LOCAL_THREADS = 2
RANGE_BINS = 1 << 16  # the exact percentiles' histogram: one bin per value of 8- and 16-bit data
RANGE_GATHER = 1 << 22  # voxels of a bin read and sorted at most, else its histogram is taken
_SIGN = np.uint64(1 << 63)


# ----------------------------------------------------------------------------- reading


def _zarr_stack(path: Path) -> tuple[Any, str, tuple[float, float, float] | None, str | None]:
    """The zarr array, its axes (lower case), (z, y, x) spacing and unit of an OME-Zarr or plain zarr."""
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:  # noqa: BLE001 - zarr raises many kinds for a folder that is not a zarr
        raise InputError(path, f"is not a zarr array or group ({type(e).__name__}: {e})") from e
    if isinstance(node, zarr.Array):
        return node, "zyx"[-node.ndim :] if node.ndim <= 3 else "?" * node.ndim, None, None
    attrs = dict(node.attrs)
    multiscales = attrs.get("ome", attrs).get("multiscales")  # NGFF 0.5 nests under "ome"
    if not multiscales:
        if (path / _STATE).exists():
            raise InputError(path, "is the partial output of an interrupted whole-slide run: run it again to finish")
        raise InputError(path, "is a zarr group without OME-NGFF 'multiscales' metadata: give the path of its array")
    ms = multiscales[0]
    axes = [a["name"].lower() if isinstance(a, dict) else str(a).lower() for a in ms.get("axes", ["z", "y", "x"])]
    dataset = ms["datasets"][0]
    scale = np.ones(len(axes))
    for transforms in (dataset.get("coordinateTransformations", []), ms.get("coordinateTransformations", [])):
        for t in transforms:
            if t.get("type") == "scale" and "scale" in t:
                scale = scale * np.asarray(t["scale"], dtype=float)
    units = {a["name"].lower(): a.get("unit") for a in ms.get("axes", []) if isinstance(a, dict)}
    factors = [um_per_unit(units.get(a)) for a in "zyx"]
    spacing = tuple(float(scale[axes.index(a)]) if a in axes else math.nan for a in "zyx")
    if all(f is not None for f in factors):
        spacing, unit = tuple(s * f for s, f in zip(spacing, factors, strict=True)), "um"
    else:
        unit = None
    return node[dataset["path"]], "".join(axes), spacing, unit  # type: ignore[return-value]


class _LazyTiff:
    """A TIFF's first series (full resolution) as an array that opens the file for each read, through
    tifffile's zarr store: nothing held open, so Dask can send it to other processes and machines."""

    def __init__(self, path: Path):
        self.path = str(path)
        with self._open() as array:
            self.shape, self.dtype, self.chunks = array.shape, array.dtype, array.chunks
        self.ndim = len(self.shape)

    @contextmanager
    def _open(self):
        store = tifffile.imread(self.path, aszarr=True)
        try:
            array = zarr.open(store, mode="r")
            yield array["0"] if isinstance(array, zarr.Group) else array  # pyramidal TIFF: full resolution
        finally:
            store.close()

    def __getitem__(self, key):
        with self._open() as array:
            return array[key]


def open_stack(path: str | os.PathLike, min_planes: int = 1) -> tuple[da.Array, dict]:
    """A large z-stack as a lazy ZYX dask array (nothing read yet) and meta as ``scripts.data.io.read_stack``'s
    (``format`` "zarr" or "tiff", ``axes`` the file's own, ``dtype``, ``spacing`` (z, y, x) um, ``unit``)."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder: check the path")
    if p.is_dir():
        array, axes, spacing, unit = _zarr_stack(p)
        fmt = "zarr"
    else:
        if not p.name.lower().endswith((".tif", ".tiff")):
            raise InputError(p, "unsupported whole-slide input: use an OME-Zarr/zarr folder or a TIFF/OME-TIFF")
        try:
            with tifffile.TiffFile(p) as tif:
                axes, (spacing, unit) = tif.series[0].axes.lower(), tiff_spacing(tif)
            array = _LazyTiff(p)
        except READ_ERRORS as e:
            raise InputError(p, f"cannot read as TIFF ({e})") from e
        fmt = "tiff"
    if fmt == "zarr":
        stack = da.from_zarr(array)
    else:  # reads of whole TIFF tiles or strips, about 1024 x 1024 or more: fewer opens of the file
        chunks = [c if i < array.ndim - 2 else min(n, math.ceil(1024 / c) * c) for i, (c, n) in enumerate(
            zip(array.chunks, array.shape, strict=True))]  # fmt: skip
        stack = da.from_array(array, chunks=tuple(chunks), asarray=True)
    keep = [i for i, (n, a) in enumerate(zip(stack.shape, axes, strict=True)) if n > 1 or a in "yx"]
    if len(keep) != 3 or [axes[i] for i in keep][-2:] != ["y", "x"]:
        raise InputError(p, f"has shape {stack.shape} (axes {axes}): expected one single-channel z-stack (Z, Y, X)")
    stack = stack.reshape([stack.shape[i] for i in keep])
    check_dtype(p, stack.dtype)  # the values themselves are checked as they are read, tile by tile
    if stack.shape[0] < min_planes:
        raise InputError(p, f"has {stack.shape[0]} planes; the network needs at least {min_planes}")
    meta = {"filename_or_obj": str(p), "format": fmt, "axes": axes, "dtype": str(stack.dtype)}
    return stack, {**meta, "spacing": spacing, "unit": unit}


def _keys(values: np.ndarray) -> np.ndarray:
    """Each value as a uint64 that sorts as the values do (integers offset, floats by their IEEE-754 bits)."""
    if values.dtype.kind == "u":
        return values.astype(np.uint64).ravel()
    if values.dtype.kind == "i":
        return values.astype(np.int64).ravel().view(np.uint64) ^ _SIGN
    bits = (values.astype(np.float64).ravel() + 0.0).view(np.uint64)  # + 0.0: -0.0 is 0.0
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def _value(key: int, dtype: np.dtype) -> float:
    """The value of a ``_keys`` key."""
    if dtype.kind == "u":
        return float(key)
    if dtype.kind == "i":
        return float(key - (1 << 63))
    bits = key ^ (1 << 63) if key >> 63 else ~key & ((1 << 64) - 1)
    return float(np.array(bits, np.uint64).view(np.float64))


def _key_histogram(block: np.ndarray, first: int, last: int, width: int, bins: int) -> np.ndarray:
    """How many of ``block``'s keys in [first, last] fall in each of ``bins`` bins of ``width`` keys, as a
    1x1x1xbins block."""
    keys = _keys_within(block, first, last)
    counts = np.bincount(((keys - np.uint64(first)) // np.uint64(width)).astype(np.int64), minlength=bins)
    return counts.reshape(1, 1, 1, bins)


def _keys_within(block: np.ndarray, first: int, last: int) -> np.ndarray:
    keys = _keys(block)
    return keys[(keys >= first) & (keys <= last)]


def _ranked_keys(stack: da.Array, ranks, first: int, last: int) -> dict[int, int]:
    """The keys of ``stack``'s voxels at the 0-based ``ranks`` (all keys within [first, last]), exactly: a
    histogram of ``RANGE_BINS`` bins, narrowed to the bin holding each rank until a bin is one key wide or
    holds at most ``RANGE_GATHER`` voxels, which are then read and sorted. 8- and 16-bit data take one pass."""
    found: dict[int, int] = {}
    windows = {r: (first, last, 0) for r in ranks}  # rank -> keys [first, last] holding it, voxels below first
    while windows:
        gather = {}
        for window in sorted(set(windows.values())):
            a, b, below = window
            width = -(-(b - a + 1) // RANGE_BINS)  # ceil: bins of whole keys
            bins = -(-(b - a + 1) // width)
            counts = stack.map_blocks(
                _key_histogram, a, b, width, bins, chunks=(1, 1, 1, bins), new_axis=3, dtype=np.int64
            )
            cumulative = np.cumsum(counts.sum(axis=(0, 1, 2)).compute(scheduler="threads"))
            for rank in [r for r, w in windows.items() if w == window]:
                j = int(np.searchsorted(cumulative, rank - below, side="right"))
                narrowed = (a + j * width, min(a + (j + 1) * width - 1, b), below + int(cumulative[j - 1] if j else 0))
                del windows[rank]
                if width == 1:
                    found[rank] = narrowed[0]
                elif cumulative[j] - (cumulative[j - 1] if j else 0) <= RANGE_GATHER:
                    gather[rank] = narrowed
                else:
                    windows[rank] = narrowed
        for window in sorted(set(gather.values())):  # one read of the voxels of each such bin
            a, b, below = window
            blocks = [dask.delayed(_keys_within)(block, a, b) for block in stack.to_delayed().ravel()]
            keys = np.sort(np.concatenate(dask.compute(*blocks, scheduler="threads")))
            found.update({r: int(keys[r - below]) for r, w in gather.items() if w == window})
    return found


def stack_range(stack: da.Array, lower: float, upper: float, name: str = "<in memory>") -> tuple[float, float]:
    """(lo, hi): the ``lower``/``upper`` percentiles of every voxel of the ZYX stack, exact (linear interpolation
    between order statistics, as ``scripts.data.transforms.percentile_range`` of the stack in memory), streamed
    block by block: memory bounded by the blocks in flight. The values are checked on the way
    (``scripts.data.io.check_values``): NaN, Inf and values beyond float32 are refused before anything is
    written. 8- and 16-bit data take one read of the stack, others two to four."""
    dtype = np.dtype(stack.dtype)
    check_dtype(name, dtype)
    if dtype.kind == "f":
        n_nan, n_inf, low, high = dask.compute(
            da.isnan(stack).sum(), da.isinf(stack).sum(), stack.min(), stack.max(), scheduler="threads"
        )
        check_counts(name, int(n_nan), int(n_inf), max(abs(float(low)), abs(float(high))))
    else:
        low, high = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.itemsize <= 2 else dask.compute(
            stack.min(), stack.max(), scheduler="threads")  # fmt: skip
    first, last = (int(_keys(np.array([v], dtype))[0]) for v in (low, high))  # every key lies within
    positions = [q / 100.0 * (stack.size - 1) for q in (lower, upper)]
    ranks = sorted({r for p in positions for r in (math.floor(p), min(math.floor(p) + 1, stack.size - 1))})
    values = {r: _value(k, dtype) for r, k in _ranked_keys(stack, ranks, first, last).items()}
    lo, hi = (values[math.floor(p)] + (p - math.floor(p)) * (values[min(math.floor(p) + 1, stack.size - 1)]
              - values[math.floor(p)]) for p in positions)  # fmt: skip
    return check_range(lo, hi, name)


def _smoothed(block: np.ndarray) -> np.ndarray:
    return box_smooth(torch.from_numpy(block)).numpy()


def stack_focal_plane(stack: da.Array) -> int:
    """The focal plane of a ZYX dask stack over its whole field, as :func:`~scripts.nets.networks.focal_plane`
    finds it for a stack in memory (the intensity mapping scales every plane alike and changes nothing), streamed
    block by block: each block's 3x3 smoothing reads a pixel of its neighbours. For a focus-guided G_S, whose
    tiles must all borrow the same plane (:class:`~scripts.inference.sliding_window.SlidingWindow`). It reads the
    stack once more, after :func:`stack_range`'s pass (a read is small beside G_S's work on the same voxels)."""
    smooth = stack.astype(np.float64).map_overlap(_smoothed, depth=(0, 1, 1), boundary="none", dtype=np.float64)
    energy = (da.diff(smooth, axis=1) ** 2).mean(axis=(1, 2)) + (da.diff(smooth, axis=2) ** 2).mean(axis=(1, 2))
    return int(np.argmax(energy.compute(scheduler="threads")))


# ----------------------------------------------------------------------------- tiling


def aligned_tiling(roi_size, overlap, tile_size: int, shape) -> tuple[tuple, tuple]:
    """Tiles along y and x for a sliding window of ``roi_size`` (Z, Y, X) and ``overlap`` (a fraction, or one
    per axis, as MONAI takes it) on a stack of ``shape``: ``(chunks_y, chunks_x)`` (the tile sizes, dask's form)
    and ``(overhang_y, overhang_x)``, how far the windows that start in a tile reach beyond its end, such that
    each of MONAI's windows over the whole stack starts in exactly one tile, and MONAI's windows over a tile and
    its overhang are exactly those.

    MONAI places windows of size r at multiples of the step s = ``int(r * (1 - overlap))``, the last one
    flush with the end. Tiles are multiples of s (``tile_size`` rounded up), at least as long as the
    overhang r - s, so that a tile's windows reach into the next tile only; a last tile shorter than r
    joins the tile before it. E.g. window 128: overlap 0.25, step 96, overhang 32; overlap 0.5, step 64,
    overhang 64. An axis the window covers whole is one tile, without overhang.
    """
    chunks, overhangs = [], []
    for r, n, o in zip(roi_size[-2:], shape[-2:], ensure_tuple_rep(overlap, len(roi_size))[-2:], strict=True):
        r = n if r is None or r <= 0 else min(int(r), n)  # as MONAI: -1 means the full size
        if r >= n:  # one window over the whole size: one tile
            chunks.append((n,))
            overhangs.append(0)
            continue
        step = max(int(r * (1 - o)), 1)
        tile = max(math.ceil(tile_size / step), math.ceil((r - step) / step), 1) * step
        sizes = [tile] * (n // tile) + ([n % tile] if n % tile else [])
        while len(sizes) > 1 and sizes[-1] < r:
            sizes[-2:] = [sizes[-2] + sizes[-1]]
        chunks.append(tuple(sizes))
        overhangs.append(r - step)
    return tuple(chunks), tuple(overhangs)


def _slices(box, within) -> tuple[slice, ...]:
    """The slices of ``box`` in an array over the box ``within`` (boxes: a (start, stop) per axis, in the stack)."""
    return tuple(slice(a - w, b - w) for (a, b), (w, _) in zip(box, within, strict=True))


def _add_overlap(box, array: np.ndarray, other_box, other: np.ndarray) -> None:
    """``array`` (over ``box``) += ``other`` (over ``other_box``) where the two boxes overlap."""
    overlap = [(max(a, c), min(b, d)) for (a, b), (c, d) in zip(box, other_box, strict=True)]
    if all(a < b for a, b in overlap):
        array[_slices(overlap, box)] += other[_slices(overlap, other_box)]


def window_weights(region, inferer, box) -> np.ndarray:
    """The sum of the importance maps of the windows that ``inferer`` (MONAI's sliding window) places on the
    ``region`` of a stack, over ``box`` (ZYX boxes: a (start, stop) per axis, in the stack): what MONAI
    divides the windows' weighted sum by there. A region smaller than the window is padded, centred, as MONAI does."""
    shape = [b - a for a, b in region]
    roi = fall_back_tuple(inferer.roi_size, shape)
    size = [max(n, r) for n, r in zip(shape, roi, strict=True)]
    origin = [a - (m - n) // 2 for (a, _), m, n in zip(region, size, shape, strict=True)]
    interval = _get_scan_interval(size, roi, len(size), ensure_tuple_rep(inferer.overlap, len(size)))
    weight = compute_importance_map(roi, inferer.mode, inferer.sigma_scale).numpy()
    out = np.zeros([b - a for a, b in box], np.float32)
    for window in dense_patch_slices(size, roi, interval):
        _add_overlap(box, out, [(o + w.start, o + w.stop) for o, w in zip(origin, window, strict=True)], weight)
    return out


class _Region:
    """A tile's region of the lazy stack (its box in the stack too), hidden from dask's graph (dask does not
    look inside such objects): the tile's task reads it itself, so no input chunk is shared between tiles
    and none is kept in memory for a neighbour. Overhangs are read twice; memory stays that of the tiles
    in flight."""

    def __init__(self, stack: da.Array, box, name: str):
        self.stack, self.box, self.name = stack, box, name

    def read(self) -> np.ndarray:
        """The region's voxels, checked (``scripts.data.io.check_values``) before G_S sees them."""
        values = np.asarray(self.stack.compute(scheduler="sync"))
        _, (y0, y1), (x0, x1) = self.box
        check_values(self.name, values, f" in the tile at y {y0}..{y1}, x {x0}..{x1}")
        return values


def _tile_windows(region: _Region, box, leading, trailing, network, inferer, intensity_range, device, focus):
    """The windows of G_S that start in one tile, run over the tile and their overhang (``region``, ZYX,
    through the in-memory path with the whole stack's intensity mapping).

    Returns the tile's values over ``box`` (final but for its ``leading`` boxes, where the windows of the
    tiles before it overhang it) with, for each ``leading`` box, these windows' weighted sum and weights
    there (MONAI's sliding window blends windows as sum(w f) / sum(w)); and, apart, the same for the
    ``trailing`` boxes, where they overhang the tiles after it. ``focus``: the whole stack's focal plane for a
    focus-guided G_S, else None."""
    normalise = RobustNormalised("image", intensity_range=intensity_range)
    values = enhance(network.to(device), region.read(), inferer, normalise, device, focus)  # sum(w f) / sum(w)

    def sums(b):
        weights = window_weights(region.box, inferer, b)
        return b, values[_slices(b, region.box)] * weights, weights

    return (values[_slices(box, region.box)], box, [sums(b) for b in leading]), [sums(b) for b in trailing]


def _finish_tile(tile, *overhangs) -> np.ndarray:
    """A tile's final values: over each of its leading boxes, the weighted sums and weights of its own windows
    and of the earlier tiles' windows that overhang it (``overhangs``: their trailing sums) added up and
    divided, as MONAI's sliding window over the whole stack blends them. Written into the tile's values
    from sums left as they are, so that running it again gives the same."""
    values, box, leading = tile
    for lead_box, weighted, weights in leading:
        weighted, weights = weighted.copy(), weights.copy()
        for other_box, other_weighted, other_weights in itertools.chain(*overhangs):
            _add_overlap(lead_box, weighted, other_box, other_weighted)
            _add_overlap(lead_box, weights, other_box, other_weights)
        values[_slices(lead_box, box)] = weighted / weights
    return values


def enhance_lazily(
    network,
    stack: da.Array,
    inferer,
    intensity_range,
    chunks,
    overhangs,
    device="cpu",
    name: str = "<in memory>",
    focus: int | None = None,
) -> da.Array:
    """G_S's enhancement of a ZYX dask stack, lazily: float32, same shape, one chunk per tile over all planes
    (``chunks``, ``overhangs``: the y and x tiles and overhangs of ``aligned_tiling``).

    Each of the sliding window's windows is computed once, by the tile it starts in (a task that reads the
    tile and its overhang from ``stack`` on its own); a second task per tile adds, where the windows of the
    tiles before it (above, left, above-left) overhang it, their weighted sums to its own. The network is
    one node of the graph, which every tile's task shares (sent once to each worker of a cluster). Each tile's
    input is checked as it is read (``scripts.data.io.check_values``; ``name`` names the input in the error).
    ``focus``: the stack's focal plane (:func:`stack_focal_plane`) for a focus-guided G_S, else None."""
    z = (0, stack.shape[0])
    bounds = [list(itertools.pairwise(np.cumsum((0, *c)).tolist())) for c in chunks]
    (ny, nx), (oy, ox) = stack.shape[1:], overhangs
    shared = dask.delayed(network, name=f"g_s-{uuid.uuid4().hex}", traverse=False)
    tiles, trailing = {}, {}
    for (i, (y0, y1)), (j, (x0, x1)) in itertools.product(*map(enumerate, bounds)):
        y2, x2 = min(y1 + oy, ny), min(x1 + ox, nx)  # the tile's windows end there
        region = (z, (y0, y2), (x0, x2))
        top = y0 + oy if i else y0  # where the tiles above stop overhanging this one
        leading = [(z, (y0, top), (x0, x1))] if i else []
        leading += [(z, (top, y1), (x0, x0 + ox))] if j else []
        sent = [(z, (y0, y2), (x1, x2))] if x2 > x1 else []  # to the right, and the corner below it
        sent += [(z, (y1, y2), (x0, x1))] if y2 > y1 else []
        tiles[i, j], trailing[i, j] = dask.delayed(_tile_windows, nout=2, pure=False)(
            _Region(stack[:, y0:y2, x0:x2], region, name), (z, (y0, y1), (x0, x1)), leading, sent, shared, inferer,
            intensity_range, device, focus,
        )  # fmt: skip
    rows = []
    for i, (y0, y1) in enumerate(bounds[0]):
        row = []
        for j, (x0, x1) in enumerate(bounds[1]):
            before = [trailing[k] for k in ((i - 1, j), (i, j - 1), (i - 1, j - 1)) if k in trailing]
            tile = dask.delayed(_finish_tile, pure=False)(tiles[i, j], *before)
            row.append(da.from_delayed(tile, (stack.shape[0], y1 - y0, x1 - x0), dtype=np.float32))
        rows.append(row)
    return da.block([rows])


def halo_tiling(tile_size: int, shape, multiple: int = 4, steps: tuple[int, int] | None = None) -> tuple:
    """Tiles along y and x for ``--sw_tiling halo`` (:class:`~scripts.inference.sliding_window.HaloInferer`) on
    a stack of ``shape``: ``tile_size`` rounded up to G_S's stride ``multiple`` and, along each axis, to that
    axis's window step when ``steps`` are given (:func:`halo_steps`: a tile then holds whole windows, none of
    them cut short by its halo), the last tile shorter (dask's chunks). Each tile reads its own halo
    (:func:`_halo_region`)."""
    size = max(round_up(int(tile_size), multiple), multiple)
    tiles = [round_up(size, step) if step > 0 else size for step in steps or (0, 0)]
    return tuple(tuple([t] * (n // t) + ([n % t] if n % t else [])) for t, n in zip(tiles, shape[-2:], strict=True))


def halo_steps(inferer: HaloInferer) -> tuple[int, int]:
    """How far ``inferer``'s windows step along y and x (the window less two halos; 0 for a window over all of an
    axis): in tiles of a multiple of it, the windows of a tile and its halo fill it exactly."""
    return tuple(r - 2 * inferer.halo if r > 0 else 0 for r in inferer.roi_size[-2:])  # type: ignore[return-value]


def _halo_region(start: int, stop: int, n: int, halo: int, multiple: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Along an axis of ``n`` pixels, for the tile ``start``..``stop``: the part of the stack to read and the
    edge padding to add before and after it, such that the tile lies at least ``halo`` inside, or at the
    border of, a region whose ends are on the stride lattice of the whole stack padded as G_S pads it
    (replicate, centred, to a multiple of ``multiple``): HaloInferer's windows over that region are then
    those of the whole stack, and its tile is the whole stack's."""
    padded = round_up(n, multiple)
    before = (padded - n) // 2
    lo = max(0, (start + before - halo) // multiple * multiple)  # in the padded stack's coordinates
    hi = min(padded, round_up(stop + before + halo, multiple))
    read = max(0, lo - before), min(n, hi - before)
    return read, (read[0] - (lo - before), (hi - before) - read[1])


def _halo_tile(region: _Region, pads, crop, network, inferer, intensity_range, device, focus) -> np.ndarray:
    """One tile of ``--sw_tiling halo``: its ``region`` (the tile and its halo), edge-padded by ``pads`` (y, x)
    where it meets the stack's border as G_S pads the whole stack, enhanced by ``inferer`` (a HaloInferer) with
    the whole stack's intensity mapping, and cut to the tile (``crop``); ``focus`` as :func:`_tile_windows`'."""
    normalise = RobustNormalised("image", intensity_range=intensity_range)
    values = np.pad(region.read(), ((0, 0), *pads), mode="edge")  # the mapping is per voxel: padding commutes
    return enhance(network.to(device), values, inferer, normalise, device, focus)[crop]


def enhance_lazily_halo(
    network,
    stack: da.Array,
    inferer,
    intensity_range,
    chunks,
    device="cpu",
    name: str = "<in memory>",
    focus: int | None = None,
) -> da.Array:
    """G_S's enhancement of a ZYX dask stack by ``--sw_tiling halo``, lazily: float32, same shape, one chunk per
    tile over all planes (``chunks``: :func:`halo_tiling`'s). Each tile is one task that reads the tile and its
    halo, on the stride lattice (:func:`_halo_region`), and keeps the tile: the result is the in-memory
    HaloInferer's over the whole stack, and for a window-independent G_S (``--g_norm batch``) that of one
    window over the whole field. Windows across tile borders run for both tiles (the price of independent
    tiles). Each tile's input is checked as it is read (``name`` names the input in the error). ``focus`` as
    :func:`enhance_lazily`'s."""
    z = (0, stack.shape[0])
    bounds = [list(itertools.pairwise(np.cumsum((0, *c)).tolist())) for c in chunks]
    shared = dask.delayed(network, name=f"g_s-{uuid.uuid4().hex}", traverse=False)
    rows = []
    for y0, y1 in bounds[0]:
        row = []
        for x0, x1 in bounds[1]:
            (ry, py), (rx, px) = (
                _halo_region(a, b, n, inferer.halo, inferer.multiple)
                for (a, b), n in zip(((y0, y1), (x0, x1)), stack.shape[1:], strict=True)
            )
            crop = (
                slice(None),
                slice(y0 - ry[0] + py[0], y1 - ry[0] + py[0]),
                slice(x0 - rx[0] + px[0], x1 - rx[0] + px[0]),
            )
            region = _Region(stack[:, ry[0] : ry[1], rx[0] : rx[1]], (z, ry, rx), name)
            tile = dask.delayed(_halo_tile, pure=False)(
                region, (py, px), crop, shared, inferer, intensity_range, device, focus
            )
            row.append(da.from_delayed(tile, (stack.shape[0], y1 - y0, x1 - x0), dtype=np.float32))
        rows.append(row)
    return da.block([rows])


# ----------------------------------------------------------------------------- writing


def ngff_multiscales(name: str, spacing, unit: str | None) -> dict:
    """NGFF 0.4 ``multiscales`` metadata of one ZYX dataset "0" with the voxel size (z, y, x) as its scale."""
    scale = [float(s) if s is not None and math.isfinite(s) else 1.0 for s in (spacing or (1.0, 1.0, 1.0))]
    axes = [{"name": a, "type": "space", **({"unit": "micrometer"} if unit == "um" else {})} for a in "zyx"]
    dataset = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
    return {"multiscales": [{"version": "0.4", "name": name, "axes": axes, "datasets": [dataset]}]}


def slide_output_path(input_path: str | os.PathLike, output_dir: str | os.PathLike, postfix: str = "_enhanced") -> Path:
    """``<output_dir>/<name><postfix>.ome.zarr``, never the input itself."""
    name = Path(input_path).name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    out = Path(output_dir) / f"{name}{postfix}.ome.zarr"
    if out.resolve() == Path(input_path).resolve():
        raise InputError(out, "output would overwrite the input: choose another output_dir or postfix")
    return out


def _write_block(block: np.ndarray, array_path: str, region: tuple[slice, ...], dtype: str, marker: str) -> int:
    """Write one enhanced chunk, cast like ``scripts.data.io.write_stack``, then its done-marker; returns voxels."""
    zarr.open_array(array_path, mode="r+")[region] = cast_to(block, dtype)
    Path(marker).touch()
    return block.size


class _Progress(Callback):
    """tqdm over the chunk writes of dask's local scheduler: voxels written, voxels/s and ETA."""

    def __init__(self, bar: tqdm, voxels: dict):
        super().__init__()
        self.bar, self.voxels = bar, voxels

    def _posttask(self, key, result, dsk, state, worker_id):
        if key in self.voxels:
            self.bar.update(self.voxels[key])


def _ship_scripts(client) -> None:
    """Make the ``scripts`` package importable on every worker of ``client`` (zip upload, no shared disk needed)."""
    from distributed.diagnostics.plugin import UploadFile

    package = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "zsegan_scripts.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for f in sorted(package.rglob("*.py")):
                z.write(f, f"scripts/{f.relative_to(package).as_posix()}")
        # workers only (a worker plugin, so later workers get it too): `client.upload_file` would also
        # import it into the scheduler, which for a LocalCluster is this process, replacing our `scripts`
        client.register_plugin(UploadFile(str(archive)), name="zsegan-scripts")


def enhance_slide(
    network: torch.nn.Module,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    inferer,
    lower: float = 0.5,
    upper: float = 99.5,
    tile_size: int = 1024,
    device: str | torch.device = "cpu",
    scheduler_address: str | None = None,
    min_planes: int = 1,
    intensity_range: tuple[float, float] | None = None,
) -> Path:
    """Enhance one large stack (OME-Zarr, zarr or TIFF) into the OME-Zarr ``output_path``, chunk by chunk.

    ``inferer``: the sliding window (``monai.inferers.SlidingWindowInferer``, ``roi_size`` (Z, Y, X),
    ``overlap``; or ``--sw_tiling halo``'s ``HaloInferer``, tiled by :func:`enhance_lazily_halo`) used for
    every tile; ``lower``/``upper``: the intensity percentiles (as training);
    ``tile_size``: xy size of the chunks (rounded up to the window's step); ``scheduler_address``: a
    ``dask.distributed`` scheduler to run on, else dask's local threads. Each tile (all planes) is
    computed and written on its own, then marked done. Resumable (see the module
    docstring); an output already complete with the same input, weights and settings is kept as it is.
    ``intensity_range``: the stack's ``stack_range`` when already computed (``enhance_slides``' up-front pass).
    """
    output_path = Path(output_path)
    stack, meta = open_stack(input_path, min_planes)
    inferer = copy.copy(inferer)
    inferer.progress = False  # one progress bar over the chunks instead of one per tile
    halo = isinstance(inferer, HaloInferer)  # --sw_tiling halo: tiles with their halo, no overhangs to add
    if halo:
        chunks = halo_tiling(tile_size, stack.shape, inferer.multiple, halo_steps(inferer))
        overhangs = [inferer.halo] * 2
        tiling = {"tiling": "halo", "halo": inferer.halo}
    else:
        overlap = float(inferer.overlap) if np.ndim(inferer.overlap) == 0 else [float(o) for o in inferer.overlap]
        chunks, overhangs = aligned_tiling(inferer.roi_size, overlap, tile_size, stack.shape)
        tiling = {"overlap": overlap, "mode": str(inferer.mode)}
    run = {
        "input": str(Path(input_path).resolve()),
        "shape": list(stack.shape),
        "dtype": meta["dtype"],
        "weights_sha256": weights_digest(network.state_dict()),
        "precision": getattr(network, "precision", "float32"),  # scripts.inference.sliding_window.Accelerated's
        "roi_size": [int(r) for r in inferer.roi_size],
        **tiling,
        "percentiles": [lower, upper],
        "tiles": [list(c) for c in chunks],
        "overhangs": list(overhangs),
    }
    done = output_path / _STATE / "done"
    if output_path.exists():
        if _read_run(output_path) == run:
            shutil.rmtree(done, ignore_errors=True)  # left by a run stopped between its rename and its clean-up
            logger.info(f"{output_path} is already complete")
            return output_path
        raise InputError(output_path, "exists and holds another result: delete it or choose another output_dir")
    partial = _partial_path(output_path)
    if _read_run(partial) not in (None, run):
        raise InputError(partial, "holds an interrupted run with another input, weights or settings: delete it")
    if _read_run(partial) is None:
        # the checks that can fail on the whole stack come first: nothing is written for a stack they refuse
        run["intensity_range"] = list(intensity_range or stack_range(stack, lower, upper, str(input_path)))
        if focus_guided(network):  # every tile borrows the same plane: found once, kept for a resumed run
            run["focal_plane"] = stack_focal_plane(stack)
        shutil.rmtree(partial, ignore_errors=True)  # never got as far as its record: start again
        group = zarr.open_group(str(partial), mode="w", zarr_format=2)
        group.create_array(
            "0",
            shape=stack.shape,
            chunks=(1, chunks[0][0], chunks[1][0]),  # a plane of a tile: viewers read only the plane shown
            dtype=meta["dtype"],
            fill_value=0,
            compressors=Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},  # NGFF 0.4 on zarr 2 needs "/"
        )
        with atomic(partial / _STATE / "run.json") as tmp:
            tmp.write_text(json.dumps(run, indent=1))
    run = json.loads((partial / _STATE / "run.json").read_text())  # with the intensity range of the first start
    lo, hi = run["intensity_range"]
    focus = run.get("focal_plane")
    focal = "" if focus is None else f", focal plane {focus}"
    logger.info(f"{input_path}: {'x'.join(map(str, stack.shape))} voxels, intensity range {lo:.4g}..{hi:.4g}{focal}")

    # one delayed object per tile from the whole graph, so that the tiles' shared tasks stay shared (taken
    # one block at a time, dask would fuse them into each block's own tasks and run them again for each)
    if halo:
        enhanced = enhance_lazily_halo(network, stack, inferer, (lo, hi), chunks, device, str(input_path), focus)
    else:
        enhanced = enhance_lazily(network, stack, inferer, (lo, hi), chunks, overhangs, device, str(input_path), focus)
    enhanced = enhanced.to_delayed()[0]
    tasks, voxels = [], {}
    done = partial / _STATE / "done"
    done.mkdir(exist_ok=True)
    starts = [np.cumsum((0, *c)) for c in chunks]  # tiles start on zarr chunks: no chunk is written twice
    write = dask.delayed(_write_block, pure=False)
    for i, j in np.ndindex(*enhanced.shape):
        marker = done / f"{i}.{j}"
        if marker.exists():
            continue
        region = (slice(None), slice(*starts[0][i : i + 2]), slice(*starts[1][j : j + 2]))
        task = write(enhanced[i, j], str(partial / "0"), region, meta["dtype"], str(marker))
        tasks.append(task)
        voxels[task.key] = stack.shape[0] * math.prod(r.stop - r.start for r in region[1:])
    total = math.prod(stack.shape)
    skipped = total - sum(voxels.values())
    if skipped:
        logger.info(f"resuming {partial}: {len(tasks)} chunks left")
    with tqdm(total=total, initial=skipped, unit="vox", unit_scale=True, desc="whole slide", smoothing=0.1) as bar:
        if scheduler_address:
            from distributed import Client, as_completed

            with Client(scheduler_address) as client:
                _ship_scripts(client)
                for future in as_completed(client.compute(tasks)):
                    bar.update(future.result())
        else:
            if (
                hasattr(network, "warm_up") and tasks
            ):  # scripts.inference.sliding_window.Accelerated: compile before the tiles
                roi = [n if r is None or r <= 0 else r for r, n in zip(inferer.roi_size, stack.shape, strict=True)]
                network.to(device).warm_up((inferer.sw_batch_size, 1, *roi), device)
            with _Progress(bar, voxels):
                dask.compute(*tasks, scheduler="threads", num_workers=LOCAL_THREADS)
    group = zarr.open_group(str(partial), mode="r+", zarr_format=2)
    group.attrs.update(ngff_multiscales(output_path.name, meta["spacing"], meta["unit"]))
    os.replace(partial, output_path)  # the output appears only now, complete
    shutil.rmtree(output_path / _STATE / "done")  # after the rename: a run stopped in between is complete
    logger.info(f"wrote {output_path}")
    return output_path


def write_ome_tiff(source: str | os.PathLike, path: str | os.PathLike, tile: int = 512) -> Path:
    """An OME-TIFF (BigTIFF, tiled, zlib) of the finished OME-Zarr ``source`` with its voxel size; written
    tile by tile from one band of ``tile`` rows of one plane at a time, atomically."""
    stack, meta = open_stack(source)
    z_size, y_size, x_size = stack.shape

    def tiles():
        for z in range(z_size):
            for r in range(0, y_size, tile):
                band = np.asarray(stack[z, r : r + tile].compute())
                yield from (band[:, c : c + tile] for c in range(0, x_size, tile))

    metadata: dict[str, Any] = {"axes": "ZYX"}
    for axis, size in zip("ZYX", meta["spacing"] or (), strict=False):
        if size is not None and math.isfinite(size):
            metadata[f"PhysicalSize{axis}"] = size
            if meta["unit"] == "um":
                metadata[f"PhysicalSize{axis}Unit"] = "µm"
    with atomic(path, ".tif") as tmp:
        tifffile.imwrite(
            tmp, tiles(), shape=stack.shape, dtype=stack.dtype, tile=(tile, tile), ome=True, bigtiff=True,
            photometric="minisblack", compression="zlib", metadata=metadata,
        )  # fmt: skip
    logger.info(f"wrote {path}")
    return Path(path)


def _partial_path(output_path: Path) -> Path:
    """Where the output is built until every tile is written: a hidden folder beside it."""
    return output_path.with_name(f".{output_path.name}.partial")


def _read_run(path: Path) -> dict | None:
    """The record of what an output (or partial output) holds, without what is found from the stack (its intensity
    range and focal plane); None if none."""
    try:
        run = json.loads((path / _STATE / "run.json").read_text())
    except (OSError, ValueError):
        return None
    run.pop("intensity_range", None)
    run.pop("focal_plane", None)
    return run


def slide_inputs(input_path: str | os.PathLike) -> list[Path]:
    """A zarr folder, a TIFF, or a folder of them (sorted; hidden names skipped)."""
    p = Path(input_path)
    if p.is_dir() and not p.name.lower().endswith(".zarr"):
        found = sorted(
            f for f in p.iterdir() if f.name[0] != "." and f.name.lower().endswith(SLIDE_SUFFIXES) and f.is_dir() == (
                f.name.lower().endswith(".zarr"))
        )  # fmt: skip
        if not found:
            raise InputError(p, "no OME-Zarr/zarr folders or TIFF files in this folder")
        return found
    if not p.exists():
        raise InputError(p, "no such file or folder: check the path")
    return [p]


def _slide_outputs(input_path: Path, output_dir, postfix: str) -> tuple[Path, Path]:
    """The OME-Zarr output of an input and the OME-TIFF written from it on request."""
    out = slide_output_path(input_path, output_dir, postfix)
    return out, out.with_name(out.name[: -len(".zarr")] + ".tif")


def enhance_slides(
    network, input_path, output_dir, inferer, lower=0.5, upper=99.5, tile_size=1024, device="cpu",
    scheduler_address=None, min_planes=1, postfix="_enhanced", output_format="ome-zarr",
) -> list[Path]:  # fmt: skip
    """``enhance_slide`` for every input of ``slide_inputs(input_path)`` (all checked first), into
    ``<output_dir>/<name><postfix>.ome.zarr``; ``output_format`` "ome-tiff" also writes
    ``<name><postfix>.ome.tif`` from it (the OME-Zarr stays: it is what an interrupted run resumes). Inputs
    that are the outputs of others (``output_dir`` the input folder, enhanced before) are left out. The output
    folder is locked for this process (``scripts.data.atomic.hold_lock``) once every input is checked."""
    if output_format not in ("ome-zarr", "ome-tiff"):
        raise InputError(None, f"--output_format must be ome-zarr or ome-tiff, not {output_format!r}")
    inputs = without_outputs(slide_inputs(input_path), lambda f: _slide_outputs(f, output_dir, postfix))
    ranges = {}  # every check that can fail on a whole stack runs here, before any output is written
    for f in inputs:
        stack, _ = open_stack(f, min_planes)
        out = slide_output_path(f, output_dir, postfix)
        if not out.exists() and _read_run(_partial_path(out)) is None:  # not started yet
            ranges[f] = stack_range(stack, lower, upper, str(f))
    hold_lock(output_dir)  # one run at a time into an output folder
    network = network.to("cpu") if scheduler_address else network  # sent to workers as weights, moved there
    outputs = []
    for f in inputs:
        out = slide_output_path(f, output_dir, postfix)
        enhance_slide(
            network, f, out, inferer, lower, upper, tile_size, device, scheduler_address, min_planes, ranges.get(f)
        )
        if output_format == "ome-tiff":
            tiff = _slide_outputs(f, output_dir, postfix)[1]
            out = tiff if tiff.exists() else write_ome_tiff(out, tiff)
        outputs.append(out)
    return outputs
