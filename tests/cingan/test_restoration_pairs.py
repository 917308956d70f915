"""Stage 2's pairs: the real pairs of a task, the synthesised ones added, real ones held out for validation, and
clear refusals."""

import shutil
from pathlib import Path

import pytest
from scripts.cingan.pairs import restoration_split
from scripts.errors import InputError
from scripts.simulate.defects import simulate_defect_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("defects")
    simulate_defect_dataset(path, tasks=["axial"], n_pairs=3, n_clean=1, n_test=1, size=16, depth=9, progress=False)
    synthetic = path / "synthetic" / "axial"  # stands in for cingan_synthesise's output: the same layout
    for side in ("clean", "defective"):
        (synthetic / side).mkdir(parents=True)
        for i in (7, 8):
            shutil.copy(path / "axial" / "train" / side / "sim_00000.tif", synthetic / side / f"syn_{i}.tif")
    return path


def restoration_pairs(*args, **kwargs) -> list[dict]:
    """The training pairs, without validation."""
    train, val, test = restoration_split(*args, **kwargs)
    assert val == [] == test
    return train


def names(items: list[dict]) -> list[tuple[str, str]]:
    return [
        (Path(i["image"]).parent.name, Path(i["label"]).parent.parent.name + "/" + Path(i["image"]).name) for i in items
    ]


def test_real_pairs_first_then_the_synthesised_ones(data):
    synthetic = data / "synthetic"
    items = restoration_pairs(data, "axial", 2, None, synthetic)
    assert names(items) == [
        ("defective", "train/sim_00000.tif"),
        ("defective", "train/sim_00001.tif"),
        ("defective", "axial/syn_7.tif"),
        ("defective", "axial/syn_8.tif"),
    ]
    assert all(
        Path(i["label"]).parent.name == "clean" and Path(i["label"]).name == Path(i["image"]).name for i in items
    )
    assert len(restoration_pairs(data, "axial", None, 1, synthetic)) == 3 + 1
    assert len(restoration_pairs(data, "axial", 0, None, synthetic)) == 2  # synthesised pairs only


def test_real_only_needs_no_synthesised_pairs(data):
    for kwargs in ({"real_only": True}, {"n_synthetic": 0}):
        items = restoration_pairs(data, "axial", 3, synthetic_dir=data / "none", **kwargs)
        assert [Path(i["image"]).name for i in items] == ["sim_00000.tif", "sim_00001.tif", "sim_00002.tif"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "deblur"}, "unknown defect task 'deblur'"),
        ({"synthetic_dir": "/nonexistent"}, "holds no synthesised pairs: train stage 1"),
        ({"synthetic_dir": None}, "no synthetic_dir given"),
        ({"n_real": 4, "real_only": True}, "holds 3 real pairs, fewer than the 4 asked for"),
        ({"n_synthetic": 5}, "holds 2 synthesised pairs, fewer than the 5 asked for"),
        ({"n_real": 0, "real_only": True}, "no training pairs for axial"),
    ],
)
def test_bad_requests_are_one_clear_error(data, kwargs, message):
    args = {"task": "axial", "n_real": 2, "n_synthetic": None, "synthetic_dir": data / "synthetic", **kwargs}
    with pytest.raises(InputError, match=message):
        restoration_pairs(data, **args)


def test_a_real_pair_without_its_partner_is_refused(data, tmp_path):
    shutil.copytree(data / "axial", tmp_path / "axial")
    (tmp_path / "axial" / "train" / "clean" / "sim_00001.tif").unlink()
    with pytest.raises(InputError, match="has no partner"):
        restoration_pairs(tmp_path, "axial", real_only=True)


def test_validation_holds_out_real_pairs_by_volume_whatever_else_is_trained(data):
    synthetic = data / "synthetic"
    train, val, test = restoration_split(data, "axial", None, None, synthetic, val_fraction=0.34, seed=0)
    assert len(val) == 1 and test == [] and Path(val[0]["image"]).parent.parent.name == "train"  # a real pair
    assert val[0] not in train and len(train) == 2 + 2  # the other real pairs, then the synthesised ones
    assert restoration_split(data, "axial", None, None, synthetic, val_fraction=0.34, seed=0)[1] == val  # seeded
    for n_real, real_only in ((1, False), (0, False), (None, True)):  # the same validation pairs
        assert restoration_split(data, "axial", n_real, None, synthetic, real_only, 0.34, 0)[1] == val
    with pytest.raises(InputError, match="holds 2 real pairs besides the 1 validated on, fewer than the 3"):
        restoration_split(data, "axial", 3, real_only=True, val_fraction=0.34)


@pytest.mark.parametrize(
    "val_fraction, message",
    [
        (0.1, r"--val_fraction 0.1 of its 3 real pairs validates on none: raise it, or pass --val_fraction 0"),
        (0.9, "3 pairs are too few to train on after the validation"),
    ],
)
def test_a_bad_validation_share_is_one_clear_error(data, val_fraction, message):
    with pytest.raises(InputError, match=message):
        restoration_split(data, "axial", real_only=True, val_fraction=val_fraction)
