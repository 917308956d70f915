"""Tests of scripts.data.io: round trips per format, input validation, the MONAI reader, atomic writes."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from monai.data import DataLoader, Dataset, decollate_batch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from monai.transforms.io.array import SUPPORTED_READERS
from PIL import Image
from scripts.data import io as zio
from scripts.data.atomic import write_text_atomic
from scripts.errors import InputError, find_input_error

SPACING = (2.0, 0.5, 0.5)  # z, y, x in um


def _stack(dtype="uint16", shape=(5, 8, 6)) -> np.ndarray:
    values = np.arange(np.prod(shape)).reshape(shape) % 251
    return values.astype(dtype)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "int16", "int32", "float64"])
@pytest.mark.parametrize("suffix", [".tif", ".tiff"])
def test_tiff_round_trip(tmp_path, dtype, suffix):
    array = _stack(dtype)
    path = tmp_path / f"stack{suffix}"
    zio.write_stack(path, array, {"dtype": dtype, "spacing": SPACING, "unit": "um"})
    back, meta = zio.read_stack(path)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, array)
    assert meta["format"] == "tiff" and meta["axes"] == "ZYX" and meta["dtype"] == dtype
    assert meta["spacing"] == pytest.approx(SPACING) and meta["unit"] == "um"
    assert meta["filename_or_obj"] == str(path)
    if dtype in ("uint8", "uint16", "float32"):  # written as ImageJ hyperstack
        with tifffile.TiffFile(path) as tif:
            assert tif.is_imagej
            assert tif.imagej_metadata["spacing"] == 2.0 and tif.imagej_metadata["unit"] == "um"


@pytest.mark.parametrize("dtype", ["uint16", "float64"])
def test_three_plane_tiff_is_not_written_as_rgb(tmp_path, dtype):
    """tifffile stores a (3, Y, X) array as planar RGB unless told otherwise."""
    path = tmp_path / "three.tif"
    zio.write_stack(path, _stack(dtype, (3, 8, 6)), {"dtype": dtype})
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.photometric == tifffile.PHOTOMETRIC.MINISBLACK
    assert zio.read_stack(path)[0].shape == (3, 8, 6)


def test_big_endian_tiff_reads_native(tmp_path):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, _stack(">u2"), byteorder=">")
    array, meta = zio.read_stack(path)
    assert array.dtype.isnative and meta["dtype"] == "uint16" and np.array_equal(array, _stack())


def test_tiff_without_voxel_size(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _stack())
    array, meta = zio.read_stack(path)
    assert array.shape == (5, 8, 6) and meta["spacing"] is None and meta["unit"] is None
    zio.write_stack(tmp_path / "copy.tif", array, meta)
    assert zio.read_stack(tmp_path / "copy.tif")[1]["spacing"] is None


def test_tiff_pages_read_as_planes(tmp_path):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for plane in _stack():
            tif.write(plane, metadata=None)
    array, meta = zio.read_stack(path)
    assert np.array_equal(array, _stack()) and meta["axes"] in ("IYX", "QYX")


@pytest.mark.parametrize(
    ("unit", "factor"), [("micron", 1.0), ("\\u00B5m", 1.0), ("microns", 1.0), ("um", 1.0), ("nm", 1e-3), ("mm", 1e3)]
)
def test_imagej_units(tmp_path, unit, factor):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        _stack(),
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.25),
        metadata={"spacing": 2.0, "unit": unit, "axes": "ZYX"},
    )
    meta = zio.read_stack(path)[1]
    assert meta["unit"] == "um"
    assert meta["spacing"] == pytest.approx((2.0 * factor, 0.25 * factor, 0.5 * factor))


def test_imagej_unknown_unit_keeps_numbers(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, _stack(), imagej=True, resolution=(2, 4), metadata={"spacing": 3.0, "axes": "ZYX"})
    meta = zio.read_stack(path)[1]
    assert meta["unit"] is None and meta["spacing"] == pytest.approx((3.0, 0.25, 0.5))


@pytest.mark.parametrize("suffix", [".ome.tif", ".ome.tiff"])
def test_ome_tiff_spacing(tmp_path, suffix):
    path = tmp_path / f"stack{suffix}"
    metadata = {"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 2.0}
    tifffile.imwrite(path, _stack(), ome=True, metadata=metadata)
    array, meta = zio.read_stack(path)
    assert np.array_equal(array, _stack())
    assert meta["spacing"] == pytest.approx((2.0, 0.25, 0.5)) and meta["unit"] == "um"


def test_npz_round_trip(tmp_path):
    yxz = np.random.default_rng(0).integers(0, 255, size=(128, 128, 29), dtype=np.uint8)
    path = tmp_path / "paper.npz"
    np.savez_compressed(path, yxz)  # the paper's files: key arr_0, YXZ
    array, meta = zio.read_stack(path)
    assert array.shape == (29, 128, 128) and np.array_equal(array, yxz.transpose(2, 0, 1))
    assert meta["format"] == "npz" and meta["axes"] == "YXZ" and meta["dtype"] == "uint8"
    assert meta["spacing"] is None and meta["unit"] is None
    out = tmp_path / "out.npz"
    zio.write_stack(out, array, meta)
    with np.load(out) as npz:
        assert list(npz.keys()) == ["arr_0"]
        written = npz["arr_0"]
    assert written.shape == yxz.shape and written.dtype == yxz.dtype
    assert written.tobytes() == yxz.tobytes()


def test_npz_single_other_key(tmp_path):
    path = tmp_path / "vol.npz"
    np.savez(path, volume=np.zeros((8, 6, 5), np.float32))
    assert zio.read_stack(path)[0].shape == (5, 8, 6)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_affine(tmp_path, suffix):
    xyz = np.random.default_rng(1).integers(-500, 500, size=(20, 30, 12)).astype(np.int16)
    affine = np.array([[0.3, 0.1, 0, 5.5], [-0.1, 0.3, 0, -2.25], [0, 0, 1.5, 10], [0, 0, 0, 1]])
    img = nib.Nifti1Image(xyz, affine)
    img.header.set_xyzt_units("mm")
    path = tmp_path / f"vol{suffix}"
    nib.save(img, path)
    array, meta = zio.read_stack(path)
    original = nib.load(path)
    assert array.shape == (12, 30, 20) and array.dtype == np.int16
    assert np.array_equal(array, xyz.transpose(2, 1, 0))
    assert meta["format"] == "nifti" and meta["axes"] == "XYZ" and meta["unit"] == "um"
    zooms = original.header.get_zooms()
    assert meta["spacing"] == pytest.approx([1e3 * z for z in zooms[::-1]])
    assert np.array_equal(np.asarray(meta["affine"]), original.affine)

    out = tmp_path / f"out{suffix}"
    zio.write_stack(out, array, meta)
    written = nib.load(out)
    assert np.array_equal(written.affine, original.affine)
    assert written.header.get_zooms() == zooms
    assert written.header.get_xyzt_units()[0] == "mm"
    assert written.get_data_dtype() == np.int16
    assert np.array_equal(np.asanyarray(written.dataobj), xyz)


def test_nifti_from_tiff_meta(tmp_path):
    tif = tmp_path / "stack.tif"
    zio.write_stack(tif, _stack(), {"dtype": "uint16", "spacing": SPACING, "unit": "um"})
    array, meta = zio.read_stack(tif)
    zio.write_stack(tmp_path / "stack.nii.gz", array, meta)
    back, back_meta = zio.read_stack(tmp_path / "stack.nii.gz")
    assert np.array_equal(back, array) and back.dtype == np.uint16
    assert back_meta["spacing"] == pytest.approx(SPACING) and back_meta["unit"] == "um"


def test_write_casts_to_meta_dtype(tmp_path):
    values = np.array([-5.0, 3.6, 300.0, np.nan]).reshape(1, 1, 4).repeat(3, axis=0)
    path = tmp_path / "cast.tif"
    zio.write_stack(path, values, {"dtype": "uint8", "spacing": None, "unit": None})
    array = zio.read_stack(path)[0]
    assert array.dtype == np.uint8 and array[0, 0].tolist() == [0, 4, 255, 0]


def test_write_creates_parent_folder(tmp_path):
    path = tmp_path / "a" / "b" / "stack.npz"
    zio.write_stack(path, _stack(), {"dtype": "uint16"})
    assert np.array_equal(zio.read_stack(path)[0], _stack())


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_png_round_trip(tmp_path, dtype):
    image = _stack(dtype)[0]
    path = tmp_path / "image.png"
    zio.write_image(path, image, (0.5, 0.25))
    back, meta = zio.read_image(path)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, image)
    assert meta["format"] == "png" and meta["axes"] == "YX" and meta["dtype"] == dtype
    assert meta["spacing"] == pytest.approx((0.5, 0.25)) and meta["unit"] == "um"


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64"])
def test_tiff_image_round_trip(tmp_path, dtype):
    image = _stack(dtype)[0]
    path = tmp_path / "image.tif"
    zio.write_image(path, image, (0.3, 0.7))
    back, meta = zio.read_image(path)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, image)
    assert meta["format"] == "tiff" and meta["axes"] == "YX"
    assert meta["spacing"] == pytest.approx((0.3, 0.7)) and meta["unit"] == "um"


def test_image_with_singleton_leading_axis(tmp_path):
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, _stack()[:1])
    image, meta = zio.read_image(path)
    assert image.shape == (8, 6) and meta["spacing"] is None


def test_png_holds_only_8_and_16_bit(tmp_path):
    with pytest.raises(InputError, match="PNG holds only"):
        zio.write_image(tmp_path / "x.png", np.zeros((4, 4), np.float32))


# ----------------------------------------------------------------------------- validation


def _tiff(path, data, **kwargs):
    tifffile.imwrite(path, data, **kwargs)


def _truncated(path, **kwargs):
    _tiff(path, _stack(shape=(5, 64, 60)), **kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _npz(path, data):
    np.savez(path, data)


def _nifti(path, data):
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def _with_nan(dtype="float32"):
    data = _stack(dtype)
    data[0, 0, :2] = np.nan
    data[1, 1, 1] = np.inf
    return data


def _huge_npz(path):
    """A 400-byte npz whose header declares 1 TiB."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<u2", "fortran_order": False, "shape": (1024, 1024, 2**19)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("arr_0.npy", header.getvalue() + b"x" * 100)


STACK_CASES = {
    "missing": ("stack.tif", lambda p: None, "no such file"),
    "suffix": ("stack.jpg", lambda p: p.write_bytes(b"x"), "unsupported file type"),
    "not tiff": ("stack.tif", lambda p: p.write_bytes(b"hello world"), "cannot read"),
    "truncated": ("stack.tif", _truncated, "file truncated"),
    "truncated imagej": ("stack.tif", lambda p: _truncated(p, imagej=True, metadata={"axes": "ZYX"}), "file truncated"),
    "truncated ome": ("s.ome.tif", lambda p: _truncated(p, ome=True), "file truncated"),
    "truncated npz": (
        "stack.npz",
        lambda p: (_npz(p, _stack()), p.write_bytes(p.read_bytes()[:100])),
        "file truncated",
    ),
    "truncated nifti": (
        "stack.nii",
        lambda p: (_nifti(p, _stack()), p.write_bytes(p.read_bytes()[:400])),
        "file truncated",
    ),
    "2d": ("stack.tif", lambda p: _tiff(p, _stack()[0]), "is a 2D image (Y×X = 8×6), expected a z-stack"),
    "one plane": ("stack.tif", lambda p: _tiff(p, _stack()[:1]), "is a 2D image"),
    "rgb stack": (
        "stack.tif",
        lambda p: _tiff(p, _stack("uint8", (4, 8, 6, 3)), photometric="rgb"),
        "RGB/multichannel",
    ),
    "rgb image": (
        "stack.tif",
        lambda p: _tiff(p, _stack("uint8", (8, 6, 3)), photometric="rgb"),
        "convert it to a single grayscale channel",
    ),
    "imagej channels": (
        "stack.tif",
        lambda p: _tiff(p, _stack(shape=(4, 2, 8, 6)), imagej=True, metadata={"axes": "ZCYX"}),
        "RGB/multichannel",
    ),
    "npz rgb": ("stack.npz", lambda p: _npz(p, _stack("uint8", (8, 6, 5, 3))), "RGB/multichannel"),
    "nifti 4d": ("stack.nii.gz", lambda p: _nifti(p, _stack(shape=(6, 8, 5, 2))), "has 4 dimensions"),
    "npz 5d": ("stack.npz", lambda p: _npz(p, _stack(shape=(2, 2, 8, 6, 5))), "has 5 dimensions"),
    "too few planes": ("stack.tif", lambda p: _tiff(p, _stack()), "has 5 planes; the network needs at least 16"),
    "complex": ("stack.npz", lambda p: _npz(p, _stack("complex64")), "dtype complex64 is not supported"),
    "bool": ("stack.npz", lambda p: _npz(p, _stack("bool")), "dtype bool is not supported"),
    "nan": ("stack.tif", lambda p: _tiff(p, _with_nan()), "contains 2 NaN / 1 Inf values"),
    "nan nifti": ("stack.nii", lambda p: _nifti(p, _with_nan("float64")), "contains 2 NaN / 1 Inf values"),
    "beyond float32": ("stack.npz", lambda p: _npz(p, _stack("float64") * 1e300), "beyond float32's range"),
    "huge header": ("stack.npz", _huge_npz, "does not fit in memory"),
    "npz keys": ("stack.npz", lambda p: np.savez(p, a=_stack(), b=_stack()), "expected key 'arr_0' or a single array"),
}


@pytest.mark.parametrize("case", list(STACK_CASES))
def test_read_stack_rejects(tmp_path, case):
    name, make, phrase = STACK_CASES[case]
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError) as info:
        zio.read_stack(path, min_planes=16 if case == "too few planes" else 1)
    assert name in str(info.value) and phrase in str(info.value)
    assert info.value.path == str(path)


def _png(path, mode, size=(6, 8)):
    Image.new(mode, size).save(path)


IMAGE_CASES = {
    "missing": ("image.png", lambda p: None, "no such file"),
    "suffix": ("image.jpg", lambda p: p.write_bytes(b"hello world"), "unsupported file type"),
    "npz stack": ("image.npz", lambda p: _npz(p, _stack().transpose(1, 2, 0)), "has 5 planes"),
    "nifti stack": ("image.nii.gz", lambda p: _nifti(p, _stack().transpose(2, 1, 0)), "has 5 planes"),
    "not png": ("image.png", lambda p: p.write_bytes(b"hello world"), "cannot read"),
    "truncated png": (
        "image.png",
        lambda p: (zio.write_image(p, _stack("uint8", (64, 60))), p.write_bytes(p.read_bytes()[:60])),
        "file truncated",
    ),
    "rgb png": ("image.png", lambda p: _png(p, "RGB"), "RGB/multichannel"),
    "rgba png": ("image.png", lambda p: _png(p, "RGBA"), "convert it to a single grayscale channel"),
    "gray+alpha png": ("image.png", lambda p: _png(p, "LA"), "RGB/multichannel"),
    "palette png": ("image.png", lambda p: _png(p, "P"), "palette"),
    "1-bit png": ("image.png", lambda p: _png(p, "1"), "dtype bool is not supported"),
    "rgb tiff": ("image.tif", lambda p: _tiff(p, _stack("uint8", (8, 6, 3)), photometric="rgb"), "RGB/multichannel"),
    "stack": ("image.tif", lambda p: _tiff(p, _stack()), "has 5 planes"),
    "nan": ("image.tif", lambda p: _tiff(p, _with_nan()[0]), "contains 2 NaN / 0 Inf values"),
    "complex": ("image.tif", lambda p: _tiff(p, _stack("complex64")[0]), "dtype complex64 is not supported"),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_read_image_rejects(tmp_path, case):
    name, make, phrase = IMAGE_CASES[case]
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError) as info:
        zio.read_image(path)
    assert name in str(info.value) and phrase in str(info.value)


def test_list_files(tmp_path):
    for name in ["b.tif", "a.npz", "c.nii.gz", "notes.txt", ".hidden.tif"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.tif").write_bytes(b"")
    assert zio.list_files(tmp_path, zio.STACK_SUFFIXES) == [tmp_path / n for n in ["a.npz", "b.tif", "c.nii.gz"]]
    assert zio.list_files(tmp_path / "notes.txt", zio.STACK_SUFFIXES) == [tmp_path / "notes.txt"]
    with pytest.raises(InputError, match="no such file"):
        zio.list_files(tmp_path / "nope", zio.STACK_SUFFIXES)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty folder: no \.tif/\.tiff/\.png files"):
        zio.list_files(empty, zio.IMAGE_SUFFIXES)


# ----------------------------------------------------------------------------- MONAI


def _pipeline(reader):
    return Compose(
        [LoadImaged(keys="image", reader=reader), EnsureChannelFirstd(keys="image", channel_dim="no_channel")]
    )


@pytest.mark.parametrize(
    "reader",
    ["scripts.data.io.ZStackReader", "zstackreader", zio.ZStackReader(ndim=3, min_planes=4), None],
    ids=["dotted", "registered", "instance", "auto"],
)
def test_load_image_pipeline(tmp_path, reader):
    path = tmp_path / "stack.tif"
    zio.write_stack(path, _stack(), {"dtype": "uint16", "spacing": SPACING, "unit": "um"})
    image = _pipeline(reader)({"image": str(path)})["image"]
    assert tuple(image.shape) == (1, 5, 8, 6)
    assert torch.equal(image[0], torch.as_tensor(_stack(), dtype=torch.float32))
    assert image.meta["format"] == "tiff" and image.meta["axes"] == "ZYX" and image.meta["dtype"] == "uint16"
    assert image.meta["filename_or_obj"] == str(path) and image.meta["unit"] == "um"
    assert np.allclose(image.meta["spacing"], SPACING)
    assert np.allclose(image.affine.numpy(), np.diag([*SPACING, 1.0]))


def test_reader_registered():
    assert SUPPORTED_READERS["zstackreader"] is zio.ZStackReader


def test_reader_2d_and_ndim(tmp_path):
    png = tmp_path / "image.png"
    zio.write_image(png, _stack("uint8")[0])
    image = _pipeline(zio.ZStackReader())({"image": png})["image"]
    assert tuple(image.shape) == (1, 8, 6) and image.meta["axes"] == "YX"
    single = tmp_path / "single.tif"
    tifffile.imwrite(single, _stack()[0])
    assert tuple(_pipeline(zio.ZStackReader())({"image": single})["image"].shape) == (1, 8, 6)
    with pytest.raises(Exception) as info:  # Compose wraps it; find_input_error unwraps it
        _pipeline(zio.ZStackReader(ndim=3))({"image": single})
    assert "is a 2D image" in str(find_input_error(info.value))


@pytest.mark.parametrize("suffix", [".npz", ".nii.gz"])
def test_one_plane_stack_formats_read_as_images(tmp_path, suffix):
    """What inference writes for a z-stack in with input_planes (one plane, in the stack's format) reads back."""
    plane = _stack()[:1]
    path = tmp_path / f"plane{suffix}"
    zio.write_stack(path, plane, {"dtype": "uint16", "spacing": SPACING, "unit": "um"})
    image, meta = zio.read_image(path)
    assert image.shape == (8, 6) and np.array_equal(image, plane[0]) and meta["axes"] == "YX"
    assert tuple(_pipeline(zio.ZStackReader())({"image": path})["image"].shape) == (1, 8, 6)
    stack = tmp_path / f"stack{suffix}"
    zio.write_stack(stack, _stack()[:2], {"dtype": "uint16", "spacing": SPACING, "unit": "um"})
    assert tuple(_pipeline(zio.ZStackReader())({"image": stack})["image"].shape) == (1, 2, 8, 6)


def test_reader_errors_are_not_swallowed(tmp_path):
    """LoadImage tries its other readers when ``read`` fails: PIL would load this RGB TIFF."""
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, _stack("uint8", (8, 6, 3)), photometric="rgb")
    for reader in ["scripts.data.io.ZStackReader", None]:
        with pytest.raises(Exception) as info:
            _pipeline(reader)({"image": path})
        assert "RGB/multichannel" in str(find_input_error(info.value))


def test_reader_several_files_become_channels(tmp_path):
    paths = [tmp_path / "a.npz", tmp_path / "b.npz"]
    for path in paths:
        zio.write_stack(path, _stack(), {"dtype": "uint16"})
    image = LoadImaged(keys="image", reader="zstackreader")({"image": paths})["image"]
    assert tuple(image.shape) == (2, 5, 8, 6) and image.meta["original_channel_dim"] == 0


def test_meta_survives_data_loader(tmp_path):
    tif = tmp_path / "stack.tif"
    zio.write_stack(tif, _stack(), {"dtype": "uint16", "spacing": SPACING, "unit": "um"})
    npz = tmp_path / "paper.npz"
    zio.write_stack(npz, _stack("uint8"), {"dtype": "uint8"})
    nii = tmp_path / "vol.nii.gz"
    zio.write_stack(nii, _stack("float32"), {"dtype": "float32", "spacing": SPACING, "unit": "um"})
    files = [{"image": str(p)} for p in (tif, npz, nii)]
    loader = DataLoader(Dataset(files, _pipeline("zstackreader")), batch_size=1, num_workers=0)
    for path, batch in zip((tif, npz, nii), loader, strict=True):
        assert tuple(batch["image"].shape) == (1, 1, 5, 8, 6)
        image = decollate_batch(batch)[0]["image"]
        original_array, original = zio.read_stack(path)
        assert zio.plain_meta(image.meta) == original
        out = tmp_path / "out" / path.name  # write_stack takes the decollated MONAI meta directly
        zio.write_stack(out, image[0].numpy(), image.meta)
        array, meta = zio.read_stack(out)
        assert array.dtype == original_array.dtype and np.array_equal(array, original_array)
        assert meta == {**original, "filename_or_obj": str(out)}


def test_batches_of_mixed_files_collate(tmp_path):
    tif = tmp_path / "stack.tif"
    zio.write_stack(tif, _stack(), {"dtype": "uint16", "spacing": SPACING, "unit": "um"})
    npz = tmp_path / "paper.npz"
    zio.write_stack(npz, _stack(), {"dtype": "uint16"})
    files = [{"image": str(tif)}, {"image": str(npz)}]
    batch = next(iter(DataLoader(Dataset(files, _pipeline("zstackreader")), batch_size=2)))
    assert tuple(batch["image"].shape) == (2, 1, 5, 8, 6)
    metas = [zio.plain_meta(item["image"].meta) for item in decollate_batch(batch)]
    assert metas[0]["spacing"] == pytest.approx(SPACING) and metas[1]["spacing"] is None
    assert [m["unit"] for m in metas] == ["um", None]


# ----------------------------------------------------------------------------- atomic writes


def _failing_writer(*args, **kwargs):
    """Creates the (temporary) file it is given, then fails like a full disk."""
    Path(next(a for a in args if isinstance(a, (str, Path)))).write_bytes(b"partial")
    raise OSError("disk full")


@pytest.mark.parametrize(
    ("suffix", "module", "name"),
    [(".tif", tifffile, "imwrite"), (".npz", np, "savez_compressed"), (".nii.gz", nib, "save")],
)
@pytest.mark.parametrize("existing", [False, True])
def test_write_stack_is_atomic(tmp_path, monkeypatch, suffix, module, name, existing):
    path = tmp_path / f"stack{suffix}"
    if existing:
        path.write_bytes(b"old contents")
    monkeypatch.setattr(module, name, _failing_writer)
    with pytest.raises(OSError, match="disk full"):
        zio.write_stack(path, _stack(), {"dtype": "uint16", "spacing": SPACING, "unit": "um"})
    assert _leftovers(tmp_path) == []
    if existing:
        assert path.read_bytes() == b"old contents"
    else:
        assert not path.exists()


def test_write_image_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "image.tif"
    path.write_bytes(b"old contents")
    monkeypatch.setattr(tifffile, "imwrite", _failing_writer)
    with pytest.raises(OSError, match="disk full"):
        zio.write_image(path, _stack()[0], (0.5, 0.5))
    assert _leftovers(tmp_path) == [] and path.read_bytes() == b"old contents"


def test_write_replaces_existing_file(tmp_path):
    path = tmp_path / "stack.tif"
    path.write_bytes(b"old contents")
    zio.write_stack(path, _stack(), {"dtype": "uint16"})
    assert np.array_equal(zio.read_stack(path)[0], _stack()) and _leftovers(tmp_path) == []


def test_write_text_atomic_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = write_text_atomic(tmp_path / "config.yaml", "a: 1\n")
    assert path.read_text() == "a: 1\n"
    original = Path.write_text

    def broken(self, text, *args, **kwargs):
        original(self, text[:2])
        raise RuntimeError("disk full")

    monkeypatch.setattr(Path, "write_text", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_text_atomic(path, "a: 2\n")
    monkeypatch.undo()
    assert path.read_text() == "a: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
