"""Focus measure, normalised sharpness, focus weights and the reference code's tables."""

import math

import numpy as np
import pytest
import torch
from monai.networks.layers import GaussianFilter
from scripts.zsegan.focus import (
    ALPHA_RANGE,
    CYCLE_WEIGHT_RANGE,
    focus_measure,
    focus_weights,
    normalised_sharpness,
    reference_alpha,
    reference_cycle_weights,
)


def blurred_stack() -> torch.Tensor:
    """(Z, Y, X) stack of one random texture, sharpest at z = 2, blurrier outwards."""
    torch.manual_seed(0)
    image = torch.rand(1, 1, 48, 48)
    sigmas = [3.0, 1.5, 0.0, 1.0, 2.0, 4.0]
    return torch.stack([image[0, 0] if s == 0 else GaussianFilter(2, s)(image)[0, 0] for s in sigmas])


def test_blurred_copy_has_lower_focus_measure():
    stack = blurred_stack()
    focus = focus_measure(stack)
    assert focus.shape == (6,)
    assert focus.argmax() == 2
    assert focus[1] > focus[0] and focus[3] > focus[4] > focus[5]


def test_focus_measure_keeps_leading_dims():
    assert focus_measure(torch.rand(2, 3, 16, 16)).shape == (2, 3)
    assert focus_measure(torch.ones(4, 8, 8)).abs().max() == 0
    assert focus_measure(torch.randint(0, 255, (2, 8, 8), dtype=torch.uint8)).dtype == torch.float32


def test_normalised_sharpness():
    stack = blurred_stack()
    r = normalised_sharpness(stack)
    assert r.max() == 1 and r[2] == 1 and r.min() > 0
    assert torch.allclose(normalised_sharpness(stack[None]), r)
    assert torch.equal(normalised_sharpness(torch.zeros(3, 8, 8)), torch.ones(3))


def test_focus_weights_span_the_range():
    stack = blurred_stack()
    w = focus_weights(stack, 1.0, 1.67)
    assert w[2].item() == pytest.approx(1.0)  # sharpest slice
    assert w[5].item() == pytest.approx(1.67)  # blurriest slice
    assert torch.all((w >= 1.0 - 1e-6) & (w <= 1.67 + 1e-6))
    assert w[5] > w[4] > w[3] > w[2]


def test_focus_weights_constant_stack():
    assert torch.allclose(focus_weights(torch.full((5, 8, 8), 0.3), 1.0, 3.0), torch.ones(5))


def gauss_table(sigma: float, u: float) -> float:
    return round(3.4 * math.exp(-u * u / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi)) + 0.1, 2)


def test_reference_alpha_values():
    alpha = reference_alpha()
    assert alpha.shape == (29,)
    # N(0; 0, 1.6) = 0.2493: round(3.4 * 0.2493 + 0.1, 2) + 0.72 = 0.95 + 0.72
    assert alpha[0].item() == pytest.approx(0.95 + 0.72)
    assert alpha[28].item() == pytest.approx(1.67)
    assert alpha[14].item() == pytest.approx(gauss_table(1.6, 2.8) + 0.72)
    assert alpha[14].item() == pytest.approx(1.0)
    assert torch.equal(alpha, alpha.flip(0))
    assert alpha.argmin() == 14


def test_reference_cycle_weight_values():
    s = reference_cycle_weights()
    assert s.shape == (29,)
    # N(0; 0, 0.46) = 0.8673: round(3.4 * 0.8673 + 0.1, 2) = 3.05
    assert s[0].item() == pytest.approx(3.05)
    assert s[14].item() == pytest.approx(gauss_table(0.46, 0.7)) and s[14].item() == pytest.approx(1.03)
    # N(0; 0, 0.45) = 0.8865: round(3.4 * 0.8865 + 0.1, 2) - 0.14 = 3.11 - 0.14
    assert s[28].item() == pytest.approx(2.97)
    assert s.argmin() == 14


def test_ranges_come_from_the_tables():
    assert ALPHA_RANGE == (pytest.approx(reference_alpha().min().item()), pytest.approx(reference_alpha().max().item()))
    assert ALPHA_RANGE == (pytest.approx(1.0), pytest.approx(1.67))
    assert CYCLE_WEIGHT_RANGE == (pytest.approx(1.03), pytest.approx(3.05))


@pytest.mark.parametrize("table", [reference_alpha, reference_cycle_weights])
def test_reference_tables_only_for_29_planes(table):
    with pytest.raises(ValueError, match="29"):
        table(30)


def test_sharpest_index_is_the_focus_measure_argmax_for_arrays_and_tensors():
    from scripts.evaluation.baselines import sharpest_slice
    from scripts.zsegan.focus import sharpest_index

    stack = np.random.default_rng(0).random((7, 16, 16)).astype(np.float32) * 0.01
    stack[4] = np.random.default_rng(1).random((16, 16))  # the only textured plane
    assert sharpest_index(stack) == sharpest_index(torch.from_numpy(stack)) == 4
    assert sharpest_index((stack * 1000).astype(np.uint16)) == 4
    assert np.array_equal(sharpest_slice(stack), np.repeat(stack[4:5], 7, axis=0))
