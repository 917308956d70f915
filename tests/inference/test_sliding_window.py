"""Inference helpers: output paths, input checks, weights loading, writing the enhanced stacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.inferers.utils import _get_scan_interval
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged
from scripts.data.io import ZStackReader, read_image, read_stack, write_image, write_stack
from scripts.data.transforms import RobustNormalised
from scripts.errors import InputError
from scripts.inference.sliding_window import (
    Accelerated,
    HaloInferer,
    SaveStackd,
    auto_overlap,
    check_inputs,
    enhance,
    halo_width,
    inference_datalist,
    load_weights,
    output_path,
    read_settings,
    settings_path,
    sliding_window,
    window_overlap,
    write_settings,
)
from scripts.nets.networks import Generator3D

SPACING = (2.0, 0.25, 0.5)  # z, y, x in um


def _generator(channels: int = 4) -> Generator3D:
    return Generator3D(channels=channels, n_residual_blocks=1)


def _write(path: Path, shape=(5, 12, 10), dtype="uint8", seed=0) -> np.ndarray:
    array = np.random.default_rng(seed).integers(10, 200, size=shape).astype(dtype)
    write_stack(path, array, {"dtype": dtype, "spacing": SPACING, "unit": "um"})
    return array


# ----------------------------------------------------------------------------- output_path


@pytest.mark.parametrize(
    "name, expected",
    [
        ("stack.tif", "stack_enhanced.tif"),
        ("stack.tiff", "stack_enhanced.tiff"),
        ("brain.nii.gz", "brain_enhanced.nii.gz"),
        ("brain.nii", "brain_enhanced.nii"),
        ("paper.v2.npz", "paper.v2_enhanced.npz"),
    ],
)
def test_output_path_keeps_suffix(tmp_path, name, expected):
    out = output_path(tmp_path / "in" / name, tmp_path / "out")
    assert out == tmp_path / "out" / expected


def test_output_path_custom_postfix(tmp_path):
    assert output_path("data/s.npz", tmp_path, postfix="_gs").name == "s_gs.npz"


def test_output_path_refuses_to_overwrite_input(tmp_path):
    source = tmp_path / "stack.tif"
    with pytest.raises(InputError, match="overwrite") as info:
        output_path(source, tmp_path, postfix="")
    assert info.value.path == str(source)
    # a relative spelling of the same folder is caught too
    with pytest.raises(InputError, match="overwrite"):
        output_path(source, tmp_path / "sub" / "..", postfix="")


# ----------------------------------------------------------------------------- inference_datalist, check_inputs


def checked(input_path: Path, **kwargs) -> list[dict[str, str]]:
    """What running inference reads: the inputs listed, then read and checked."""
    ndim = kwargs.pop("ndim", 3)
    return check_inputs(inference_datalist(input_path, ndim=ndim), input_path, ndim=ndim, **kwargs)


def test_inference_datalist_file_and_folder(tmp_path):
    _write(tmp_path / "b.tif")
    _write(tmp_path / "a.tif", seed=1)
    (tmp_path / "notes.txt").write_text("not a stack")
    assert checked(tmp_path) == [{"image": str(tmp_path / n)} for n in ("a.tif", "b.tif")]
    assert checked(tmp_path / "b.tif") == [{"image": str(tmp_path / "b.tif")}]


def test_inference_datalist_lists_without_reading(tmp_path):
    (tmp_path / "b.tif").write_bytes(b"this is not a tiff file")
    assert inference_datalist(tmp_path) == [{"image": str(tmp_path / "b.tif")}]  # read when run: check_inputs
    assert inference_datalist(tmp_path / "nowhere") == []  # a config parses without its default input


def test_check_inputs_names_the_bad_file(tmp_path):
    _write(tmp_path / "a.tif")
    (tmp_path / "b.tif").write_bytes(b"this is not a tiff file")
    _write(tmp_path / "c.tif", seed=2)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError) as info:
        checked(tmp_path)
    assert info.value.path == str(tmp_path / "b.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_check_inputs_checks_min_planes(tmp_path):
    _write(tmp_path / "thin.tif", shape=(3, 12, 10))
    with pytest.raises(InputError, match="3 planes") as info:
        checked(tmp_path, min_planes=4)
    assert info.value.path == str(tmp_path / "thin.tif")
    assert len(checked(tmp_path, min_planes=3)) == 1


def test_check_inputs_checks_the_intensity_range_before_anything_is_written(tmp_path):
    _write(tmp_path / "a_good.tif")
    _write(tmp_path / "c_good.tif", seed=2)
    write_stack(tmp_path / "b_const.tif", np.full((5, 12, 10), 7, np.uint16), {"dtype": "uint16"})
    with pytest.raises(InputError, match="constant intensity") as info:
        checked(tmp_path)
    assert info.value.path == str(tmp_path / "b_const.tif")


def test_inference_datalist_leaves_out_the_outputs_of_a_run_before(tmp_path):
    """output_dir the input folder: the second run enhances a.tif again, not a_enhanced.tif."""
    _write(tmp_path / "a.tif")
    _write(tmp_path / "a_enhanced.tif", seed=1)
    _write(tmp_path / "b_enhanced.tif", seed=2)  # no b.tif: an input like any other
    names = [Path(d["image"]).name for d in inference_datalist(tmp_path, output_dir=tmp_path)]
    assert names == ["a.tif", "b_enhanced.tif"]
    assert len(inference_datalist(tmp_path, output_dir=tmp_path / "elsewhere")) == 3


def test_check_inputs_refuses_a_missing_path(tmp_path):
    with pytest.raises(InputError, match="no such file") as info:
        checked(tmp_path / "nowhere")
    assert info.value.path == str(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty folder"):
        inference_datalist(tmp_path / "empty")


# ----------------------------------------------------------------------------- load_weights


def test_load_weights_plain_state_dict(tmp_path):
    trained = _generator()
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    network = _generator().train()
    loaded = load_weights(network, tmp_path / "model.pt")
    assert loaded is network and not loaded.training
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_load_weights_from_training_checkpoint(tmp_path):
    trained = _generator()
    checkpoint = {"g_s": trained.state_dict(), "g_b": _generator().state_dict(), "trainer": {"iteration": 3}}
    torch.save(checkpoint, tmp_path / "state_checkpoint_3.pt")
    network = load_weights(_generator(), tmp_path / "state_checkpoint_3.pt")
    x = torch.rand(1, 1, 5, 8, 8)
    torch.testing.assert_close(network(x), trained.eval()(x))


def test_load_weights_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such weights file") as info:
        load_weights(_generator(), tmp_path / "model.pt")
    assert info.value.path == str(tmp_path / "model.pt")


def test_load_weights_garbage_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="cannot read weights") as info:
        load_weights(_generator(), path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("content", [torch.zeros(3), [1, 2, 3]])
def test_load_weights_file_without_state_dict(tmp_path, content):
    path = tmp_path / "model.pt"
    torch.save(content, path)
    with pytest.raises(InputError, match="state_dict"):
        load_weights(_generator(), path)


def test_load_weights_wrong_architecture(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(_generator(channels=8).state_dict(), path)
    with pytest.raises(InputError, match="do not fit") as info:
        load_weights(_generator(channels=4), path)
    assert info.value.path == str(path)
    torch.save(Generator3D(channels=4, n_residual_blocks=2).state_dict(), path)  # extra keys
    with pytest.raises(InputError, match="do not fit"):
        load_weights(_generator(channels=4), path)


def test_settings_travel_beside_their_weights_and_only_theirs(tmp_path):
    """write_settings/read_settings: the settings file of paired.pt is paired.settings.json, read back as written;
    weights without one have none ({}); settings written for other weights, or unreadable, are refused by name."""
    path = tmp_path / "paired.pt"
    torch.save(_generator().state_dict(), path)
    assert read_settings(path) == {}  # weights written before settings were: applied as before
    settings = {"builder": "Generator3D", "system_ranges": {"A": [100.0, 400.0]}, "intensity_lower": 0.5}
    assert write_settings(path, settings) == settings_path(path) == tmp_path / "paired.settings.json"
    assert {k: v for k, v in read_settings(path).items() if k != "weights_sha256"} == settings
    torch.save(_generator(channels=8).state_dict(), path)  # other weights over the file, its settings left
    with pytest.raises(InputError, match="was written for other weights") as raised:
        read_settings(path)
    assert raised.value.path == str(settings_path(path))
    settings_path(path).write_text("{not json")
    with pytest.raises(InputError, match="cannot read the settings of paired.pt"):
        read_settings(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paired.pt", "paired.settings.json"]  # written atomically


# ----------------------------------------------------------------------------- SaveStackd


def _loaded(path: Path):
    load = Compose(
        [
            LoadImaged("image", reader=ZStackReader(ndim=3), image_only=True),
            EnsureChannelFirstd("image", channel_dim="no_channel"),
        ]
    )
    return load({"image": str(path)})["image"]


def test_save_stack_writes_input_dtype_and_spacing(tmp_path):
    source = tmp_path / "in" / "stack.tif"
    original = _write(source)
    image = _loaded(source)
    pred = MetaTensor(image.as_tensor().float() + 0.4, meta=dict(image.meta))
    pred[0, 0, 0, 0] = 300.0  # out of uint8 range: clipped
    pred[0, 0, 0, 1] = -5.0
    out_dir = tmp_path / "out"
    result = SaveStackd(keys="pred", output_dir=str(out_dir))({"image": image, "pred": pred})
    assert result["pred"] is pred
    array, meta = read_stack(out_dir / "stack_enhanced.tif")
    assert array.dtype == np.uint8 and meta["dtype"] == "uint8"
    assert meta["spacing"] == pytest.approx(SPACING, rel=1e-5) and meta["unit"] == "um"
    expected = original.copy()
    expected[0, 0, 0], expected[0, 0, 1] = 255, 0
    np.testing.assert_array_equal(array, expected)
    assert sorted(p.name for p in out_dir.iterdir()) == ["stack_enhanced.tif"]


def test_save_stack_after_invertd_round_trip(tmp_path):
    """The inference postprocessing: normalise, 'predict' the input, invert, write as the input."""
    source = tmp_path / "stack.tif"
    original = _write(source, dtype="uint16")
    preprocessing = Compose(
        [
            LoadImaged("image", reader=ZStackReader(ndim=3), image_only=True),
            EnsureChannelFirstd("image", channel_dim="no_channel"),
            RobustNormalised("image"),
        ]
    )
    data = preprocessing({"image": str(source)})
    data["pred"] = data["image"].clone()
    post = Compose(
        [
            Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True),
            SaveStackd(keys="pred", output_dir=str(tmp_path / "out")),
        ]
    )
    post(data)
    array, meta = read_stack(tmp_path / "out" / "stack_enhanced.tif")
    assert array.dtype == np.uint16
    np.testing.assert_array_equal(array, original)
    assert meta["spacing"] == pytest.approx(SPACING, rel=1e-5)


def test_save_stack_refuses_to_overwrite_input(tmp_path):
    source = tmp_path / "stack.tif"
    original = _write(source)
    image = _loaded(source)
    with pytest.raises(InputError, match="overwrite"):
        SaveStackd(keys="pred", output_dir=str(tmp_path), postfix="")({"pred": image * 0})
    np.testing.assert_array_equal(read_stack(source)[0], original)


def test_enhance_brings_the_output_back_to_the_input_units():
    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    x = np.random.default_rng(0).uniform(50, 200, (5, 16, 16)).astype(np.float32)
    y = enhance(Identity(), x, SlidingWindowInferer(roi_size=(-1, 8, 8)), RobustNormalised("image"), "cpu")
    assert y.dtype == np.float32 and np.allclose(y, x, atol=1e-3)


# ----------------------------------------------------------------------------- Accelerated


def test_accelerated_precisions_and_channels_last_keep_the_output():
    torch.manual_seed(0)
    network, x = _generator().eval(), torch.randn(2, 1, 6, 20, 16)
    with torch.no_grad():
        expected = network(x)
        for precision, tolerance in (("float32", 1e-5), ("bfloat16", 0.1)):
            for channels_last in (False, True):
                fast = Accelerated(network, precision, channels_last)
                y = fast(x)
                assert y.dtype == torch.float32 and y.shape == x.shape
                err = (y - expected).abs()
                assert err.max() <= tolerance and (precision == "float32" or err.max() > 0)  # bf16 does differ
    assert [k.split(".", 1)[1] for k in fast.state_dict()] == list(network.state_dict())  # only the weights
    with pytest.raises(InputError, match="--precision must be one of float32, float16, bfloat16, not 'fp8'"):
        Accelerated(network, "fp8")


def test_accelerated_compiles_once_and_falls_back_without_a_compiler(monkeypatch, caplog):
    import pickle

    torch.manual_seed(0)
    network, x = _generator().eval(), torch.randn(1, 1, 6, 20, 16)
    calls, compiles = [], []

    def compile_(module):
        compiles.append(module)

        def run(t):
            calls.append(torch._inductor.config.freezing)
            return module(t) * 1.0  # stands in for the compiled G_S

        return run

    monkeypatch.setattr(torch, "compile", compile_)
    fast = Accelerated(network, compile=True)
    Accelerated(network).warm_up(x.shape)  # nothing to compile
    assert compiles == []
    fast.warm_up(x.shape)
    assert len(compiles) == 1
    with torch.no_grad():
        torch.testing.assert_close(fast(x), network(x))
    assert compiles == [network] and calls == [True, True]  # compiled once; weights frozen while it runs
    assert not torch._inductor.config.freezing
    copy = pickle.loads(pickle.dumps(fast))  # as sent to Dask workers: without the compiled function
    assert copy._compiled == {} and copy.compile and "network" in fast._compiled

    def broken(module):
        def run(t):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    fast = Accelerated(network, compile=True)
    with torch.no_grad(), caplog.at_level("WARNING", logger="zsegan"):
        torch.testing.assert_close(fast(x), network(x))
    assert not fast.compile
    assert "torch.compile failed, G_S runs uncompiled (RuntimeError: InvalidCxxCompiler" in caplog.text


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile needs a C++ compiler")
def test_accelerated_really_compiles():
    torch.manual_seed(0)
    network, x = Generator3D(channels=2, n_residual_blocks=1).eval(), torch.randn(1, 1, 4, 8, 8)
    fast = Accelerated(network, compile=True)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), network(x), atol=1e-5, rtol=1e-4)
    assert fast.compile and "network" in fast._compiled  # compiled, not fallen back


# ----------------------------------------------------------------------------- 2D images (the paired workflow)


def test_2d_images_are_listed_checked_and_written_in_their_format(tmp_path):
    array = np.random.default_rng(0).integers(10, 60000, size=(12, 10)).astype(np.uint16)
    write_image(tmp_path / "in" / "cells.png", array, spacing=(0.25, 0.25))
    write_image(tmp_path / "in" / "more.tif", array, spacing=(0.5, 0.5))
    assert [Path(i["image"]).name for i in checked(tmp_path / "in", ndim=2)] == ["cells.png", "more.tif"]
    assert output_path(tmp_path / "in" / "cells.png", tmp_path / "out", "_confocal").name == "cells_confocal.png"
    load = LoadImaged(keys="image", reader=ZStackReader(ndim=2), image_only=True)
    for name in ("cells.png", "more.tif"):
        image = EnsureChannelFirstd(keys="image", channel_dim="no_channel")(
            load({"image": str(tmp_path / "in" / name)})
        )
        pred = MetaTensor(image["image"].as_tensor().float() + 0.4, meta=dict(image["image"].meta))
        SaveStackd(keys="pred", output_dir=str(tmp_path / "out"), postfix="_confocal")({"pred": pred})
        out, meta = read_image(tmp_path / "out" / name.replace(".", "_confocal."))
        np.testing.assert_array_equal(out, array)
        assert out.dtype == np.uint16 and meta["spacing"] == pytest.approx(
            (0.25, 0.25) if "png" in name else (0.5, 0.5)
        )


def test_2d_inference_refuses_a_stack_with_one_line(tmp_path):
    _write(tmp_path / "in" / "stack.tif")
    with pytest.raises(InputError, match="stack.tif: has 5 planes .* expected a 2D image"):
        checked(tmp_path / "in", ndim=2)


def test_a_z_stack_in_as_channels_gives_the_middle_planes_image_out(tmp_path):
    """The paired G with --input_planes: a stack of that many planes is checked for its planes, run with its planes as
    channels, and its one-plane output written as a 2D image with the stack's y/x pixel size (TIFF), or as a stack of
    one plane in a stack format (npz); the inverse mapping brings it to the input's units."""
    _write(tmp_path / "in" / "stack.tif")  # 5 planes
    with pytest.raises(InputError, match="stack.tif: has 5 planes, but G takes z-stacks of input_planes 3"):
        checked(tmp_path / "in", planes=3)
    assert len(checked(tmp_path / "in", planes=5)) == 1

    class Middle(torch.nn.Module):
        def forward(self, x):
            return x[:, 2:3]

    x = np.random.default_rng(0).uniform(50, 200, (5, 16, 16)).astype(np.float32)
    y = enhance(Middle(), x, SlidingWindowInferer(roi_size=(8, 8)), RobustNormalised("image"), planes_as_channels=True)
    assert y.shape == (16, 16) and np.allclose(y, x[2], atol=1e-3)
    load = LoadImaged(keys="image", reader=ZStackReader(ndim=3), image_only=True)
    image = EnsureChannelFirstd(keys="image", channel_dim=0)(load({"image": str(tmp_path / "in" / "stack.tif")}))
    assert image["image"].shape == (5, 12, 10)
    pred = MetaTensor(image["image"].as_tensor()[2:3].float(), meta=dict(image["image"].meta))
    SaveStackd(keys="pred", output_dir=str(tmp_path / "out"), postfix="_confocal")({"pred": pred})
    out, meta = read_image(tmp_path / "out" / "stack_confocal.tif")
    np.testing.assert_array_equal(out, read_stack(tmp_path / "in" / "stack.tif")[0][2])
    assert out.dtype == np.uint8 and meta["spacing"] == pytest.approx(SPACING[1:], rel=1e-5)
    pred.meta["filename_or_obj"] = str(tmp_path / "in" / "stack.npz")
    SaveStackd(keys="pred", output_dir=str(tmp_path / "out"), postfix="_confocal")({"pred": pred})
    with np.load(tmp_path / "out" / "stack_confocal.npz") as written:  # one plane: our readers want several
        (array,) = written.values()
    assert array.size == 120 and np.array_equal(np.squeeze(array), read_stack(tmp_path / "in" / "stack.tif")[0][2])


def test_an_overlap_in_pixels_steps_every_window_size_by_the_window_less_those_pixels():
    """Issue 17, item 2: MONAI steps by int(r * (1 - fraction)); the fractions given make it r - overlap_px exactly
    (32 / 96 alone would step 1 px short), so a larger window keeps the same overlap instead of a quarter of itself."""
    for r in range(2, 700):
        for px in {0, 1, r // 8, r // 4, r // 3, r // 2, r - 1}:
            fractions = window_overlap((-1, r, r + 1), 0.25, px)
            image = (29, 10 * r, 10 * r)
            assert _get_scan_interval(image, (29, r, r + 1), 3, fractions) == (29, r - px, r + 1 - px), (r, px)
    assert window_overlap((-1, 128, 128), 0.25, 32) == (0.25, 0.25, 0.25)
    assert _get_scan_interval((29, 2048, 2048), (29, 512, 512), 3, window_overlap((-1, 512, 512), 0.25, 32))[1:] == (
        480, 480,
    )  # fmt: skip
    assert window_overlap((-1, 128, 128), 0.25, None) == 0.25  # no overlap_px: MONAI's fraction, as before
    assert window_overlap((16, 128, 128), 0.5, 32)[0] == 0.5  # planes keep the fraction
    with pytest.raises(InputError, match="--sw_overlap_px 64: must be below the window's 64 px"):
        window_overlap((-1, 128, 64), 0.25, 64)


def test_an_overlap_in_pixels_equal_to_the_fraction_gives_the_same_output():
    network = _generator().eval()
    stack = np.random.default_rng(0).uniform(0, 255, (6, 40, 52)).astype(np.float32)
    outputs = [
        enhance(
            network, stack, SlidingWindowInferer((-1, 16, 16), 1, overlap, mode="gaussian"), RobustNormalised("image")
        )
        for overlap in (0.25, window_overlap((-1, 16, 16), 0.25, 4), window_overlap((-1, 16, 16), 0.25, 6))
    ]
    assert np.array_equal(outputs[0], outputs[1])  # 4 px of 16: the windows of 0.25, the same output
    assert not np.array_equal(outputs[0], outputs[2])  # 6 px: other windows


def _window_independent(norm: str = "batch") -> Generator3D:
    """A tiny G_S with ``norm``, its batch norms' running statistics from a few training passes, in eval mode."""
    torch.manual_seed(0)
    g = Generator3D(channels=4, n_residual_blocks=1, norm=norm, upsampling="pixelshuffle")
    with torch.no_grad():
        for _ in range(3):
            g(torch.randn(1, 1, 8, 48, 48))
    return g.eval()


def test_halo_tiling_of_a_batch_norm_g_s_equals_one_window_over_the_whole_field():
    """Issue 17, item 1: with g_norm "batch" in eval mode and a halo of G_S's reach (25 px here), the tiled output
    is the whole field's to 0.5% of its range; the instance-norm default is not (its windows' statistics differ)."""
    x = torch.randn(1, 1, 8, 136, 112).cumsum(-1).cumsum(-2) / 20
    inferer = HaloInferer((-1, 80, 80), halo=28)  # the reach, 25, on G_S's stride-4 lattice
    with torch.no_grad():
        for norm, equal in (("batch", True), ("instance", False)):
            g = _window_independent(norm)
            whole, tiled = g(x), inferer(x, g)
            error = ((tiled - whole).abs().max() / (whole.max() - whole.min())).item()
            assert (error < 0.005) == equal, (norm, error)
    with pytest.raises(InputError, match="multiples of 4"):
        HaloInferer((-1, 64, 64), halo=30)


@pytest.mark.parametrize("shape", [(1, 1, 7, 101, 77), (2, 1, 6, 61, 130), (1, 1, 5, 30, 90)])
def test_halo_tiling_equals_one_window_on_sizes_off_the_stride_lattice(shape):
    """Issue 17: y and x that are not multiples of G_S's stride 4 are padded as G_S pads them (replicate, centred),
    tiled on that lattice and cropped back: still one window's output over the whole field, for any batch of
    windows, a batch of stacks, a field smaller than the window along an axis."""
    g = _window_independent()
    x = torch.randn(*shape).cumsum(-1).cumsum(-2) / 20
    with torch.no_grad():
        whole = g(x)
        for sw_batch_size in (1, 3):
            tiled = HaloInferer((-1, 64, 64), halo=28, sw_batch_size=sw_batch_size)(x, g)
            assert tiled.shape == whole.shape
            assert ((tiled - whole).abs().max() / (whole.max() - whole.min())).item() < 1e-5


def test_sw_tiling_builds_the_configs_sliding_window(caplog):
    """``--sw_tiling``: blend is MONAI's sliding window (overlap in pixels as before); halo a HaloInferer whose halo
    is G_S's reach on its lattice (auto or null) or half sw_overlap_px; one error line for anything else, and a
    warning where G_S's instance norms make halo tiling inexact."""
    g = _window_independent()
    blend = sliding_window("blend", (-1, 64, 64), 2, 0.25, 16, "constant", g)
    assert isinstance(blend, SlidingWindowInferer) and blend.overlap == window_overlap((-1, 64, 64), 0.25, 16)
    for overlap_px, halo in ((None, 28), ("auto", 28), (40, 20)):
        inferer = sliding_window("halo", (-1, 64, 64), 2, 0.25, overlap_px, "gaussian", g)
        assert isinstance(inferer, HaloInferer) and (inferer.halo, inferer.sw_batch_size) == (halo, 2)
    assert halo_width("auto") is None  # checking the command line: G_S's reach once it is built
    assert "instance norms" not in caplog.text
    sliding_window("halo", (-1, 64, 64), 1, 0.25, None, "gaussian", _window_independent("instance"))
    assert "instance norms" in caplog.text
    with pytest.raises(InputError, match="--sw_tiling 'seamless': must be one of blend, halo"):
        sliding_window("seamless", (-1, 64, 64), 1, 0.25, None, "gaussian", g)
    with pytest.raises(InputError, match="must be twice a halo that is a multiple of 4"):
        sliding_window("halo", (-1, 64, 64), 1, 0.25, 36, "gaussian", g)
    with pytest.raises(InputError, match=r"the halo \(28 px\) and the window's y, x \[48, 48\]"):
        sliding_window("halo", (-1, 48, 48), 1, 0.25, "auto", "gaussian", g)


def test_auto_overlap_is_twice_the_reach_on_the_stride_lattice():
    """Issue 17, item 2: ``--sw_overlap_px auto`` overlaps windows by twice G_S's reach (25 px: 52, a multiple of 4),
    whatever their size; checking the command line without the network leaves it for later; too small a window
    gets one error line with the pixels it would need."""
    g = _window_independent()
    assert auto_overlap(g) == 52
    for r in (64, 128, 512):
        fractions = window_overlap((-1, r, r), 0.25, "auto", g)
        assert _get_scan_interval((29, 4 * r, 4 * r), (29, r, r), 3, fractions)[1:] == (r - 52, r - 52)
    assert window_overlap((-1, 64, 64), 0.25, "auto") == 0.25
    with pytest.raises(
        InputError, match=r"--sw_overlap_px auto \(52 px, twice G_S's reach\): must be below the window's 48"
    ):
        window_overlap((-1, 48, 48), 0.25, "auto", g)
