"""sharpness_ratios and the validation metrics (SharpnessRatio, Fidelity, GatedScore, CycleProbe, PlaneSSIM)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.layers import GaussianFilter
from scripts.ops.metrics import PlaneSSIM, SharpnessRatio, sharpness_ratios
from scripts.zsegan.focus import focus_measure


def _stack(depth=7, size=24, sharpest=3, seed=0) -> torch.Tensor:
    """CZYX texture whose contrast falls off away from ``sharpest``."""
    g = torch.Generator().manual_seed(seed)
    texture = torch.rand(size, size, generator=g) - 0.5
    scale = torch.tensor([1.0 / (1.0 + abs(z - sharpest)) for z in range(depth)])
    return (scale[:, None, None] * texture).unsqueeze(0)


def _blur(stack: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian blur of every xy plane of a CZYX stack."""
    planes = stack[0].unsqueeze(1)  # (Z, 1, Y, X)
    return GaussianFilter(spatial_dims=2, sigma=sigma)(planes).squeeze(1).unsqueeze(0)


def test_stack_against_itself_is_one_at_the_sharpest_slice():
    stack = _stack(sharpest=3)
    ratios = sharpness_ratios(stack, stack)
    assert ratios.shape == (7,)
    assert float(ratios.max()) == pytest.approx(1.0)
    assert int(ratios.argmax()) == 3
    assert torch.all(ratios[:3] < 1) and torch.all(ratios[4:] < 1)


def test_blurred_stack_is_less_sharp():
    stack = _stack()
    blurred = _blur(stack)
    ratios = sharpness_ratios(blurred, stack)
    assert torch.all(ratios < sharpness_ratios(stack, stack))
    assert float(ratios.max()) < 0.5
    # vertical sections lose sharpness too
    assert sharpness_ratios(blurred, stack, "vertical").mean() < sharpness_ratios(stack, stack, "vertical").mean()


def test_ratios_scale_with_the_reference():
    stack = _stack()
    # focus measure is quadratic in intensity: a reference twice as bright makes ratios 4x smaller
    torch.testing.assert_close(sharpness_ratios(stack, 2 * stack), sharpness_ratios(stack, stack) / 4)


def test_vertical_gives_one_value_per_xz_and_yz_section():
    stack = _stack(depth=5, size=16)[:, :, :12, :]  # Y=12, X=16
    ratios = sharpness_ratios(stack, stack, "vertical")
    assert ratios.shape == (12 + 16,)
    best = focus_measure(stack[0]).max()
    torch.testing.assert_close(ratios[:12], focus_measure(stack[0].permute(1, 0, 2)) / best)
    torch.testing.assert_close(ratios[12:], focus_measure(stack[0].permute(2, 0, 1)) / best)


def test_unknown_sections():
    stack = _stack()
    with pytest.raises(ValueError, match="sections"):
        sharpness_ratios(stack, stack, "oblique")


def test_constant_reference_does_not_divide_by_zero():
    stack = _stack()
    assert torch.isfinite(sharpness_ratios(stack, torch.zeros_like(stack))).all()


@pytest.mark.parametrize("sections", ["horizontal", "vertical"])
def test_metric_averages_over_sections_and_stacks(sections):
    a, b = _stack(seed=0), _stack(depth=5, seed=1)
    outputs, inputs = [_blur(a), b], [a, b]
    metric = SharpnessRatio(sections=sections)
    metric.reset()
    metric.update((outputs[:1], inputs[:1]))
    metric.update((outputs[1:], inputs[1:]))
    expected = torch.cat([sharpness_ratios(o, i, sections) for o, i in zip(outputs, inputs, strict=True)]).mean()
    assert metric.compute() == pytest.approx(float(expected), rel=1e-5)
    metric.reset()
    assert metric.compute() == 0.0


def test_metric_accepts_batches_and_output_transform():
    stack = _stack()
    batch = torch.stack([stack, _blur(stack)])  # B,C,Z,Y,X
    metric = SharpnessRatio(output_transform=lambda out: (out["pred"], out["image"]))
    metric.reset()
    metric.update(metric._output_transform({"pred": batch, "image": torch.stack([stack, stack])}))
    expected = torch.cat([sharpness_ratios(stack, stack), sharpness_ratios(_blur(stack), stack)]).mean()
    assert metric.compute() == pytest.approx(float(expected), rel=1e-5)


def test_fidelity_and_gated_score_reward_the_faithful_and_penalise_the_invented():
    from scripts.ops.metrics import Fidelity, GatedScore, fidelity

    def cells(seed):  # dark blobs on a bright field, sharp at z = 3, blurred away from it
        g = torch.Generator().manual_seed(seed)
        field = torch.zeros(1, 1, 40, 40)
        for y, x in torch.randint(4, 36, (6, 2), generator=g).tolist():
            field[..., y - 3 : y + 3, x - 3 : x + 3] = -1.0
        planes = [GaussianFilter(spatial_dims=2, sigma=0.3 + abs(z - 3))(field)[0, 0] for z in range(7)]
        return torch.stack(planes)[None] + 0.5

    x = cells(0)
    assert fidelity(x, x) == (pytest.approx(1.0), pytest.approx(1.0))
    invented = cells(1)[:, 3:4].expand_as(x).clone()  # other cells, sharp everywhere
    coarse_worst, focus = fidelity(invented, x)
    assert coarse_worst < 0.5 and focus < 0.5
    score = GatedScore(min_ssim_coarse=0.75, min_ssim_focus=0.85)
    score.update(([x], [x]))
    faithful = score.compute()
    score.reset()
    score.update(([invented], [x]))
    assert faithful > 0 >= score.compute()  # the sharper invention scores below any model that passes
    metric = Fidelity("focus")
    metric.update(([x, invented], [x, x]))
    assert metric.compute() == pytest.approx((1.0 + focus) / 2)
    with pytest.raises(ValueError, match="measure"):
        Fidelity("sharpness")


def test_cycle_probe_is_small_for_an_optical_g_b_and_large_for_a_g_b_that_reads_a_hidden_code():
    from scripts.nets.optical import OpticalBlur
    from scripts.ops.metrics import CycleProbe

    x = _stack(depth=7, size=32) * 2
    optical = CycleProbe(OpticalBlur(), epsilon=0.02)
    optical.update(([x], [x]))

    class Decoder(torch.nn.Module):  # reconstructs x exactly from y, but from a faint code: 50x sensitive
        def forward(self, y):
            return x[None] + 50 * (y - x[None])

    decoder = CycleProbe(Decoder(), epsilon=0.02)
    decoder.update(([x], [x]))
    assert 0 <= optical.compute() < 0.02 < decoder.compute()


def test_plane_ssim_is_the_restoration_evaluations_ssim_of_the_volumes_in_their_units():
    from scripts.evaluation.restoration import restoration_scores

    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 256, (2, 1, 5, 16, 16), generator=g).float()
    noisy = (clean + 40 * torch.randn(clean.shape, generator=g)).clamp(0, 255).round()
    metric = PlaneSSIM()
    metric.update((noisy / 127.5 - 1, clean / 127.5 - 1))  # 0-255 mapped to [-1, 1], as restore_train.yaml does
    expected = [restoration_scores(n[0].numpy().astype("uint8"), c[0].numpy().astype("uint8"))["ssim"]
                for n, c in zip(noisy, clean, strict=True)]  # fmt: skip
    assert metric.compute() == pytest.approx(sum(expected) / 2, abs=1e-6)
    metric.reset()
    metric.update((clean / 127.5 - 1 + 5.0, clean / 127.5 - 1))  # far out of range: clipped to the fixed domain
    assert metric.compute() < 0.1
