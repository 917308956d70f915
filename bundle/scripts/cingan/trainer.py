"""MicroscopyGAN's stage 1 as a MONAI trainer: the CIN-GAN learns to add each defect type to clean images.

Paper (repository) → code: clean image x = ``batch["image"]``; defect type s (``condition``, one per
iteration, in turn); G(x, s) = ``generator(x, s)`` (``ResNetGenerator`` with ``n_conditions``: conditional
instance norm in its first three convolutions, output (tanh + x) / 2); real defective images x_s from
``defective_loaders[s]``; critic D (``Critic``, optionally one score per defect type).

One iteration is one generator step after ``n_critic`` (5) critic steps (WGAN-GP, Gulrajani et al.
2017): each critic step takes a fresh batch of real defective images of type s against the same fakes
G(x, s) and minimises E[D(G(x, s))] - E[D(x_s)] + lambda_gp GP (lambda_gp 10). The generator then
minimises lambda_adversarial (-E[D(G(x, s))]) + lambda_content |VGG16 relu3_3 (G(x, s)) - (x)|_1 +
lambda_style Gram(VGG19 relu1_1-4_1) distance to x_s (0.1, 1, 1 in MicroscopyGAN; Adam 1e-5, betas
(0.5, 0.9) for both, set in the optimisers). The content loss keeps the specimen, the style and
adversarial terms make the defect look like the real ones. No mixed precision (the double backward of the
gradient penalty under gradient scaling is not worth it on the CPU this targets).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from scripts.cingan.losses import ContentLoss, StyleLoss, critic_loss, generator_adversarial_loss, gradient_penalty
from scripts.nets.networks import unwrap
from scripts.zsegan.trainer import GANTrainer, _cycle, plain

__all__ = ["CINGANTrainer"]


class CINGANTrainer(GANTrainer):
    """Trains the CIN-GAN's generator and critic.

    Args:
        device: where the networks run.
        max_epochs: epochs to train.
        train_data_loader: clean images, batches of ``{"image": B,C,(Z,)Y,X in [-1, 1]}``.
        defective_loaders: one loader of real defective images per defect type (index = condition), the
            same axes and range; each is cycled endlessly.
        generator: a conditioned ``ResNetGenerator`` (``forward(x, condition)``).
        critic: a ``Critic``; if it has ``n_conditions`` > 0 it is told the defect type too.
        g_optimizer, d_optimizer: the generator's and the critic's optimisers.
        content_loss: ``ContentLoss`` (VGG16 relu3_3), or None with ``lambda_content`` 0.
        style_loss: ``StyleLoss`` (VGG19 Gram matrices), or None with ``lambda_style`` 0.
        lambda_adversarial, lambda_content, lambda_style: the generator loss's weights (0.1, 1, 1).
        lambda_gp: the gradient penalty's weight (10).
        n_critic: critic steps per generator step (5).
        epoch_length: iterations per epoch (default: the loader's length).
        train_handlers: Ignite/MONAI handlers to attach.

    ``vgg_weights`` says which VGG weights the losses use ("imagenet", or "other sha256:..." for anything
    else, such as the random weights of tests): log it as an MLflow param.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        defective_loaders: Sequence[Iterable],
        generator: torch.nn.Module,
        critic: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        content_loss: ContentLoss | None = None,
        style_loss: StyleLoss | None = None,
        lambda_adversarial: float = 0.1,
        lambda_content: float = 1.0,
        lambda_style: float = 1.0,
        lambda_gp: float = 10.0,
        n_critic: int = 5,
        epoch_length: int | None = None,
        train_handlers: Sequence | None = None,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, epoch_length, train_handlers)
        n_types = getattr(unwrap(generator), "n_conditions", 0)
        if n_types < 1 or len(defective_loaders) != n_types:
            raise ValueError(
                f"the generator must be conditioned on one defect type per defective loader, got "
                f"{n_types} conditions and {len(defective_loaders)} loaders"
            )
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        for name, loss, weight in (("content", content_loss, lambda_content), ("style", style_loss, lambda_style)):
            if loss is None and weight > 0:
                raise ValueError(f"lambda_{name} is {weight} but no {name} loss was given")
        self.generator, self.critic = generator, critic
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.content_loss, self.style_loss = content_loss, style_loss
        self.lambda_adversarial, self.lambda_content, self.lambda_style = (
            lambda_adversarial,
            lambda_content,
            lambda_style,
        )
        self.lambda_gp, self.n_critic, self.n_types = lambda_gp, n_critic, n_types
        self.critic_conditioned = getattr(unwrap(critic), "n_conditions", 0) > 0
        self.defective_loaders = list(defective_loaders)
        self._defective: list | None = None
        self.vgg_weights = {
            name: loss.weights_tag for name, loss in (("content", content_loss), ("style", style_loss)) if loss
        }

    def _next_defective(self, condition: int) -> torch.Tensor:
        """A batch of real defective images of type ``condition`` (each loader cycled endlessly)."""
        if self._defective is None:
            self._defective = [_cycle(loader) for loader in self.defective_loaders]
        return plain(next(self._defective[condition])["image"], self.state.device, self.non_blocking)

    def _score(self, images: torch.Tensor, condition: int) -> torch.Tensor:
        return self.critic(images, condition) if self.critic_conditioned else self.critic(images)

    def _iteration(self, engine: CINGANTrainer, batchdata: dict[str, Any]) -> dict[str, float]:
        x = plain(batchdata["image"], engine.state.device, engine.non_blocking)
        s = (engine.state.iteration - 1) % engine.n_types  # the defect types in turn
        condition = torch.full((x.shape[0],), s, dtype=torch.long, device=x.device)
        engine.generator.train()
        engine.critic.train()

        # ---- critic: n_critic steps of min E[D(G(x, s))] - E[D(x_s)] + lambda_gp GP ----
        engine.critic.requires_grad_(True)
        with torch.no_grad():
            fake = engine.generator(x, condition)
        for _ in range(engine.n_critic):
            real = engine._next_defective(s)
            wasserstein_loss = critic_loss(engine._score(real, s), engine._score(fake, s))
            n = min(real.shape[0], fake.shape[0])  # GP pairs real and fake samples
            penalty = gradient_penalty(
                engine.critic, real[:n], fake[:n], s if engine.critic_conditioned else None, engine.lambda_gp
            )
            loss_d = wasserstein_loss + penalty
            engine._step(loss_d, engine.d_optimizer)

        # ---- generator: 0.1 adversarial + 1 content + 1 style ----
        engine.critic.requires_grad_(False)
        fake = engine.generator(x, condition)
        loss_adversarial = engine.lambda_adversarial * generator_adversarial_loss(engine._score(fake, s))
        zero = torch.zeros((), device=x.device)
        loss_content = engine.lambda_content * engine.content_loss(fake, x) if engine.lambda_content > 0 else zero
        loss_style = engine.lambda_style * engine.style_loss(fake, real) if engine.lambda_style > 0 else zero
        loss_g = loss_adversarial + loss_content + loss_style
        engine._step(loss_g, engine.g_optimizer)
        engine.critic.requires_grad_(True)

        return {
            "loss_G": loss_g.item(),
            "loss_G_adv": loss_adversarial.item(),
            "loss_content": loss_content.item(),
            "loss_style": loss_style.item(),
            "loss_D": loss_d.item(),
            "wasserstein": -wasserstein_loss.item(),
            "gradient_penalty": penalty.item(),
            "defect_type": s,
            "lr_G": engine.g_optimizer.param_groups[0]["lr"],
            "lr_D": engine.d_optimizer.param_groups[0]["lr"],
        }
