"""ConditionalInstanceNorm: per-condition scale and shift, 2D and 3D."""

import pytest
import torch
from scripts.nets.cin import ConditionalInstanceNorm


@pytest.mark.parametrize("spatial_dims, shape", [(2, (3, 4, 9, 11)), (3, (3, 4, 5, 9, 11))])
def test_starts_as_instance_norm_for_every_condition(spatial_dims, shape):
    cin = ConditionalInstanceNorm(4, 3, spatial_dims)
    x = torch.randn(shape) * 5 + 2
    norm = torch.nn.InstanceNorm3d(4) if spatial_dims == 3 else torch.nn.InstanceNorm2d(4)
    for s in range(3):
        torch.testing.assert_close(cin(x, s), norm(x))


def test_each_condition_has_its_own_scale_and_shift_per_channel():
    cin = ConditionalInstanceNorm(2, 3, 2)
    with torch.no_grad():
        cin.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        cin.bias.copy_(torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]))
    x = torch.randn(1, 2, 8, 8).expand(3, -1, -1, -1)  # one image, three conditions
    y = cin(x, torch.tensor([0, 1, 2]))
    normed = torch.nn.functional.instance_norm(x[:1])
    for s in range(3):
        expected = normed * cin.weight[s].reshape(1, 2, 1, 1) + cin.bias[s].reshape(1, 2, 1, 1)
        torch.testing.assert_close(y[s : s + 1], expected)
    assert not torch.allclose(y[0], y[1]) and not torch.allclose(y[1], y[2])


def test_gradients_reach_only_the_conditions_used():
    cin = ConditionalInstanceNorm(3, 4, 3)
    cin(torch.randn(2, 3, 4, 4, 4), torch.tensor([1, 3])).square().sum().backward()
    used = cin.weight.grad.abs().sum(1) > 0
    assert used.tolist() == [False, True, False, True]
    assert (cin.bias.grad.abs().sum(1) > 0).tolist() == [False, True, False, True]


def test_rejects_bad_conditions_and_shapes():
    cin = ConditionalInstanceNorm(2, 3, 2)
    with pytest.raises(ValueError, match="0..2"):
        cin(torch.randn(1, 2, 4, 4), 3)
    with pytest.raises(ValueError, match="one per sample"):
        cin(torch.randn(2, 2, 4, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="spatial"):
        cin(torch.randn(1, 2, 4, 4, 4), 0)
    with pytest.raises(ValueError, match="n_conditions"):
        ConditionalInstanceNorm(2, 0)
