"""The dataset convention (datalist) and the train/validation split."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripts.data.datalist import ResumableSampler, datalist, train_val_split
from scripts.errors import InputError


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_datalist_stacks_and_infocus(tmp_path):
    _touch(tmp_path / "stacks", "b.tif", "a.npz", "c.nii.gz", "notes.txt", ".hidden.tif", "d.png")
    _touch(tmp_path / "infocus", "y2.png", "y1.tif", "y3.npz")
    stacks = datalist(tmp_path, "stacks")
    assert [item["image"] for item in stacks] == [str(tmp_path / "stacks" / n) for n in ("a.npz", "b.tif", "c.nii.gz")]
    infocus = datalist(str(tmp_path), "infocus")
    assert [item["image"] for item in infocus] == [str(tmp_path / "infocus" / n) for n in ("y1.tif", "y2.png")]
    assert datalist(tmp_path) == stacks  # stacks by default


def test_datalist_missing_or_empty_folder(tmp_path):
    with pytest.raises(InputError) as info:
        datalist(tmp_path, "stacks")
    assert info.value.path == str(tmp_path / "stacks")
    _touch(tmp_path / "infocus", "readme.txt")
    with pytest.raises(InputError, match="empty"):
        datalist(tmp_path, "infocus")


def test_datalist_unknown_kind(tmp_path):
    with pytest.raises(KeyError):
        datalist(tmp_path, "masks")


ITEMS = [{"image": f"s{i:02d}.tif"} for i in range(20)]


@pytest.mark.parametrize("n, fraction", [(20, 0.1), (20, 0.25), (7, 0.5), (2, 0.1), (3, 0.01), (10, 0.95)])
def test_split_disjoint_covering_with_validation(n, fraction):
    items = ITEMS[:n]
    train, val = train_val_split(items, fraction, seed=3)
    names_train, names_val = {d["image"] for d in train}, {d["image"] for d in val}
    assert names_train.isdisjoint(names_val)
    assert names_train | names_val == {d["image"] for d in items}
    assert len(train) + len(val) == n
    assert len(val) >= 1 and len(train) >= 1
    assert len(val) == min(max(1, round(n * fraction)), n - 1)


def test_split_is_deterministic_and_seeded():
    first = train_val_split(ITEMS, 0.25, seed=0)
    assert train_val_split(list(ITEMS), 0.25, seed=0) == first
    others = {str(train_val_split(ITEMS, 0.25, seed=s)[1]) for s in range(1, 6)}
    assert any(o != str(first[1]) for o in others)  # another seed gives another split
    assert first[0] == sorted(first[0], key=str)  # sorted output
    assert ITEMS == [{"image": f"s{i:02d}.tif"} for i in range(20)]  # the input is not shuffled in place


def test_split_zero_fraction_keeps_everything_for_training():
    train, val = train_val_split(ITEMS, 0.0)
    assert val == [] and len(train) == len(ITEMS)


def test_split_single_item():
    assert train_val_split(ITEMS[:1], 0.5) == (ITEMS[:1], [])


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(ITEMS, fraction)


def test_datalist_of_defect_datasets(tmp_path):
    from scripts.simulate.defects import simulate_defect_dataset

    simulate_defect_dataset(tmp_path, tasks=["axial"], n_pairs=2, n_clean=1, n_test=1, size=16, depth=9, progress=False)
    assert [Path(d["image"]).name for d in datalist(tmp_path / "axial" / "train", "defective")] == [
        "sim_00000.tif",
        "sim_00001.tif",
    ]
    assert len(datalist(tmp_path, "clean")) == 1
    with pytest.raises(KeyError):
        datalist(tmp_path, "noisy")


def test_resumable_sampler_takes_the_order_up_where_it_was():
    def passes(sampler, n):
        return [list(sampler) for _ in range(n)]

    whole = passes(ResumableSampler(range(7), seed=3), 3)
    assert all(sorted(p) == list(range(7)) for p in whole) and whole[0] != whole[1]  # each pass its own order
    assert (
        passes(ResumableSampler(range(7), seed=3), 3) == whole and passes(ResumableSampler(range(7), 4), 1) != whole[:1]
    )
    for stop in (0, 4, 7, 10, 14):  # indices given before the checkpoint: mid-pass, at a pass's end
        first = ResumableSampler(range(7), seed=3)
        given, it = [], iter(first)
        for _ in range(stop):
            try:
                given.append(next(it))
            except StopIteration:
                it = iter(first)
                given.append(next(it))
        resumed = ResumableSampler(range(7), seed=3)
        resumed.load_state_dict(first.state_dict())
        rest = [i for p in passes(resumed, 4) for i in p]
        assert (given + rest)[:21] == [i for p in whole for i in p], stop
