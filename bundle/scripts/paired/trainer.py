"""The paired GAN step (pix2pix, Isola et al. 2017) as a MONAI trainer, for wide-field → confocal (arXiv 2403.18026).

Paper → code: x = ``batch["image"]`` (the low-quality, wide-field image), y = ``batch["label"]`` (its registered
high-quality, confocal partner), G = ``generator`` (the residual U-Net), D = ``discriminator`` (a conditional
PatchGAN that sees the input beside an output: ``D(x, y)`` is ``discriminator(cat([x, y], channels))``).
λ = ``lambda_l1``. Objective (pix2pix eq. 4):

    G* = arg min_G max_D  L_cGAN(G, D) + λ L_L1(G)  (+ λ_SSIM (1 - SSIM(G(x), y)), optional)
                                                     (+ λ_content |φ(G(x)) - φ(y)|_1, optional)

One iteration updates G, then D, as pix2pix's ``optimize_parameters``; with ``generator_average`` (an exponential
moving average of G's weights, :func:`weight_average`) that average follows G after each of its steps.
``lambda_adversarial`` 0 trains G with the pixel losses only (the L1-only, CARE-like baseline) and leaves D
untouched. ``content_loss`` φ is any feature-space distance ``content_loss(output, target)``, such as VGG16 relu3_3
features (``scripts.cingan.losses.ContentLoss``): MicroscopyGAN's restorer (``configs/restore_train.yaml``) trains
with 1 content + 0.1 adversarial and no pixel L1. Any generator that maps a batch of inputs to a batch of outputs
of the target's shape fits, 2D (N,C,Y,X) or 3D (N,C,Z,Y,X); for 3D the 2D discriminator judges every
z-plane. The trainer knows nothing of microscopy: another paired restorer (the multi-defect one, whose
inputs carry their defects) uses it with its own loaders and networks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from scripts.zsegan.losses import AdversarialCriterion
from scripts.zsegan.trainer import GANTrainer, plain
from torch.optim.swa_utils import AveragedModel

__all__ = ["PairedGANTrainer", "planes", "weight_average"]


def weight_average(generator: torch.nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``generator``'s weights (and buffers), or None with ``decay`` 0.

    After the n-th update the average moves towards G's weights by 1 - d_n, d_n = min(decay, (1 + n) / (10 + n)):
    it starts as G's weights and forgets the first, untrained steps quickly, then keeps about the last
    1 / (1 - decay) steps. ``average.module`` is a network of G's architecture (what validation and export use).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1) (0: no average), got {decay}")
    if decay == 0.0:
        return None

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return AveragedModel(generator, multi_avg_fn=update, use_buffers=True)


def planes(tensor: torch.Tensor) -> torch.Tensor:
    """N,C,Y,X as it is; N,C,Z,Y,X as the N*Z planes N*Z,C,Y,X (what a 2D discriminator judges)."""
    if tensor.ndim == 5:
        return tensor.transpose(1, 2).flatten(0, 1)
    return tensor


class PairedGANTrainer(GANTrainer):
    """Trains a generator G and a conditional discriminator D on registered pairs (x, y).

    Args:
        device: where the networks run.
        max_epochs: epochs to train.
        train_data_loader: batches of ``{"image": x, "label": y}``, both N,C,Y,X (or N,C,Z,Y,X), normalised
            to about [-1, 1].
        generator: G, x -> ŷ of y's shape.
        discriminator: D, 2D, taking x's and y's channels together (``in_channels`` = C_x + C_y).
        g_optimizer, d_optimizer: their optimisers (``d_optimizer`` may be None when ``lambda_adversarial`` is 0).
        criterion: the adversarial criterion on D's patch logits (default: "bce", pix2pix's vanilla GAN loss;
            "lsgan" squares D's raw logits, no activation on them).
        lambda_adversarial: weight of G's adversarial term (0: the L1-only baseline, D is not trained).
        lambda_l1: λ of the L1 term, 100 as in pix2pix.
        lambda_ssim: weight of the optional 1 - SSIM term (MONAI's ``SSIMLoss``, data range 2 for [-1, 1]).
        content_loss: the optional feature-space term φ, ``content_loss(G(x), y)`` (None: no such term).
        lambda_content: its weight (needs ``content_loss`` when > 0).
        generator_average: an average of G's weights (:func:`weight_average`), updated after each G step
            (None: none).
        epoch_length: iterations per epoch (default: the loader's length).
        amp: mixed precision: autocast to ``amp_dtype`` on the engine's device.
        amp_dtype: "float16" (CUDA only, with gradient scaling; on CPU amp is then off) or "bfloat16"
            (CUDA or CPU, no scaling needed).
        train_handlers: Ignite/MONAI handlers to attach.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer | None,
        criterion: AdversarialCriterion | None = None,
        lambda_adversarial: float = 1.0,
        lambda_l1: float = 100.0,
        lambda_ssim: float = 0.0,
        epoch_length: int | None = None,
        amp: bool = False,
        train_handlers: Sequence | None = None,
        amp_dtype: str = "float16",
        content_loss: torch.nn.Module | None = None,
        lambda_content: float = 0.0,
        generator_average: AveragedModel | None = None,
    ) -> None:
        if lambda_adversarial > 0 and d_optimizer is None:  # checked before the engine is built from the rest
            raise ValueError("an adversarial term (lambda_adversarial > 0) needs d_optimizer")
        if lambda_content > 0 and content_loss is None:
            raise ValueError(f"lambda_content is {lambda_content} but no content_loss was given")
        super().__init__(device, max_epochs, train_data_loader, epoch_length, train_handlers, amp, amp_dtype)
        self.content_loss, self.lambda_content = content_loss, lambda_content
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.criterion = criterion or AdversarialCriterion("bce")
        self.lambda_adversarial, self.lambda_l1, self.lambda_ssim = lambda_adversarial, lambda_l1, lambda_ssim
        self.ssim_loss: SSIMLoss | None = None  # built at the first step
        self.generator_average = generator_average

    def _ssim(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """1 - SSIM per plane (2D, as D judges z-stacks: a stack may have fewer planes than SSIM's 11-voxel window)."""
        if self.ssim_loss is None:
            self.ssim_loss = SSIMLoss(spatial_dims=2, data_range=2.0)
        return self.ssim_loss(planes(fake).float(), planes(real).float())

    def _judge(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """D(x, y): the conditional discriminator's patch logits for output y of input x."""
        return self.discriminator(planes(torch.cat([x, y], dim=1)))

    def _iteration(self, engine: PairedGANTrainer, batchdata: dict[str, Any]) -> dict[str, float]:
        device = engine.state.device
        x = plain(batchdata["image"], device, engine.non_blocking)
        y = plain(batchdata["label"], device, engine.non_blocking)
        crit, adversarial = engine.criterion, engine.lambda_adversarial > 0
        engine.generator.train()  # validation (MONAI's evaluator) leaves it in eval mode
        engine.discriminator.train()
        zero = torch.zeros((), device=device)

        # ---- G: min L_cGAN + λ L_L1 (+ λ_SSIM L_SSIM + λ_content L_content) ----
        engine.discriminator.requires_grad_(False)
        with engine._autocast():
            fake = engine.generator(x)
            loss_g_gan = engine.lambda_adversarial * crit(engine._judge(x, fake), True) if adversarial else zero
            loss_g_l1 = engine.lambda_l1 * F.l1_loss(fake, y)
            loss_g_ssim = engine.lambda_ssim * engine._ssim(fake, y) if engine.lambda_ssim > 0 else zero
            content = engine.lambda_content > 0
            loss_g_content = engine.lambda_content * engine.content_loss(fake, y) if content else zero
            loss_g = loss_g_gan + loss_g_l1 + loss_g_ssim + loss_g_content
        engine._step(loss_g, engine.g_optimizer)
        if engine.generator_average is not None:
            engine.generator_average.update_parameters(engine.generator)

        # ---- D: max L_cGAN, real pairs (x, y) against fake pairs (x, G(x)) ----
        loss_d = zero
        if adversarial:
            engine.discriminator.requires_grad_(True)
            with engine._autocast():
                loss_d = 0.5 * (crit(engine._judge(x, y), True) + crit(engine._judge(x, fake.detach()), False))
            engine._step(loss_d, engine.d_optimizer)
        if engine.scaler is not None:
            engine.scaler.update()

        return {
            "loss_G": loss_g.item(),
            "loss_G_GAN": loss_g_gan.item(),
            "loss_G_L1": loss_g_l1.item(),
            "loss_G_SSIM": loss_g_ssim.item(),
            "loss_G_content": loss_g_content.item(),
            "loss_D": loss_d.item(),
            "lr_G": engine.g_optimizer.param_groups[0]["lr"],
        }
