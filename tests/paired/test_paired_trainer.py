"""PairedGANTrainer on tiny synthetic pairs: the pix2pix step, the L1-only baseline, the content term, 3D inputs,
the average of G's weights."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.utils import set_determinism
from scripts.nets.paired import conditional_discriminator, residual_unet
from scripts.paired.trainer import PairedGANTrainer, planes, weight_average
from torch.utils.data import DataLoader

KEYS = {"loss_G", "loss_G_GAN", "loss_G_L1", "loss_G_SSIM", "loss_G_content", "loss_D", "lr_G"}


def _pairs(n: int = 4, shape=(1, 32, 32)) -> list[dict]:
    items = []
    for _ in range(n):
        y = torch.rand(shape) * 2 - 1
        items.append({"image": 0.5 * y + 0.2, "label": y})  # a contrast change to learn
    return items


def make_trainer(spatial_dims: int = 2, shape=(1, 32, 32), max_epochs: int = 1, **kwargs) -> PairedGANTrainer:
    set_determinism(seed=0)
    g = residual_unet(spatial_dims, (4, 8, 16), (2, 2))
    d = conditional_discriminator(8, 3)
    adversarial = kwargs.get("lambda_adversarial", 1.0) > 0
    return PairedGANTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=DataLoader(_pairs(4, shape), batch_size=2),
        generator=g,
        discriminator=d,
        g_optimizer=torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.5, 0.999)),
        d_optimizer=torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999)) if adversarial else None,
        **kwargs,
    )


def test_one_epoch_updates_both_networks_and_reports_every_loss():
    trainer = make_trainer(lambda_ssim=1.0)
    g0 = [p.clone() for p in trainer.generator.parameters()]
    d0 = [p.clone() for p in trainer.discriminator.parameters()]
    trainer.run()
    output = trainer.state.output
    assert set(output) == KEYS and all(isinstance(v, float) for v in output.values())
    assert output["loss_G_GAN"] > 0 and output["loss_D"] > 0 and output["loss_G_SSIM"] > 0
    assert output["loss_G"] == pytest.approx(output["loss_G_GAN"] + output["loss_G_L1"] + output["loss_G_SSIM"])
    assert any(not torch.equal(a, b) for a, b in zip(g0, trainer.generator.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, trainer.discriminator.parameters(), strict=True))


def test_the_l1_only_baseline_leaves_the_discriminator_alone():
    trainer = make_trainer(lambda_adversarial=0.0)
    d0 = [p.clone() for p in trainer.discriminator.parameters()]
    trainer.run()
    assert trainer.state.output["loss_G_GAN"] == 0 and trainer.state.output["loss_D"] == 0
    assert all(torch.equal(a, b) for a, b in zip(d0, trainer.discriminator.parameters(), strict=True))


def test_an_adversarial_term_needs_the_discriminators_optimiser():
    g = residual_unet(2, (4, 8), (2,))
    with pytest.raises(ValueError, match="d_optimizer"):
        PairedGANTrainer("cpu", 1, [], g, conditional_discriminator(8, 3), torch.optim.Adam(g.parameters()), None)


def test_the_l1_loss_falls_over_a_few_epochs():
    trainer = make_trainer(max_epochs=1, lambda_adversarial=0.0)
    trainer.run()
    first = trainer.state.output["loss_G_L1"]
    trainer.state.max_epochs = 15
    trainer.run()
    assert trainer.state.output["loss_G_L1"] < 0.7 * first


def test_3d_pairs_are_judged_plane_by_plane():
    assert planes(torch.zeros(2, 3, 5, 16, 16)).shape == (10, 3, 16, 16)
    assert planes(torch.zeros(2, 3, 16, 16)).shape == (2, 3, 16, 16)
    trainer = make_trainer(spatial_dims=3, shape=(1, 4, 16, 16))
    trainer.run()
    assert trainer.state.output["loss_D"] > 0


class _Recorder(torch.nn.Module):
    """A content loss that records what it was given: mean |output - target| of a blurred copy."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[torch.Size, bool]] = []

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls.append((output.shape, target.requires_grad))
        blur = torch.nn.functional.avg_pool2d
        return (blur(output, 3, 1, 1) - blur(target, 3, 1, 1)).abs().mean()


def test_the_content_term_is_weighed_into_g_and_needs_a_loss():
    content = _Recorder()
    trainer = make_trainer(lambda_l1=0.0, lambda_adversarial=0.1, content_loss=content, lambda_content=2.0)
    g0 = [p.clone() for p in trainer.generator.parameters()]
    trainer.run()
    output = trainer.state.output
    assert content.calls == [(torch.Size([2, 1, 32, 32]), False)] * 2  # G(x) against y, once per iteration
    assert output["loss_G_L1"] == 0 and output["loss_G_content"] > 0
    assert output["loss_G"] == pytest.approx(output["loss_G_GAN"] + output["loss_G_content"])
    assert any(not torch.equal(a, b) for a, b in zip(g0, trainer.generator.parameters(), strict=True))
    with pytest.raises(ValueError, match="lambda_content is 1.0 but no content_loss"):
        make_trainer(lambda_content=1.0)


def test_the_weight_average_follows_g_after_each_step_with_a_warm_up():
    """a_1 = w_1, then a_(n+1) = a_n + (1 - d_n) (w_(n+1) - a_n) with d_n = min(decay, (1 + n) / (10 + n))."""
    g = residual_unet(2, (4, 8), (2,))
    assert weight_average(g, 0.0) is None
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="ema_decay"):
            weight_average(g, bad)
    trainer = make_trainer(max_epochs=3)  # 2 batches a pass: 6 steps of G
    trainer.generator_average = weight_average(trainer.generator, 0.6)
    seen = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda _: seen.append([p.detach().clone() for p in trainer.generator.parameters()])
    )
    trainer.run()
    expected = seen[0]
    for n, weights in enumerate(seen[1:], start=1):
        keep = min(0.6, (1 + n) / (10 + n))
        expected = [a + (1 - keep) * (w - a) for a, w in zip(expected, weights, strict=True)]
    averaged = list(trainer.generator_average.module.parameters())
    assert int(trainer.generator_average.n_averaged) == len(seen) == 6
    for a, e in zip(averaged, expected, strict=True):
        torch.testing.assert_close(a, e)
    assert any(not torch.equal(a, w) for a, w in zip(averaged, seen[-1], strict=True))  # not G's last weights
