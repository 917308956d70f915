"""Paired datasets: every bad pair is one clear InputError naming the file; the split is by image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scripts.data.io import write_image, write_stack
from scripts.data.pairs import check_input_planes, middle_plane, misregistration, paired_datalist, split_by_image
from scripts.errors import InputError
from scripts.simulate.fluorescence import simulate_pair


@pytest.fixture
def dataset(tmp_path):
    """Two registered pairs of 64 px (no jitter, so registration is exact)."""
    for i in range(2):
        widefield, confocal, _ = simulate_pair(np.random.default_rng(i), 64, "A", jitter_px=0.0)
        write_image(tmp_path / "widefield" / f"A_{i:05d}.tif", widefield)
        write_image(tmp_path / "confocal" / f"A_{i:05d}.tif", confocal)
    return tmp_path


def test_good_pairs_are_listed(dataset):
    items = paired_datalist(dataset)
    assert [(p["image"].split("/")[-2:], p["label"].split("/")[-2:]) for p in items] == [
        (["widefield", "A_00000.tif"], ["confocal", "A_00000.tif"]),
        (["widefield", "A_00001.tif"], ["confocal", "A_00001.tif"]),
    ]


def test_a_missing_partner_on_either_side(dataset):
    (dataset / "confocal" / "A_00001.tif").rename(dataset / "confocal" / "A_00009.tif")
    with pytest.raises(InputError, match="A_00001.tif: has no partner in .*confocal"):
        paired_datalist(dataset)
    (dataset / "widefield" / "A_00001.tif").unlink()
    with pytest.raises(InputError, match="A_00009.tif: has no partner in .*widefield"):
        paired_datalist(dataset)


def test_sizes_that_differ(dataset):
    write_image(dataset / "confocal" / "A_00001.tif", np.zeros((64, 48), np.uint16))
    with pytest.raises(InputError, match=r"A_00001.tif: and its confocal partner differ in size \(64x64 and 64x48\)"):
        paired_datalist(dataset)


def test_a_misregistered_pair(dataset):
    path = dataset / "widefield" / "A_00000.tif"
    widefield, confocal, _ = simulate_pair(np.random.default_rng(0), 64, "A", jitter_px=0.0)
    write_image(path, np.roll(widefield, 6, axis=1))
    with pytest.raises(
        InputError, match=r"A_00000.tif: is misregistered .* by \(0.0, (5.9|6.0)\) px .* max_shift_px 2.0"
    ):
        paired_datalist(dataset)
    assert len(paired_datalist(dataset, max_shift_px=None)) == 2  # not measured
    assert misregistration(widefield, confocal) == pytest.approx([0, 0], abs=0.5)


def test_wrong_dimensionality(dataset):
    write_stack(dataset / "widefield" / "A_00001.tif", np.zeros((3, 64, 64), np.uint16), {"dtype": "uint16"})
    with pytest.raises(InputError, match="A_00001.tif: has 3 planes .* expected a 2D image"):
        paired_datalist(dataset)
    with pytest.raises(InputError, match="A_00000.tif: is a 2D image .* expected a z-stack"):
        paired_datalist(dataset, ndim=3)


def test_wide_field_z_stacks_in_with_input_planes(tmp_path):
    """input_planes: z-stacks of that many planes in, 2D targets; a stack with other planes, other y/x sizes, or
    misregistered in its middle plane is refused naming the file; the key itself must be 1 or odd, with 2D."""
    for i in range(2):
        widefield, confocal, _ = simulate_pair(np.random.default_rng(i), 64, "A", planes=3, jitter_px=0.0)
        write_stack(tmp_path / "widefield" / f"A_{i:05d}.tif", widefield, {"dtype": "uint16"})
        write_image(tmp_path / "confocal" / f"A_{i:05d}.tif", confocal)
    assert len(paired_datalist(tmp_path, input_planes=3)) == 2
    with pytest.raises(InputError, match="A_00000.tif: has 3 planes, not input_planes 5"):
        paired_datalist(tmp_path, input_planes=5)
    with pytest.raises(InputError, match="A_00000.tif: has 3 planes .* expected a 2D image"):
        paired_datalist(tmp_path)  # z-stacks without input_planes
    stack = simulate_pair(np.random.default_rng(0), 64, "A", planes=3, jitter_px=0.0)[0]
    write_stack(tmp_path / "widefield" / "A_00000.tif", np.roll(stack, 6, axis=2), {"dtype": "uint16"})
    with pytest.raises(InputError, match=r"A_00000.tif: is misregistered .* by \(0.0, (5.9|6.0)\) px"):
        paired_datalist(tmp_path, input_planes=3)
    write_stack(tmp_path / "widefield" / "A_00000.tif", stack[:, :, :48], {"dtype": "uint16"})
    with pytest.raises(InputError, match=r"A_00000.tif: and its confocal partner differ in size \(64x48 and 64x64\)"):
        paired_datalist(tmp_path, input_planes=3)
    assert check_input_planes(7) == 7
    for bad, ndim, match in [(2, 2, "odd"), (True, 2, "odd"), ("3", 2, "odd"), (0, 2, "odd"), (3, 3, "spatial_dims 2")]:
        with pytest.raises(ValueError, match=f"input_planes .*{match}"):
            check_input_planes(bad, ndim)
    images = [torch.arange(3.0).reshape(3, 1, 1), torch.zeros(1, 2, 2)]
    assert [m.tolist() for m in middle_plane(images)] == [[[[1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]]


def _items(names):
    return [{"image": f"/d/widefield/{n}", "label": f"/d/confocal/{n}"} for n in names]


def test_the_split_is_by_image_reproducible_and_keeps_unseen_systems_for_testing():
    items = _items([f"{s}_{i:05d}.tif" for s in "ABC" for i in range(10)])
    train, val, test = split_by_image(items, 0.1, 0.2, seed=0, train_prefixes=["A_", "B_"])
    assert (len(train), len(val), len(test)) == (14, 2, 4 + 10)
    images = [i["image"] for i in train + val + test]
    assert sorted(images) == sorted(i["image"] for i in items)  # each image in exactly one part
    assert not any("/C_" in i["image"] for i in train + val)
    assert split_by_image(items, 0.1, 0.2, seed=0, train_prefixes=["A_", "B_"]) == (train, val, test)
    assert split_by_image(items, 0.1, 0.2, seed=1, train_prefixes=["A_", "B_"])[0] != train
    assert len(split_by_image(items, 0.1, 0.2)[0]) == 21  # no prefixes: every system is trained on
    with pytest.raises(InputError, match="too few"):
        split_by_image(_items(["a.tif", "b.tif"]), 0.5, 0.4)


def test_system_ranges_come_from_the_training_inputs_and_unseen_systems_from_their_own(tmp_path):
    from scripts.data.pairs import system_intensity_ranges

    def item(name: str, values) -> dict:
        write_image(tmp_path / "widefield" / name, np.asarray(values, np.uint16).reshape(4, 4))
        write_image(tmp_path / "confocal" / name, np.full((4, 4), 60000, np.uint16))  # never read
        return {"image": str(tmp_path / "widefield" / name), "label": str(tmp_path / "confocal" / name)}

    train = [item("A_00000.tif", range(16)), item("A_00001.tif", range(100, 116))]
    test = [item("A_00002.tif", range(1000, 1016)), item("C_00000.tif", range(50, 66))]
    ranges = system_intensity_ranges(train, test, 0, 100)
    assert ranges == {"A": (0.0, 115.0), "C": (50.0, 65.0)}  # A: its training inputs pooled, not its test image
    with pytest.raises(InputError, match="cell.tif: has no system label"):
        system_intensity_ranges(train + [item("cell.tif", range(16))])


def test_inference_maps_by_the_stored_ranges_and_an_unseen_system_by_its_own_inputs(tmp_path, caplog):
    """paired_inference.yaml's ranges: G's stored ones as they are (their files not read), a system G has none for
    from its own inputs pooled (one log line), None for a G trained without system_normalisation."""
    import logging

    from scripts.data.pairs import inference_system_ranges

    def item(name: str, values) -> dict:
        write_image(tmp_path / name, np.asarray(values, np.uint16).reshape(4, 4))
        return {"image": str(tmp_path / name)}

    items = [item("A_00007.tif", range(1000, 1016)), item("C_00000.tif", range(50, 66)), item("C_1.tif", range(16))]
    trained = {"system_ranges": {"A": [0.0, 115.0], "B": [3.0, 40.0]}}
    with caplog.at_level(logging.INFO, logger="zsegan"):
        ranges = inference_system_ranges(trained, items, None, 0, 100, model="paired.pt")
    assert ranges == {"A": (0.0, 115.0), "B": (3.0, 40.0), "C": (0.0, 65.0)}  # C: its two inputs pooled
    (line,) = [r.message for r in caplog.records if "system C" in r.message]
    assert "not among the systems G was trained on (A, B)" in line and "2 input images" in line
    assert inference_system_ranges(trained, items, True, 0, 100) == ranges
    for untrained in ({}, {"system_ranges": None}):  # trained without the switch, or weights without settings
        assert inference_system_ranges(untrained, items, None) is None  # each input by its own percentiles
        assert inference_system_ranges(untrained, items, False) is None
        with pytest.raises(InputError, match=r"^--system_normalisation True: paired.pt carries no per-system"):
            inference_system_ranges(untrained, items, True, model="paired.pt")
    with caplog.at_level(logging.WARNING, logger="zsegan"):
        assert inference_system_ranges(trained, items, False) is None
    assert "not applied as it was trained" in caplog.text
    with pytest.raises(InputError, match="cell.tif: has no system label .*G's systems: A, B") as raised:
        inference_system_ranges(trained, [*items, item("cell.tif", range(16))], None)
    assert raised.value.path == str(tmp_path / "cell.tif")


def test_a_baseline_evaluated_beside_g_must_share_its_ranges():
    """paired_evaluate.yaml maps each input once for G and the L1-only generator: one trained with other per-system
    ranges (or none where G has them) is refused, naming its file; none on either side (or no settings file) passes."""
    from scripts.data.pairs import check_same_system_ranges

    g = {"system_ranges": {"A": [0.0, 115.0], "B": [3.0, 40.0]}}
    check_same_system_ranges(g, {"l1.pt": {"system_ranges": {"A": [0.0, 115.0], "B": [3.0, 40.0]}}})
    check_same_system_ranges({}, {"l1.pt": {"system_ranges": None}})  # both mapped per image
    for other in ({}, {"system_ranges": {"A": [0.0, 115.0]}}):
        with pytest.raises(
            InputError, match="^l1.pt: was trained with other per-system intensity ranges than paired.pt"
        ) as e:
            check_same_system_ranges(g, {"l1.pt": other}, model="paired.pt")
        assert e.value.path == "l1.pt"
