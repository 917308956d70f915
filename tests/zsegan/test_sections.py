"""The 2D sections x_par, x_perp and the real crops y*."""

import pytest
import torch
from scripts.zsegan.sections import horizontal_sections, random_crops, sample_depths, vertical_sections


def test_sample_depths_distinct_in_range_and_reproducible():
    g = torch.Generator().manual_seed(3)
    z = sample_depths(4, 29, 7, generator=g)
    assert z.shape == (4, 7) and z.dtype == torch.long
    assert z.min() >= 0 and z.max() < 29
    assert all(len(set(row.tolist())) == 7 for row in z)
    assert torch.equal(z, sample_depths(4, 29, 7, generator=torch.Generator().manual_seed(3)))
    assert sorted(sample_depths(1, 5, 5)[0].tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        sample_depths(1, 5, 6)


def test_horizontal_sections_equal_direct_indexing():
    volume = torch.randn(3, 2, 9, 5, 7)
    z = torch.tensor([[0, 8], [4, 1], [2, 2]])
    sections = horizontal_sections(volume, z)
    assert sections.shape == (6, 2, 5, 7)
    for b in range(3):
        for i in range(2):
            assert torch.equal(sections[b * 2 + i], volume[b, :, z[b, i]])


def test_horizontal_sections_gradients_reach_only_chosen_planes():
    volume = torch.randn(2, 1, 6, 4, 4, requires_grad=True)
    z = torch.tensor([[1], [5]])
    horizontal_sections(volume, z).sum().backward()
    touched = volume.grad.abs().sum(dim=(1, 3, 4)) > 0
    assert touched.tolist() == [[False, True, False, False, False, False], [False] * 5 + [True]]


def test_horizontal_sections_rejects_wrong_z():
    with pytest.raises(ValueError):
        horizontal_sections(torch.randn(2, 1, 6, 4, 4), torch.tensor([[1, 2]]))


def test_vertical_sections_are_xz_then_yz_sections_of_their_stack():
    torch.manual_seed(0)
    batch, n = 2, 5
    volume = torch.randn(batch, 2, 7, 6, 6)
    sections = vertical_sections(volume, n, generator=torch.Generator().manual_seed(1))
    assert sections.shape == (batch * n, 2, 7, 6)
    for b in range(batch):
        xz = [volume[b, :, :, y, :] for y in range(6)]
        yz = [volume[b, :, :, :, x] for x in range(6)]
        kinds, positions = [], []
        for i in range(n):
            s = sections[b * n + i]
            hits_xz = [y for y, ref in enumerate(xz) if torch.equal(s, ref)]
            hits_yz = [x for x, ref in enumerate(yz) if torch.equal(s, ref)]
            assert len(hits_xz) + len(hits_yz) == 1
            kinds.append("xz" if hits_xz else "yz")
            positions.append((kinds[-1], (hits_xz or hits_yz)[0]))
        assert kinds == ["xz"] * 3 + ["yz"] * 2
        assert len(set(positions)) == n  # distinct positions per kind


def test_vertical_sections_gradients_and_reproducibility():
    volume = torch.randn(1, 1, 5, 8, 8, requires_grad=True)
    a = vertical_sections(volume, 4, generator=torch.Generator().manual_seed(2))
    b = vertical_sections(volume, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    a.sum().backward()
    assert volume.grad.abs().sum() > 0
    # each of the 4 sections touches one row or column: 4 * 5 * 8 entries minus the crossings
    assert (volume.grad != 0).sum() < volume.numel()


def test_vertical_sections_require_square_planes():
    with pytest.raises(ValueError, match=r"\(1, 1, 5, 8, 9\)"):
        vertical_sections(torch.randn(1, 1, 5, 8, 9), 2)


def test_random_crops_come_from_the_images():
    images = torch.randn(3, 1, 16, 20)
    crops = random_crops(images, (5, 20), 6, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (6, 1, 5, 20)
    for crop in crops:
        found = any(torch.equal(crop, images[i, :, t : t + 5, :]) for i in range(3) for t in range(16 - 5 + 1))
        assert found
    with pytest.raises(ValueError):
        random_crops(images, (17, 4), 1)


def test_vertical_split_is_one_convention_for_training_and_evaluation():
    """xz sections (fixed y) first, then yz (fixed x); an odd one is an xz section, in training and evaluation."""
    from scripts.evaluation.evaluate import evenly_spaced_vertical_sections
    from scripts.zsegan.sections import vertical_split

    assert [vertical_split(n) for n in (0, 1, 4, 5)] == [(0, 0), (1, 0), (2, 2), (3, 2)]
    volume = torch.arange(6 * 9 * 9, dtype=torch.float32).reshape(1, 1, 6, 9, 9)
    sections = vertical_sections(volume, 5, generator=torch.Generator().manual_seed(0))
    xz_planes = [volume[0, :, :, y, :] for y in range(9)]
    yz_planes = [volume[0, :, :, :, x] for x in range(9)]
    for i, section in enumerate(sections):
        planes = xz_planes if i < 3 else yz_planes
        assert any(torch.equal(section, p) for p in planes)
    views = [view for view, _, _ in evenly_spaced_vertical_sections(volume[0, 0].numpy(), 5)]
    assert views == ["xz", "xz", "xz", "yz", "yz"]
