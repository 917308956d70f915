"""RobustNormalised (and its inverse, also through Invertd), FocusWeightsd, CheckSized."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged
from scripts.data.io import ZStackReader, write_stack
from scripts.data.transforms import CheckSized, FocusWeightsd, RobustNormalised
from scripts.errors import InputError, find_input_error
from scripts.zsegan.focus import reference_alpha, reference_cycle_weights


def _random_stack(shape=(6, 16, 16), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 1000 + 50


def _focus_stack(depth: int, sharpest: int, blurriest: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    """Noise whose contrast falls off away from ``sharpest``; ``blurriest`` is made a flat plane."""
    g = torch.Generator().manual_seed(seed)
    texture = torch.rand(size, size, generator=g)
    scale = torch.tensor([1.0 / (1.0 + abs(z - sharpest)) for z in range(depth)])
    stack = 0.5 + scale[:, None, None] * (texture - 0.5)
    stack[blurriest] = 0.5
    return stack


# ----------------------------------------------------------------------------- RobustNormalised


def test_robust_normalised_maps_percentiles_to_plus_minus_one():
    img = MetaTensor(_random_stack().unsqueeze(0))
    lo, hi = torch.quantile(img.as_tensor().flatten(), torch.tensor([0.005, 0.995])).tolist()
    out = RobustNormalised("image")({"image": img})["image"]
    flat = out.as_tensor().flatten()
    new_lo, new_hi = torch.quantile(flat, torch.tensor([0.005, 0.995])).tolist()
    assert new_lo == pytest.approx(-1.0, abs=1e-5)
    assert new_hi == pytest.approx(1.0, abs=1e-5)
    # linear map: the minimum goes below -1 (no clipping)
    assert float(flat.min()) == pytest.approx((float(img.min()) - lo) * 2 / (hi - lo) - 1, abs=1e-5)
    assert float(flat.min()) < -1.0


def test_robust_normalised_custom_percentiles():
    img = MetaTensor(torch.arange(101, dtype=torch.float32).reshape(1, 1, 101))
    out = RobustNormalised("image", lower=10, upper=90)({"image": img})["image"]
    assert float(out[0, 0, 10]) == pytest.approx(-1.0, abs=1e-5)
    assert float(out[0, 0, 90]) == pytest.approx(1.0, abs=1e-5)
    assert float(out[0, 0, 50]) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("lower, upper", [(50, 50), (60, 40), (-1, 50), (1, 101)])
def test_robust_normalised_rejects_bad_percentiles(lower, upper):
    with pytest.raises(ValueError):
        RobustNormalised("image", lower=lower, upper=upper)


def test_robust_normalised_inverse_restores_input():
    original = _random_stack().unsqueeze(0)
    t = RobustNormalised("image")
    out = t({"image": MetaTensor(original.clone())})
    assert not torch.allclose(out["image"].as_tensor(), original)
    assert len(out["image"].applied_operations) == 1
    back = t.inverse(out)["image"]
    torch.testing.assert_close(back.as_tensor(), original, rtol=1e-5, atol=1e-3)
    assert len(back.applied_operations) == 0


def test_robust_normalised_inverse_through_invertd(tmp_path):
    rng = np.random.default_rng(0)
    array = (rng.random((6, 16, 16)) * 3000 + 20).astype(np.uint16)
    path = tmp_path / "stack.tif"
    write_stack(path, array, {"dtype": "uint16", "spacing": (2.0, 0.5, 0.5), "unit": "um"})

    preprocessing = Compose(
        [
            LoadImaged("image", reader=ZStackReader(ndim=3), image_only=True),
            EnsureChannelFirstd("image", channel_dim="no_channel"),
            RobustNormalised("image"),
        ]
    )
    data = preprocessing({"image": str(path)})
    assert float(data["image"].min()) < -0.9 and float(data["image"].max()) > 0.9
    data["pred"] = data["image"].clone()  # an "identity network"
    inverted = Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True)(
        data
    )
    pred = inverted["pred"]
    assert pred.shape == (1, 6, 16, 16)
    np.testing.assert_allclose(pred[0].cpu().numpy(), array.astype(np.float32), rtol=1e-5, atol=1e-2)
    assert pred.meta["filename_or_obj"] == str(path)
    # the image itself stays normalised
    assert float(inverted["image"].max()) < 2.0


def test_robust_normalised_constant_image_names_the_file():
    img = MetaTensor(torch.full((1, 4, 8, 8), 7.0), meta={"filename_or_obj": "/data/flat_stack.tif"})
    with pytest.raises(InputError, match="flat_stack.tif") as info:
        RobustNormalised("image")({"image": img})
    assert info.value.path == "/data/flat_stack.tif"
    assert "constant" in info.value.problem


# ----------------------------------------------------------------------------- FocusWeightsd


def test_focus_weights_dynamic_ranges_follow_sharpness():
    depth, sharpest, blurriest = 9, 3, 8
    stack = _focus_stack(depth, sharpest, blurriest).unsqueeze(0)
    out = FocusWeightsd("image", alpha_range=(1.0, 1.67), cycle_range=(1.03, 3.05))({"image": stack})
    for key in ("alpha", "cycle_weight", "sharpness"):
        assert out[key].shape == (depth,), key
    assert int(out["sharpness"].argmax()) == sharpest
    assert float(out["sharpness"][sharpest]) == pytest.approx(1.0)
    assert float(out["alpha"][sharpest]) == pytest.approx(1.0, abs=1e-5)
    assert float(out["alpha"][blurriest]) == pytest.approx(1.67, abs=1e-5)
    assert float(out["cycle_weight"][sharpest]) == pytest.approx(1.03, abs=1e-5)
    assert float(out["cycle_weight"][blurriest]) == pytest.approx(3.05, abs=1e-5)
    assert int(out["alpha"].argmin()) == sharpest and int(out["alpha"].argmax()) == blurriest
    assert torch.all(out["alpha"] >= 1.0 - 1e-5) and torch.all(out["alpha"] <= 1.67 + 1e-5)
    assert out["image"] is stack  # the image itself is not changed


def test_focus_weights_reference_mode_uses_the_tables():
    stack = _random_stack((29, 16, 16)).unsqueeze(0)
    out = FocusWeightsd("image", mode="reference")({"image": stack})
    torch.testing.assert_close(out["alpha"], reference_alpha(29))
    torch.testing.assert_close(out["cycle_weight"], reference_cycle_weights(29))
    assert out["sharpness"].shape == (29,)


def test_focus_weights_reference_mode_rejects_other_depths():
    stack = MetaTensor(_random_stack((17, 16, 16)).unsqueeze(0), meta={"filename_or_obj": "short.tif"})
    with pytest.raises(InputError, match="short.tif.*17 planes"):
        FocusWeightsd("image", mode="reference")({"image": stack})


def test_focus_weights_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        FocusWeightsd("image", mode="fixed")


# ----------------------------------------------------------------------------- CheckSized


def test_check_sized_passes_large_enough_images():
    img = MetaTensor(torch.zeros(1, 5, 32, 40))
    out = CheckSized("image", (32, 32))({"image": img})
    assert out["image"] is img


def test_check_sized_names_file_and_both_sizes():
    img = MetaTensor(torch.zeros(1, 5, 20, 40), meta={"filename_or_obj": "/data/small.tif"})
    with pytest.raises(InputError) as info:
        CheckSized("image", (32, 32), what="stack")({"image": img})
    assert info.value.path == "/data/small.tif"
    assert "20x40" in info.value.problem and "32x32" in info.value.problem
    assert "stack" in info.value.problem


def test_check_sized_real_file_through_load(tmp_path):
    path = tmp_path / "tiny.tif"
    write_stack(path, np.ones((3, 8, 8), np.uint8), {"dtype": "uint8"})
    load = Compose(
        [
            LoadImaged("image", reader=ZStackReader(ndim=3), image_only=True),
            EnsureChannelFirstd("image", channel_dim="no_channel"),
            CheckSized("image", (16, 16)),
        ]
    )
    with pytest.raises(Exception) as info:
        load({"image": str(path)})
    # MONAI's Compose wraps what a transform raises; the InputError is the cause
    found = find_input_error(info.value)
    assert found is not None and found.path == str(path) and "8x8" in found.problem


# ---------------------------------------------------------------- augmentation over the systems' nuisances
NUISANCE_SETTINGS = {
    "shift": {"prob": 1.0, "range": [-0.5, 0.5]},
    "blur": {"prob": 1.0, "range": [0.3, 1.0]},
    "haze": {"prob": 1.0, "range": [0.1, 0.3], "sigma_px": [4.0, 8.0]},
    "gain": {"prob": 1.0, "range": [-0.2, 0.2]},
    "offset": {"prob": 1.0, "range": [-0.1, 0.1]},
    "noise": {"prob": 1.0, "shot": [0.0, 0.02], "read": [0.01, 0.05]},
}


def _pair(seed: int = 0, shape=(1, 24, 24)) -> dict:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(shape, generator=g) * 2 - 1
    return {"image": MetaTensor(image), "label": MetaTensor(image.clone() * 0.5)}


def _augment(name: str, seed: int, pair: dict, spatial_dims: int = 2):
    from scripts.data.transforms import nuisance_augmentation

    (transform,) = nuisance_augmentation(spatial_dims, "image", **{name: NUISANCE_SETTINGS[name]})
    transform.set_random_state(seed)
    return transform, transform({k: v.clone() for k, v in pair.items()})


@pytest.mark.parametrize("name", list(NUISANCE_SETTINGS))
def test_each_nuisance_changes_the_input_only_and_is_reproducible_from_the_seed(name):
    pair = _pair()
    _, out = _augment(name, 0, pair)
    assert not torch.equal(out["image"].as_tensor(), pair["image"].as_tensor())
    assert out["image"].shape == pair["image"].shape
    assert torch.equal(out["label"].as_tensor(), pair["label"].as_tensor())  # the confocal target stays the truth
    _, again = _augment(name, 0, pair)
    assert torch.equal(again["image"].as_tensor(), out["image"].as_tensor())
    _, other = _augment(name, 1, pair)
    assert not torch.equal(other["image"].as_tensor(), out["image"].as_tensor())


@pytest.mark.parametrize("seed", range(4))
def test_each_nuisance_draws_within_its_range(seed):
    pair = _pair(seed)
    x = pair["image"].as_tensor()
    t, out = _augment("gain", seed, pair)
    factor = (out["image"].as_tensor() / x).mean().item() - 1
    assert -0.2 - 1e-5 <= factor <= 0.2 + 1e-5
    t, out = _augment("offset", seed, pair)
    offset = (out["image"].as_tensor() - x).mean().item()
    assert -0.1 - 1e-5 <= offset <= 0.1 + 1e-5
    t, out = _augment("noise", seed, pair)
    assert 0.0 <= t.shot <= 0.02 and 0.01 <= t.read <= 0.05
    residual = (out["image"].as_tensor() - x).std().item()
    assert residual <= 3 * (t.read**2 + 2 * t.shot) ** 0.5  # variance at most read² + shot · 2 (x <= 1)
    t, out = _augment("haze", seed, pair)
    assert 0.1 <= t.strength <= 0.3 and 4.0 <= t.sigma <= 8.0
    added = out["image"].as_tensor() - x
    assert added.min() >= 0 and added.max() <= 0.3 * 2 + 1e-5  # haze only adds, at most h · max(x + 1)
    t, out = _augment("blur", seed, pair)
    assert 0.3 <= t.rand_smooth.x <= 1.0 and 0.3 <= t.rand_smooth.y <= 1.0
    assert out["image"].as_tensor().std() < x.std()  # blurred: less contrast
    t, out = _augment("shift", seed, pair)
    shift = t.rand_affine.rand_affine_grid.translate_params
    assert len(shift) == 2 and all(-0.5 <= s <= 0.5 for s in shift)


def test_nuisances_leave_the_planes_of_a_stack_alone():
    pair = _pair(shape=(1, 3, 24, 24))
    pair["image"][0, 1] = 0.0  # a flat plane stays flat: no blur or shift along z
    for name in ("shift", "blur", "haze"):
        _, out = _augment(name, 0, pair, spatial_dims=3)
        assert out["image"].shape == pair["image"].shape
        assert float(out["image"][0, 1].std()) < 1e-5, name


def test_nuisances_with_probability_zero_are_left_out_and_bad_values_refused():
    from scripts.data.transforms import nuisance_augmentation, nuisance_ok

    assert nuisance_augmentation(2, "image", gain={"prob": 0, "range": [0, 0]}) == []
    assert all(nuisance_ok(name, value) for name, value in NUISANCE_SETTINGS.items())
    bad = [
        ("gain", {"prob": 0.5, "range": [-1.0, 0.2]}),  # a gain of 0
        ("blur", {"prob": 0.5, "range": [-0.5, 1.0]}),  # a negative sigma
        ("shift", {"prob": 1.5, "range": [0, 1]}),  # a probability above 1
        ("offset", {"prob": 0.5, "range": [0.2, 0.1]}),  # lo above hi
        ("noise", {"prob": 0.5, "shot": [0, 0.1]}),  # read missing
        ("haze", {"prob": 0.5, "range": [0, 0.3], "sigma_px": [0, 4]}),  # a zero sigma
        ("offset", [0.1, 0.2]),
    ]
    for name, value in bad:
        assert not nuisance_ok(name, value), (name, value)
        with pytest.raises(InputError, match=f"--aug_{name} .*: must be a mapping"):
            nuisance_augmentation(2, "image", **{name: value})


def test_system_normalised_maps_each_image_by_its_systems_range_and_inverts():
    from scripts.data.transforms import SystemNormalised

    t = SystemNormalised("image", {"A": (100.0, 300.0), "B": (0.0, 10.0)})
    image = MetaTensor(torch.full((1, 4, 4), 200.0), meta={"filename_or_obj": "/data/widefield/A_00003.tif"})
    out = t({"image": image})
    assert torch.allclose(out["image"].as_tensor(), torch.zeros(1, 4, 4))
    assert torch.allclose(t.inverse(out)["image"].as_tensor(), torch.full((1, 4, 4), 200.0))
    assert t.for_file("B_00000.tif").intensity_range == (0.0, 10.0)
    for name, phrase in (("cell.tif", "has no system label"), ("C_00000.tif", "is of system C")):
        image = MetaTensor(torch.ones(1, 4, 4), meta={"filename_or_obj": name})
        with pytest.raises(InputError, match=phrase):
            t({"image": image})
