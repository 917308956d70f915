"""CINGANTrainer: a tiny stage-1 run in 2D and 3D (random VGG weights from a temporary file)."""

import pytest
import torch
from ignite.engine import Events
from scripts.cingan.losses import ContentLoss, StyleLoss
from scripts.cingan.trainer import CINGANTrainer
from scripts.nets.networks import Critic, ResNetGenerator
from scripts.nets.vgg import save_random_vgg_weights
from torch.utils.data import DataLoader


@pytest.fixture(scope="module")
def losses(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vgg")
    content = ContentLoss(save_random_vgg_weights("vgg16", folder / "vgg16.pth", "relu3_3"))
    style = StyleLoss(save_random_vgg_weights("vgg19", folder / "vgg19.pth", "relu4_1"))
    return content, style


def loader(n: int, shape: tuple, offset: float = 0.0) -> DataLoader:
    images = [{"image": (torch.rand(1, *shape) * 2 - 1 + offset).clamp(-1, 1)} for _ in range(n)]
    return DataLoader(images, batch_size=2, shuffle=True)


class CountingAdam(torch.optim.Adam):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def make_trainer(shape, losses, critic_conditions=3, **kwargs):
    torch.manual_seed(0)
    dims = len(shape)
    generator = ResNetGenerator(dims, channels=4, n_residual_blocks=1, output="mean", n_conditions=3)
    critic = Critic(dims, channels=4, n_layers=2, n_conditions=critic_conditions)
    content, style = losses
    trainer = CINGANTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader(4, shape),
        defective_loaders=[loader(3, shape, offset) for offset in (-0.5, 0.0, 0.5)],
        generator=generator,
        critic=critic,
        g_optimizer=CountingAdam(generator.parameters(), 1e-5, betas=(0.5, 0.9)),
        d_optimizer=CountingAdam(critic.parameters(), 1e-5, betas=(0.5, 0.9)),
        content_loss=content,
        style_loss=style,
        **kwargs,
    )
    return trainer, generator, critic


@pytest.mark.parametrize("shape, critic_conditions", [((16, 16), 3), ((4, 16, 16), 0)])
def test_tiny_stage_1_run_updates_both_networks(shape, critic_conditions, losses):
    trainer, generator, critic = make_trainer(shape, losses, critic_conditions, epoch_length=3, n_critic=2)
    before_g = {k: v.clone() for k, v in generator.state_dict().items()}
    before_d = {k: v.clone() for k, v in critic.state_dict().items()}
    types = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: types.append(e.state.output["defect_type"]))
    trainer.run()
    out = trainer.state.output
    assert types == [0, 1, 2]  # the defect types in turn
    assert trainer.d_optimizer.steps == 3 * 2 and trainer.g_optimizer.steps == 3  # n_critic critic steps per G step
    for key in ("loss_G", "loss_G_adv", "loss_content", "loss_style", "loss_D", "wasserstein", "gradient_penalty"):
        assert torch.isfinite(torch.tensor(out[key])), key
    assert out["loss_content"] > 0 and out["gradient_penalty"] >= 0
    assert any(not torch.equal(before_g[k], v) for k, v in generator.state_dict().items())
    assert any(not torch.equal(before_d[k], v) for k, v in critic.state_dict().items())
    # the conditional norms of the types trained moved away from their start
    cin = generator.encoder[0].norm
    assert not torch.equal(cin.weight, torch.ones_like(cin.weight))
    assert trainer.vgg_weights["content"].startswith("other") and trainer.vgg_weights["style"].startswith("other")


def test_bad_set_ups_are_refused(losses):
    with pytest.raises(ValueError, match="one defect type per defective loader"):
        CINGANTrainer(
            "cpu", 1, loader(2, (16, 16)), [loader(2, (16, 16))], ResNetGenerator(2, channels=4, n_conditions=3),
            Critic(2, channels=4, n_layers=2), None, None,
        )  # fmt: skip
    with pytest.raises(ValueError, match="no style loss"):
        make_trainer((16, 16), (losses[0], None))
