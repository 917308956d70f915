"""Stage 1's synthesised pairs: load_generator and synthesise_pairs."""

import numpy as np
import pytest
import torch
from scripts.cingan.synthesise import load_generator, synthesise_pairs
from scripts.data.io import read_stack, write_stack
from scripts.errors import InputError
from scripts.nets.networks import ResNetGenerator

META = {"axes": "ZYX", "dtype": "uint8", "spacing": (1.0, 1.0, 1.0), "unit": "um"}


def generator() -> ResNetGenerator:
    torch.manual_seed(0)
    g = ResNetGenerator(3, channels=4, n_residual_blocks=1, output="mean", n_conditions=2)
    with torch.no_grad():  # each defect type its own scale and shift
        for m in g.encoder:
            m.norm.weight.normal_(1.0, 0.5)
            m.norm.bias.normal_(0.0, 0.5)
    return g


@pytest.fixture
def clean_dir(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        write_stack(tmp_path / "clean" / f"v{i}.tif", rng.integers(0, 255, (5, 12, 12), dtype=np.uint8), META)
    return tmp_path / "clean"


def test_pairs_per_task_in_the_real_pairs_layout(clean_dir, tmp_path):
    out = tmp_path / "synthetic"
    assert synthesise_pairs(generator(), clean_dir, ["denoising", "axial"], out) == {"denoising": 2, "axial": 2}
    for task in ("denoising", "axial"):
        for name in ("v0.tif", "v1.tif"):
            clean, _ = read_stack(out / task / "clean" / name)
            np.testing.assert_array_equal(clean, read_stack(clean_dir / name)[0])
            defective, meta = read_stack(out / task / "defective" / name)
            assert defective.shape == clean.shape and defective.dtype == np.uint8 and meta["axes"] == "ZYX"
    a, b = (read_stack(out / t / "defective" / "v0.tif")[0] for t in ("denoising", "axial"))
    assert not np.array_equal(a, b)  # the condition matters
    windowed = tmp_path / "windowed"
    synthesise_pairs(generator(), clean_dir, ["denoising", "axial"], windowed, roi_size=[-1, 8, 8])
    assert read_stack(windowed / "axial" / "defective" / "v1.tif")[0].shape == (5, 12, 12)


def test_bad_input_is_one_clear_error(clean_dir, tmp_path):
    with pytest.raises(InputError, match="2 defect types but 3 tasks"):
        synthesise_pairs(generator(), clean_dir, ["denoising", "axial", "super_resolution"], tmp_path / "o")
    with pytest.raises(InputError, match="unknown defect task"):
        synthesise_pairs(generator(), clean_dir, ["denoising", "blur"], tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty folder"):
        synthesise_pairs(generator(), tmp_path / "empty", ["denoising", "axial"], tmp_path / "o")
    with pytest.raises(InputError, match="no such generator weights file"):
        load_generator(generator(), tmp_path / "missing.pt")
    torch.save(ResNetGenerator(3, channels=8, n_residual_blocks=1, n_conditions=2).state_dict(), tmp_path / "g8.pt")
    with pytest.raises(InputError, match="does not fit the configured generator"):
        load_generator(generator(), tmp_path / "g8.pt")
    torch.save(generator().state_dict(), tmp_path / "g.pt")
    assert not load_generator(
        ResNetGenerator(3, channels=4, n_residual_blocks=1, output="mean", n_conditions=2), tmp_path / "g.pt"
    ).training
