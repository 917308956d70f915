"""Reading and writing z-stacks and 2D images, with clear errors for bad input.

Inside the bundle a z-stack is a ZYX numpy array and a 2D image a YX array, always in the file's
own dtype. Each format keeps its own axis order on disk and is converted on reading and writing:

- TIFF / OME-TIFF (tifffile): ZYX (pages are planes; tifffile's series axes such as ``ZYX``,
  ``QYX``, ``IYX`` or ``TYX`` give the z axis). Voxel size from OME-XML ``PhysicalSize{X,Y,Z}``,
  else ImageJ metadata (``spacing`` for z, ``unit``) with the X/YResolution tags (pixel size is
  1 / resolution), else tifffile's JSON description and the resolution tags.
- The paper's npz: key ``arr_0`` (or the only array), YXZ; no voxel size.
- NIfTI (nibabel, ``.nii``/``.nii.gz``): XYZ; voxel size from the header zooms; the affine is kept.
- 2D images: TIFF (tifffile) and PNG (Pillow), YX; the pixel size comes from the resolution tags
  (TIFF) or the pHYs chunk (PNG). An npz or NIfTI file of one plane reads as a 2D image too.

``read_stack``/``read_image`` return ``(array, meta)``; meta holds plain python values:

- ``filename_or_obj``: the path (str); ``format``: "tiff" | "npz" | "nifti" | "png";
- ``axes``: the file's own axis string (tifffile's series axes for TIFF, "YXZ" for npz,
  "XYZ" for NIfTI, "YX" for 2D images);
- ``dtype``: numpy dtype name of the file data, e.g. "uint16";
- ``spacing``: voxel size in the internal order, (z, y, x) for stacks and (y, x) for images, in
  micrometres when ``unit`` is "um"; the file's own numbers when ``unit`` is None (unit unknown);
  None when the file records no voxel size; a component the file does not give is NaN;
- ``unit``: "um" or None;
- ``affine`` (NIfTI only): the file's 4x4 affine as nested lists, so the writer reproduces it.

``write_stack``/``write_image`` pick the format from the suffix of the path they are given, write
in that format's axis order with the dtype and voxel size from meta, atomically (a temporary file
in the same folder, then ``os.replace``).

``ZStackReader`` plugs these readers into MONAI's ``LoadImage``/``LoadImaged``.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import nibabel as nib
import numpy as np
import tifffile
from monai.data.image_reader import ImageReader
from monai.utils import ensure_tuple
from PIL import Image
from scripts.data.atomic import atomic
from scripts.errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "STACK_SUFFIXES",
    "ZStackReader",
    "check_counts",
    "check_dtype",
    "check_values",
    "list_files",
    "plain_meta",
    "read_image",
    "read_stack",
    "register_readers",
    "write_image",
    "write_stack",
]

PathLike = str | os.PathLike

STACK_SUFFIXES = (".tif", ".tiff", ".npz", ".nii", ".nii.gz")  # ".ome.tif"/".ome.tiff" end in .tif/.tiff
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")

_FORMATS = {".tif": "tiff", ".tiff": "tiff", ".npz": "npz", ".nii": "nifti", ".nii.gz": "nifti", ".png": "png"}

# What the libraries raise for a truncated, corrupt or wrong-format file (PIL's UnidentifiedImageError is an
# OSError; TiffFileError is a ValueError only in recent tifffile releases, so it is named).
READ_ERRORS: tuple[type[BaseException], ...] = (
    tifffile.TiffFileError,
    OSError,
    ValueError,
    EOFError,
    KeyError,
    IndexError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
    nib.filebasedimages.ImageFileError,
    Image.DecompressionBombError,
)

# tifffile does not raise when the IFD chain is cut short (truncated ImageJ or OME-TIFF files):
# it logs one of these and returns fewer planes. They are treated as a truncated file.
_TIFF_CORRUPTION = ("invalid page offset", "corrupted", "invalid value offset", "failed to read")

# The dtypes ImageJ reads natively; other dtypes are written as plain TIFF with the voxel size
# in the resolution tags (centimetre unit) and tifffile's JSON description.
_IMAGEJ_DTYPES = ("uint8", "uint16", "float32")

FLOAT32_MAX = float(np.finfo(np.float32).max)  # float64 input beyond it would overflow in G_S's float32

_UM_PER_UNIT = {
    "um": 1.0, "µm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
    "in": 25400.0, "inch": 25400.0,
}  # fmt: skip
_UM_PER_RESOLUTION_UNIT = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}  # TIFF ResolutionUnit: inch, cm, mm, um
_UM_PER_NIFTI_UNIT = {"micron": 1.0, "mm": 1e3, "meter": 1e6}


# ----------------------------------------------------------------------------- paths


def _suffix(path: PathLike, suffixes: Sequence[str]) -> str | None:
    """The longest of ``suffixes`` that the file name ends with (case-insensitive), else None."""
    name = Path(path).name.lower()
    matches = [s for s in suffixes if name.endswith(s)]
    return max(matches, key=len) if matches else None


def _existing_file(path: PathLike, suffixes: Sequence[str]) -> tuple[Path, str]:
    """The path and its format, or InputError for a missing file or an unsupported suffix."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file: check the path")
    if p.is_dir():
        raise InputError(p, "is a folder, expected a file")
    suffix = _suffix(p, suffixes)
    if suffix is None:
        raise InputError(p, f"unsupported file type: use one of {', '.join(suffixes)}")
    return p, _FORMATS[suffix]


def list_files(path: PathLike, suffixes: Sequence[str]) -> list[Path]:
    """A file -> [file]; a folder -> its files with those suffixes, sorted (not recursive).

    Hidden files (names starting with ".", e.g. the writers' temporary files) are skipped.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder: check the path")
    if not p.is_dir():
        return [p]
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".") and _suffix(f, suffixes))
    if not files:
        raise InputError(p, f"empty folder: no {'/'.join(suffixes)} files")
    return files


# ----------------------------------------------------------------------------- reading


def um_per_unit(unit: Any) -> float | None:
    """Micrometres per ``unit`` (ImageJ/OME spellings such as 'micron', '\\u00B5m'), else None."""
    if not isinstance(unit, str):
        return None
    name = unit.strip().lower().replace("\\u00b5", "µ").replace("\u03bc", "µ")
    return _UM_PER_UNIT.get(name)


def _ome_spacing(tif: tifffile.TiffFile) -> tuple[tuple[float, float, float], str | None] | None:
    """(z, y, x) spacing and unit from OME-XML PhysicalSize{X,Y,Z}, or None."""
    if not tif.is_ome or not tif.ome_metadata:
        return None
    try:
        root = ElementTree.fromstring(tif.ome_metadata)
    except ElementTree.ParseError:
        return None  # unreadable OME-XML: fall back to the ImageJ/TIFF tags
    pixels = next((e for e in root.iter() if e.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    sizes, factors = [], []
    for axis in "ZYX":
        value = pixels.get(f"PhysicalSize{axis}")
        sizes.append(float(value) if value is not None else math.nan)
        factors.append(um_per_unit(pixels.get(f"PhysicalSize{axis}Unit", "µm")))
    if all(math.isnan(s) for s in sizes):
        return None
    if all(f is not None for f in factors):
        return tuple(s * f for s, f in zip(sizes, factors, strict=True)), "um"  # type: ignore[return-value]
    return tuple(sizes), None  # type: ignore[return-value]


def tiff_spacing(tif: tifffile.TiffFile) -> tuple[tuple[float, float, float] | None, str | None]:
    """(z, y, x) voxel size and unit of a TIFF, see the module docstring for the sources."""
    ome = _ome_spacing(tif)
    if ome is not None:
        return ome
    tags = tif.pages.first.tags
    extra: dict = tif.imagej_metadata or (tif.shaped_metadata[0] if tif.shaped_metadata else {}) or {}
    res = []
    for name in ("YResolution", "XResolution"):
        value = tags[name].value if name in tags else (1, 1)
        res.append(value[0] / value[1] if value[1] else 0.0)
    resolution_unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 1
    unit_factor = um_per_unit(extra.get("unit"))
    z = extra.get("spacing")
    if z is None and tif.is_imagej and unit_factor is not None:
        z = 1.0  # ImageJ omits "spacing" when the voxel depth is 1 (unit)
    z = float(z) if z is not None else math.nan
    if resolution_unit in _UM_PER_RESOLUTION_UNIT:  # y, x in a known unit
        xy_factor = _UM_PER_RESOLUTION_UNIT[resolution_unit]
        yx = [xy_factor / r if r > 0 else math.nan for r in res]
        if unit_factor is not None:
            return (z * unit_factor, yx[0], yx[1]), "um"
        return (math.nan, yx[0], yx[1]), "um"  # z (if any) is in an unknown unit
    yx = [1.0 / r if r > 0 else math.nan for r in res]
    if unit_factor is not None:
        return (z * unit_factor, yx[0] * unit_factor, yx[1] * unit_factor), "um"
    if math.isnan(z) and yx == [1.0, 1.0]:
        return None, None  # tifffile's default resolution 1/1 without a unit: no voxel size
    return (z, yx[0], yx[1]), None


@contextmanager
def _tifffile_corruption() -> Iterator[None]:
    """Raise OSError when tifffile logs that the file is cut short (it does not raise itself)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("tifffile")
    level = logger.level
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)  # so that the warnings are made even when logging is quieter
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    for record in records:
        message = record.getMessage()
        if any(s in message for s in _TIFF_CORRUPTION):
            raise OSError(message)


def _read_tiff(path: Path) -> tuple[np.ndarray, str, dict]:
    with _tifffile_corruption(), tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
        spacing, unit = tiff_spacing(tif)
    return data, axes, {"format": "tiff", "axes": axes, "spacing": spacing, "unit": unit}


def _npz_key(keys: Sequence[str]) -> str | None:
    """The array of an npz that the bundle reads: ``arr_0``, else the only one; None when neither."""
    return "arr_0" if "arr_0" in keys else keys[0] if len(keys) == 1 else None


def _read_npz(path: Path) -> tuple[np.ndarray, str, dict]:
    with np.load(path, allow_pickle=False) as npz:
        keys = list(npz.keys())
        key = _npz_key(keys)
        if key is None:
            raise InputError(
                path, f"holds arrays {', '.join(keys) or '(none)'}: expected key 'arr_0' or a single array"
            )
        data = npz[key]
    # the paper's npz is YXZ; a 4D array is taken as YXZ plus a channel axis
    axes = {2: "YX", 3: "YXZ", 4: "YXZC"}.get(data.ndim, "?" * data.ndim)
    return data, axes, {"format": "npz", "axes": "YXZ", "spacing": None, "unit": None}


def _npz_shape(path: Path) -> tuple[int, ...] | None:
    """The shape of the array ``_read_npz`` reads, from its .npy header alone; None if it cannot tell."""
    with zipfile.ZipFile(path) as archive:
        key = _npz_key([n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")])
        if key is None:
            return None
        with archive.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return header(f)[0]


def _read_nifti(path: Path) -> tuple[np.ndarray, str, dict]:
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)  # the file's own dtype (get_fdata would give float64)
    axes = "XYZTCVW"[: data.ndim]
    zooms = [float(z) for z in img.header.get_zooms()[:3]] + [math.nan] * 3
    spacing: tuple[float, float, float] | None = (zooms[2], zooms[1], zooms[0])
    factor = _UM_PER_NIFTI_UNIT.get(img.header.get_xyzt_units()[0])
    unit = "um" if factor is not None else None
    if factor is not None:
        spacing = tuple(s * factor for s in spacing)  # type: ignore[assignment]
    affine = [[float(v) for v in row] for row in img.affine]
    return data, axes, {"format": "nifti", "axes": "XYZ", "spacing": spacing, "unit": unit, "affine": affine}


def _read_png(path: Path) -> tuple[np.ndarray, str, dict]:
    with Image.open(path) as img:
        img.load()
        mode, dpi = img.mode, img.info.get("dpi")
        data = np.asarray(img)
    if mode == "P":
        raise InputError(path, "is a palette (indexed colour) image: convert it to grayscale before running")
    axes = "YXS" if data.ndim == 3 else "YX"
    spacing = unit = None
    if dpi and all(d > 0 for d in dpi):
        # pHYs stores whole pixels per metre; PIL reports them as dots per inch
        ppm = [round(d / 0.0254) for d in dpi]
        spacing, unit = (1e6 / ppm[1], 1e6 / ppm[0]), "um"
    return data, axes, {"format": "png", "axes": "YX", "spacing": spacing, "unit": unit}


_READERS: dict[str, Callable[[Path], tuple[np.ndarray, str, dict]]] = {
    "tiff": _read_tiff,
    "npz": _read_npz,
    "nifti": _read_nifti,
    "png": _read_png,
}


def _load(path: Path, fmt: str, kinds: str) -> tuple[np.ndarray, str, dict]:
    try:
        return _READERS[fmt](path)
    except InputError:
        raise
    except READ_ERRORS as e:
        raise InputError(path, f"cannot read {path.name} (file truncated or not a {kinds}: {e})") from e
    except MemoryError as e:  # a corrupt header declaring a huge array, or a stack larger than memory
        raise InputError(
            path, f"does not fit in memory ({e}): a corrupt header, or a stack for whole-slide inference "
            "(inference_wholeslide.yaml reads OME-Zarr/TIFF tile by tile)",
        ) from e  # fmt: skip


def _shape_str(shape: Sequence[int]) -> str:
    return "×".join(str(s) for s in shape)


def check_dtype(path: PathLike, dtype: np.dtype) -> None:
    """InputError for a dtype that is not real intensities (bool, complex, strings, objects)."""
    if np.dtype(dtype).kind not in "uif":
        raise InputError(path, f"dtype {dtype} is not supported: convert to real intensities")


def check_values(path: PathLike, data: np.ndarray, where: str = "") -> None:
    """InputError for an unsupported dtype, NaN/Inf in float data, or float values beyond float32's range
    (G_S computes in float32: the cast would turn them into Inf). ``where`` says which part of the file
    ``data`` is, e.g. " in the tile at y 0..1024, x 0..1024"."""
    check_dtype(path, data.dtype)
    if data.dtype.kind == "f" and data.size:
        n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
        check_counts(path, n_nan, n_inf, 0.0 if n_nan or n_inf else float(np.abs(data).max()), where)


def check_counts(path: PathLike, n_nan: int, n_inf: int, peak: float, where: str = "") -> None:
    """``check_values``' test from counts already made: NaN and Inf values, ``peak`` the largest magnitude."""
    if n_nan or n_inf:
        raise InputError(
            path, f"contains {n_nan} NaN / {n_inf} Inf values{where}: replace them (e.g. by 0) before running"
        )
    if peak > FLOAT32_MAX:
        raise InputError(
            path, f"holds values up to {peak:.3g}{where}, beyond float32's range ({FLOAT32_MAX:.3g}) in which "
            "G_S computes: rescale the intensities",
        )  # fmt: skip


def _to_internal(path: Path, data: np.ndarray, axes: str, ndim: int, min_planes: int = 1) -> np.ndarray:
    """Squeeze singleton axes and reorder to ZYX (``ndim`` 3) or YX (``ndim`` 2), else InputError."""
    if data.dtype.kind in "bcOUSV":
        check_values(path, data)
    if len(axes) != data.ndim or "Y" not in axes or "X" not in axes:
        axes = "?" * (data.ndim - 2) + "YX"
    keep = [i for i, a in enumerate(axes) if a in "YX" or data.shape[i] > 1]
    data, axes = data.reshape([data.shape[i] for i in keep]), "".join(axes[i] for i in keep)
    others = [a for a in axes if a not in "YX"]
    what = f"shape {_shape_str(data.shape)}, axes {axes}"
    if "S" in others or "C" in others:
        raise InputError(
            path,
            f"is RGB/multichannel ({what}): convert it to a single grayscale channel before running "
            "(e.g. for brightfield: the mean of the channels, or the green channel)",
        )
    if len(others) > 1:
        raise InputError(
            path,
            f"has {data.ndim} dimensions ({what}) after dropping singleton axes: it looks multichannel "
            "or like a time series; save one single-channel z-stack (Z, Y, X) per file",
        )
    yx = _shape_str([data.shape[axes.index("Y")], data.shape[axes.index("X")]])
    if ndim == 3:
        if not others:
            raise InputError(path, f"is a 2D image (Y×X = {yx}), expected a z-stack of several planes")
        data = data.transpose(axes.index(others[0]), axes.index("Y"), axes.index("X"))
        if data.shape[0] < min_planes:
            raise InputError(path, f"has {data.shape[0]} planes; the network needs at least {min_planes}")
    else:
        if others:
            raise InputError(
                path, f"has {data.shape[axes.index(others[0])]} planes ({what}): expected a 2D image (Y, X)"
            )
        data = data.transpose(axes.index("Y"), axes.index("X"))
    check_values(path, data)
    if not data.dtype.isnative:  # big-endian TIFF/NIfTI: native order, so meta["dtype"] is e.g. "uint16"
        return data.astype(data.dtype.newbyteorder("="))
    return np.ascontiguousarray(data)


def read_stack(path: PathLike, min_planes: int = 1) -> tuple[np.ndarray, dict]:
    """Read a z-stack as a ZYX array in the file's own dtype, plus meta (see the module docstring)."""
    p, fmt = _existing_file(path, STACK_SUFFIXES)
    data, axes, meta = _load(p, fmt, "TIFF/NPZ/NIfTI")
    array = _to_internal(p, data, axes, 3, min_planes)
    return array, {"filename_or_obj": str(p), **meta, "dtype": str(array.dtype)}


def read_image(path: PathLike) -> tuple[np.ndarray, dict]:
    """Read a 2D image (TIFF/PNG, or an npz/NIfTI of one plane: what inference writes for a z-stack in
    with ``input_planes``) as a YX array plus meta; spacing is (y, x)."""
    p, fmt = _existing_file(path, IMAGE_SUFFIXES + STACK_SUFFIXES)
    data, axes, meta = _load(p, fmt, "TIFF/PNG/NPZ/NIfTI")
    array = _to_internal(p, data, axes, 2)
    spacing = meta["spacing"]
    if spacing is not None and len(spacing) == 3:
        spacing = spacing[1:]
    meta = {**meta, "axes": "YX", "spacing": spacing}
    return array, {"filename_or_obj": str(p), **meta, "dtype": str(array.dtype)}


# ----------------------------------------------------------------------------- writing


def plain_meta(meta: Mapping[str, Any]) -> dict:
    """Our meta keys as plain python values, also from a MONAI meta dict (after ``ZStackReader``,
    collation or ``decollate_batch``): arrays/tensors -> tuples or nested lists, NaN-only or
    "none" -> None.
    """

    def floats(value: Any) -> list | None:
        if value is None or isinstance(value, str):
            return None
        values = np.asarray(getattr(value, "cpu", lambda: value)(), dtype=np.float64)
        return None if np.isnan(values).all() else values.tolist()

    out = {k: meta[k] for k in ("filename_or_obj", "format", "axes", "dtype") if k in meta}
    unit = meta.get("unit")
    out["unit"] = unit if isinstance(unit, str) and unit not in ("", "none") else None
    spacing = floats(meta.get("spacing"))
    out["spacing"] = tuple(spacing) if spacing is not None else None
    affine = floats(meta.get("nifti_affine", meta.get("affine") if meta.get("format") == "nifti" else None))
    if affine is not None and np.shape(affine) == (4, 4):
        out["affine"] = affine
    return out


def cast_to(array: np.ndarray, dtype: str | None) -> np.ndarray:
    """``array`` as ``dtype``: integer targets are rounded and clipped to the dtype's range first."""
    target = np.dtype(dtype) if dtype else array.dtype
    if array.dtype == target:
        return array
    if target.kind in "ui":
        info = np.iinfo(target)
        if array.dtype.kind == "f":
            array = np.rint(np.nan_to_num(array, nan=0.0, posinf=info.max, neginf=info.min))
        array = np.clip(array, info.min, info.max)
    return array.astype(target)


def _finite(values: Sequence[float] | None) -> list[float | None]:
    """Each value, or None where it is missing or NaN."""
    if values is None:
        return [None, None, None]
    return [float(v) if v is not None and math.isfinite(float(v)) else None for v in values]


def _write_tiff(tmp: Path, array: np.ndarray, axes: str, spacing: Sequence[float] | None, unit: str | None) -> None:
    """``spacing`` in the order of ``axes`` ("ZYX" or "YX")."""
    sizes = dict(zip(axes, _finite(spacing), strict=False))
    sy, sx, sz = sizes.get("Y"), sizes.get("X"), sizes.get("Z")
    metadata: dict[str, Any] = {"axes": axes}
    if sz is not None:
        metadata["spacing"] = sz
    if unit == "um":
        metadata["unit"] = "um"
    kwargs: dict[str, Any] = {}
    if str(array.dtype) in _IMAGEJ_DTYPES:
        if sx and sy:
            kwargs["resolution"] = (1.0 / sx, 1.0 / sy)
        tifffile.imwrite(tmp, array, imagej=True, photometric="minisblack", metadata=metadata, **kwargs)
    else:
        # ImageJ cannot hold this dtype: plain TIFF, the pixel size in the resolution tags (in
        # centimetres when the unit is known) and z spacing/unit in tifffile's JSON description
        if sx and sy:
            scale = 1e4 if unit == "um" else 1.0
            kwargs["resolution"] = (scale / sx, scale / sy)
            kwargs["resolutionunit"] = "CENTIMETER" if unit == "um" else "NONE"
        tifffile.imwrite(tmp, array, photometric="minisblack", metadata=metadata, **kwargs)


def _write_npz(tmp: Path, array: np.ndarray) -> None:
    np.savez_compressed(tmp, arr_0=np.ascontiguousarray(array.transpose(1, 2, 0)))  # ZYX -> YXZ


def _nifti_affine(meta: dict, spacing: Sequence[float] | None) -> tuple[np.ndarray, str]:
    """The affine to write and its spatial unit (nibabel name)."""
    if meta.get("affine") is not None:
        affine = np.asarray(meta["affine"], dtype=np.float64)
        # the affine is in the file's unit; find it from the ratio of meta's spacing (um) to its zooms
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[::-1]  # z, y, x
        size = np.asarray(_finite(spacing)[:3], dtype=float)
        if meta.get("unit") == "um" and not np.isnan(size).any():
            for name, factor in _UM_PER_NIFTI_UNIT.items():
                if np.allclose(zooms * factor, size, rtol=1e-5):
                    return affine, name
        return affine, "unknown"
    sz, sy, sx = (v if v else 1.0 for v in _finite(spacing))
    return np.diag([sx, sy, sz, 1.0]), "micron" if meta.get("unit") == "um" else "unknown"


def _write_nifti(tmp: Path, array: np.ndarray, meta: dict, spacing: Sequence[float] | None) -> None:
    affine, unit = _nifti_affine(meta, spacing)
    img = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine)  # ZYX -> XYZ
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units(xyz=unit)
    nib.save(img, tmp)


def _output(path: PathLike, suffixes: Sequence[str], array: np.ndarray, axes: str) -> tuple[str, np.ndarray]:
    """The output's suffix, and ``array`` checked to have ``axes``' dimensions."""
    suffix = _suffix(path, suffixes)
    if suffix is None:
        raise InputError(path, f"unsupported output file type: use one of {', '.join(suffixes)}")
    array = np.asarray(array)
    if array.ndim != len(axes):
        raise ValueError(f"expected a {axes} array to write, got shape {array.shape}")
    return suffix, array


def write_stack(path: PathLike, array: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Write a ZYX array in the format of ``path``'s suffix, with the dtype and voxel size from
    ``meta`` (as returned by ``read_stack``, or a MONAI meta dict); atomic.
    """
    suffix, array = _output(path, STACK_SUFFIXES, array, "ZYX")
    meta = plain_meta(meta)
    array = cast_to(array, meta.get("dtype"))
    spacing, fmt = meta.get("spacing"), _FORMATS[suffix]
    with atomic(path, suffix) as tmp:
        if fmt == "tiff":
            _write_tiff(tmp, array, "ZYX", spacing, meta.get("unit"))
        elif fmt == "npz":
            _write_npz(tmp, array)
        else:
            _write_nifti(tmp, array, meta, spacing)


def write_image(path: PathLike, array: np.ndarray, spacing: tuple[float, float] | None = None) -> None:
    """Write a YX array as a TIFF or PNG (by suffix) in its own dtype, ``spacing`` (y, x) in um;
    atomic. PNG holds only uint8/uint16.
    """
    suffix, array = _output(path, IMAGE_SUFFIXES, array, "YX")
    if suffix == ".png" and array.dtype not in (np.uint8, np.uint16):
        raise InputError(path, f"PNG holds only uint8/uint16, not {array.dtype}: write a .tif instead")
    with atomic(path, suffix) as tmp:
        if suffix == ".png":
            kwargs = {}
            sy, sx = _finite(spacing)[:2]
            if sx and sy:
                kwargs["dpi"] = (25400.0 / sx, 25400.0 / sy)
            Image.fromarray(array).save(tmp, format="PNG", **kwargs)
        else:
            _write_tiff(tmp, array, "YX", spacing, "um" if spacing is not None else None)


# ----------------------------------------------------------------------------- MONAI


def _is_stack_file(path: Path) -> bool:
    """A file with more than one plane (for ``ZStackReader(ndim=None)``): a TIFF with more than one page or
    plane, an npz/NIfTI whose array (read from its header) has more than one plane."""
    fmt = _FORMATS.get(_suffix(path, STACK_SUFFIXES + IMAGE_SUFFIXES) or "")
    if fmt in ("npz", "nifti"):
        try:
            shape = nib.load(path).shape if fmt == "nifti" else _npz_shape(path)
        except READ_ERRORS:
            return True  # read_stack then says what is wrong with the file
        return shape is None or sum(n > 1 for n in shape) > 2
    if fmt != "tiff":
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            planes = math.prod(n for n, a in zip(series.shape, series.axes, strict=True) if a not in "YXS")
            return len(tif.pages) > 1 or planes > 1
    except READ_ERRORS:
        return True  # read_stack then says what is wrong with the file


class _Failed:
    """A read error kept for ``get_data``: LoadImage swallows errors in ``read`` and tries its
    other readers (PIL would then load an RGB TIFF our reader refused), but not in ``get_data``.
    """

    __slots__ = ("error",)

    def __init__(self, error: InputError):
        self.error = error


class ZStackReader(ImageReader):
    """MONAI reader for z-stacks (TIFF/OME-TIFF, the paper's npz, NIfTI) and 2D images (TIFF, PNG).

    Gives ZYX (or YX) arrays in the file's dtype, no channel axis (``original_channel_dim`` NaN,
    so ``EnsureChannelFirstd(channel_dim="no_channel")`` adds one), and bad input as InputError.

    Args:
        ndim: 3 reads every file as a z-stack, 2 as a 2D image, None decides per file: z-stack for
            npz/NIfTI and for TIFFs with more than one page or plane, else 2D image.
        min_planes: the fewest planes a z-stack may have.

    Meta (``get_data``): MONAI's ``spatial_shape``, ``original_channel_dim``, ``affine`` and
    ``original_affine`` (array index -> world: diag(spacing, 1), 1.0 where unknown) plus our keys
    in forms that survive a DataLoader's collation and ``decollate_batch`` (collation needs the
    same keys and types in every item and turns None into an error): ``filename_or_obj``,
    ``format``, ``axes``, ``dtype`` and ``unit`` as str (``unit`` "none" when unknown, MONAI's
    spelling of None); ``spacing`` as a float64 array, NaN where unknown; ``nifti_affine`` the
    NIfTI file's affine as a 4x4 float64 array (NaN for other formats; MONAI's own ``affine`` key
    is taken). ``plain_meta`` turns them back into read_stack's form; ``write_stack`` takes either.
    """

    def __init__(self, ndim: int | None = None, min_planes: int = 1):
        super().__init__()
        if ndim not in (None, 2, 3):
            raise ValueError(f"ndim must be 2, 3 or None, got {ndim}")
        self.ndim = ndim
        self.min_planes = min_planes

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        suffixes = STACK_SUFFIXES + IMAGE_SUFFIXES
        return all(_suffix(f, suffixes) is not None for f in ensure_tuple(filename))

    def _read_one(self, path: Path) -> tuple[np.ndarray, dict]:
        ndim = self.ndim
        if ndim is None:
            if not path.exists():
                raise InputError(path, "no such file: check the path")
            ndim = 3 if _is_stack_file(path) else 2
        return read_stack(path, self.min_planes) if ndim == 3 else read_image(path)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> list[tuple[np.ndarray, dict]] | _Failed:
        try:
            return [self._read_one(Path(f)) for f in ensure_tuple(data)]
        except InputError as e:
            return _Failed(e)

    def get_data(self, img: list[tuple[np.ndarray, dict]] | _Failed) -> tuple[np.ndarray, dict]:
        if isinstance(img, _Failed):
            raise img.error
        arrays = [array for array, _ in img]
        first = img[0][1]
        if any(a.shape != arrays[0].shape for a in arrays):
            shapes = ", ".join(_shape_str(a.shape) for a in arrays)
            raise InputError(first["filename_or_obj"], f"files read together differ in shape ({shapes})")
        n = arrays[0].ndim
        spacing = np.asarray(first["spacing"] if first["spacing"] is not None else [math.nan] * n, dtype=np.float64)
        affine = np.diag([*np.nan_to_num(spacing, nan=1.0), *[1.0] * (4 - n)])
        nifti_affine = np.asarray(first.get("affine", np.full((4, 4), math.nan)), dtype=np.float64)
        meta = {
            "filename_or_obj": first["filename_or_obj"],
            "format": first["format"],
            "axes": first["axes"],
            "dtype": first["dtype"],
            "unit": first["unit"] or "none",
            "spacing": spacing,
            "nifti_affine": nifti_affine,
            "spatial_shape": np.asarray(arrays[0].shape),
            "original_channel_dim": float("nan"),
            "affine": affine,
            "original_affine": affine.copy(),
        }
        if len(arrays) == 1:
            return arrays[0], meta
        meta["original_channel_dim"] = 0  # several files: stacked as channels, like MONAI's readers
        return np.stack(arrays), meta


def register_readers() -> None:
    """Make ``LoadImage(reader="zstackreader")`` work, and add ZStackReader to the readers
    ``LoadImage()`` tries by suffix (it is registered last, so it is tried first).
    """
    from monai.transforms.io.array import SUPPORTED_READERS

    SUPPORTED_READERS["zstackreader"] = ZStackReader


register_readers()
