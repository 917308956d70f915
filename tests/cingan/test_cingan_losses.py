"""WGAN-GP terms and the VGG content and style losses (random VGG weights from a temporary file)."""

import pytest
import torch
from scripts.cingan.losses import (
    ContentLoss,
    StyleLoss,
    critic_loss,
    generator_adversarial_loss,
    gradient_penalty,
    gram_matrix,
    planes,
)
from scripts.nets.networks import Critic
from scripts.nets.vgg import save_random_vgg_weights
from torch import nn


class LinearCritic(nn.Module):
    """D(x) = <w, x>: its gradient is w everywhere, so ||grad|| = ||w||."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1)


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vgg")
    return {
        "vgg16": save_random_vgg_weights("vgg16", folder / "vgg16.pth", "relu3_3"),
        "vgg19": save_random_vgg_weights("vgg19", folder / "vgg19.pth", "relu4_1"),
    }


def test_gradient_penalty_is_zero_for_a_1_lipschitz_linear_critic():
    torch.manual_seed(0)
    w = torch.randn(1, 8, 8)
    real, fake = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    assert gradient_penalty(LinearCritic(w / w.norm()), real, fake).item() == pytest.approx(0.0, abs=1e-8)
    # ||w|| = 3: 10 * (3 - 1)^2
    assert gradient_penalty(LinearCritic(3 * w / w.norm()), real, fake).item() == pytest.approx(40.0, rel=1e-5)
    assert gradient_penalty(LinearCritic(3 * w / w.norm()), real, fake, weight=1.0).item() == pytest.approx(4.0)


def test_gradient_penalty_trains_the_critic_and_takes_a_condition():
    torch.manual_seed(0)
    critic = Critic(2, channels=4, n_layers=2, n_conditions=3)
    real, fake = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16, requires_grad=True)
    penalty = gradient_penalty(critic, real, fake, torch.tensor([0, 2]))
    penalty.backward()
    assert penalty.item() > 0 and fake.grad is None  # the samples are detached
    weights = [p for name, p in critic.named_parameters() if name.endswith("weight")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)  # biases leave grad D unchanged
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(critic, real, fake[:1], 0)


def test_wasserstein_terms():
    real, fake = torch.tensor([3.0, 5.0]), torch.tensor([1.0, 2.0])
    assert critic_loss(real, fake).item() == pytest.approx(1.5 - 4.0)  # -W
    assert generator_adversarial_loss(fake).item() == pytest.approx(-1.5)


def test_gram_matrix_and_planes():
    f = torch.arange(12.0).reshape(1, 2, 2, 3)
    flat = f.reshape(2, 6)
    torch.testing.assert_close(gram_matrix(f)[0], flat @ flat.T / 12)
    volume = torch.randn(2, 1, 5, 8, 8)
    assert planes(volume).shape == (10, 1, 8, 8)
    torch.testing.assert_close(planes(volume)[6], volume[1, :, 1])
    with pytest.raises(ValueError, match="N,C,H,W"):
        planes(torch.randn(8, 8))


def test_content_loss_is_zero_for_equal_images_and_grows_with_change(vgg_files):
    loss = ContentLoss(vgg_files["vgg16"])
    torch.manual_seed(0)
    x = torch.rand(2, 1, 5, 16, 16) * 2 - 1  # a 3D batch: compared plane by plane
    assert loss(x, x).item() == 0
    small, large = loss(x + 0.01 * torch.randn_like(x), x), loss(x + 0.3 * torch.randn_like(x), x)
    assert 0 < small < large
    assert loss.weights_tag.startswith("other")  # random weights are never called imagenet
    y = x.clone().requires_grad_(True)
    loss(y + 0.1, x).backward()
    assert y.grad.abs().sum() > 0


def test_style_loss_compares_gram_matrices_of_unpaired_batches(vgg_files):
    loss = StyleLoss(vgg_files["vgg19"])
    torch.manual_seed(0)
    clean = torch.rand(3, 1, 16, 16) * 2 - 1
    same = loss(clean, clean[[2, 0]]).item()  # other images of the same statistics (a subset)
    smooth = torch.nn.functional.avg_pool2d(clean, 5, 1, 2) * 0.2  # blurred and darker: another style
    different = loss(clean, smooth).item()
    assert different > 0 and same < 0.2 * different
