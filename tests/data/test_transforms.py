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
