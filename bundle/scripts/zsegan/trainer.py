"""The ZSE-GAN training step as a MONAI trainer (paper section 2.2, eqs 1-10).

Paper → code: x = ``batch["image"]`` (a normalised stack, BCZYX); y = G_S(x); y* = in-focus images
(``infocus_loader``); x∥, y∥ = ``horizontal_sections``; y⊥ = ``vertical_sections``; p = ``p``;
α(x∥) = ``batch["alpha"]``; s = ``batch["cycle_weight"]``; λ = ``lambda_cycle``.

One iteration updates G_S and G_B together (one optimiser), then D_S and D_B (another), in the
order of CycleGAN's ``optimize_parameters``. Only the sections that a loss uses are cut out.

G_B is either the paper's second 3D generator or an optical blur (``scripts.nets.optical.OpticalBlur``),
which is told each stack's focal plane (its sharpest slice). The sharp domain y* that D_S learns is
the in-focus images, the stacks' own sharpest slices (the paper's x∥*), or half of each
(``sharp_domain``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines import Trainer
from scripts.nets.networks import unwrap
from scripts.zsegan.losses import (
    AdversarialCriterion,
    anisotropic_adversarial_loss,
    correction_tv_loss,
    focal_detail_loss,
    lowpass,
    lowpass_fidelity_loss,
    spectral_loss,
    weighted_cycle_loss,
    weighted_identity_loss,
)
from scripts.zsegan.pool import ImagePool
from scripts.zsegan.sections import horizontal_sections, random_crops, sample_depths, vertical_sections
from torch.utils.data.distributed import DistributedSampler

SHARP_DOMAINS = ("infocus", "stack", "both")
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "auto": None}


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX: oneDNN's bfloat16 kernels), where bfloat16
    autocast trains faster than float32; elsewhere it is emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolve_amp_dtype(amp_dtype: str, device: torch.device | str) -> str:
    """``amp_dtype`` as a key of :data:`AMP_DTYPES` other than "auto": "auto" is float16 on CUDA (with gradient
    scaling), bfloat16 on a CPU that computes it natively (:func:`native_bfloat16`), else float16 (amp then off on
    the CPU: float32)."""
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {list(AMP_DTYPES)}, got {amp_dtype!r}")
    if amp_dtype != "auto":
        return amp_dtype
    return "bfloat16" if torch.device(device).type == "cpu" and native_bfloat16() else "float16"


def linear_decay(total_iterations: int, start_fraction: float = 0.5):
    """LR factor for ``LambdaLR``: 1 until ``start_fraction`` of training, then linearly down to 0
    (``start_fraction`` 1: a constant learning rate, as the reference notebook trains)."""
    start = int(total_iterations * start_fraction)

    def factor(iteration: int) -> float:
        if iteration < start:
            return 1.0
        return max(0.0, (total_iterations - iteration) / max(1, total_iterations - start))

    return factor


def plain(tensor: torch.Tensor, device: torch.device, non_blocking: bool = False) -> torch.Tensor:
    """A plain tensor on ``device`` (MetaTensors' tracing has no place in losses or checkpoints)."""
    tensor = tensor.as_tensor() if isinstance(tensor, MetaTensor) else torch.as_tensor(tensor)
    return tensor.to(device, non_blocking=non_blocking)


def _cycle(loader: Iterable):
    """Endless iterator over a DataLoader, reshuffled every pass (a DistributedSampler is told the pass
    number, as MONAI's trainer tells the training loader's sampler the epoch)."""
    sampler = getattr(loader, "sampler", None)
    for n_pass in itertools.count():
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(n_pass)
        yield from loader


class GANTrainer(Trainer):
    """What every GAN trainer of the bundle shares: MONAI's ``Trainer`` set up for a hand-written
    ``_iteration`` (no decollation), mixed precision (``_autocast``) and one optimiser step, with the
    gradient scaler when float16 mixed precision is on. ZSE-GAN's and the paired trainer subclass it.

    Args:
        device: where the networks run.
        max_epochs: epochs to train.
        data_loader: the training batches.
        epoch_length: iterations per epoch (default: the loader's length).
        handlers: Ignite/MONAI handlers to attach.
        amp: mixed precision: autocast to ``amp_dtype`` on the engine's device.
        amp_dtype: "float16" (CUDA only, with gradient scaling; on CPU amp is then off) or "bfloat16"
            (CUDA or CPU, no scaling needed): the same code path either way, so a CPU run with
            bfloat16 exercises what a GPU runs; "auto": float16 on CUDA, bfloat16 on a CPU with native
            bfloat16, else off on the CPU (:func:`resolve_amp_dtype`).
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        data_loader: Iterable,
        epoch_length: int | None = None,
        handlers: Sequence | None = None,
        amp: bool = False,
        amp_dtype: str = "float16",
    ) -> None:
        device = torch.device(device)
        amp_dtype = resolve_amp_dtype(amp_dtype, device)
        self.amp_dtype = AMP_DTYPES[amp_dtype]
        scaled = amp and device.type == "cuda" and amp_dtype == "float16"
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=data_loader,
            epoch_length=epoch_length,
            handlers=handlers,
            amp=scaled,  # MONAI's Trainer makes the gradient scaler of float16
            decollate=False,
        )
        self.autocast = scaled or (amp and amp_dtype == "bfloat16")  # MONAI's self.amp: float16 with its scaler
        precision = f"{amp_dtype} mixed precision" if self.autocast else "float32"
        logging.getLogger("zsegan").info(f"training in {precision} on {device.type}")

    def _autocast(self):
        return torch.autocast(self.state.device.type, dtype=self.amp_dtype) if self.autocast else nullcontext()

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
        else:
            loss.backward()
            optimizer.step()


class ZSEGANTrainer(GANTrainer):
    """Trains G_S, G_B, D_S and D_B of ZSE-GAN.

    Args:
        device: where the networks run.
        max_epochs: epochs to train.
        train_data_loader: stacks, batches of ``{"image": BCZYX in [-1, 1], "alpha": BZ, "cycle_weight": BZ,
            "sharpness": BZ}`` (see ``scripts.data.transforms.FocusWeightsd``); crops must be square in xy.
        infocus_loader: in-focus images y*, batches of ``{"image": NCHW in [-1, 1]}``; cycled endlessly.
        g_s, g_b: the generators (sharpen, blur back): 3D networks, or for G_B an ``OpticalBlur``
            (recognised by its ``needs_focus`` attribute, also inside a DDP wrapper).
        d_s, d_b: the 2D discriminators (sharp domain, stack domain).
            Any of the four may be in DistributedDataParallel (``configs/multi_gpu_train.yaml``).
        g_optimizer: optimiser over the parameters of both generators.
        d_optimizer: optimiser over the parameters of both discriminators.
        criterion: adversarial criterion (least squares or the paper's log form).
        p: weight of the vertical sections y⊥ in the anisotropic adversarial loss (eqs 2-3).
        lambda_cycle: λ of the cycle-consistency loss (eq 9).
        cycle_sigma: if > 0, the cycle loss compares x and G_B(G_S(x)) after a Gaussian low-pass of this
            sigma (px): the camera noise of x, which a blur cannot reproduce, then asks G_S for no
            amplified noise (the ringing of a deconvolution) to match it.
        lambda_adversarial_b: weight of G_B's adversarial term (eqs 4-6); 0 leaves D_B out (its fakes
            from an optical G_B, a blur without noise, differ from real slices by their noise alone).
        lambda_identity: weight of the optional identity loss |G_S(x) - x| (per slice times its sharpness).
        lambda_lowpass: weight of the optional low-pass fidelity loss |lowpass(G_S(x)) - lowpass(x)|.
        lowpass_sigma: the Gaussian sigma (px) of that low-pass.
        lambda_spectrum: weight of the optional spectral loss: every xy and vertical section of G_S(x)
            with the power spectrum of the stack's focal plane (``losses.spectral_loss``).
        lambda_correction_tv: weight of the optional total-variation prior on G_S's correction G_S(x) - x
            (``losses.correction_tv_loss``).
        lambda_focal_detail: weight of the optional prior that the detail the optical G_B's defocus removes
            from each plane of G_S(x) is the focal plane's (``losses.focal_detail_loss``; optical G_B only).
        sharp_domain: what D_S takes as real: "infocus" (the in-focus images), "stack" (each stack's
            sharpest slices, the paper's x∥*) or "both" (half of each).
        n_horizontal: horizontal sections per stack and step, for D_S and D_B.
        n_vertical: vertical sections per stack and step (half xz, half yz), for D_S.
        pool_size: earlier fakes kept for the discriminators (CycleGAN's image pool).
        epoch_length: iterations per epoch (default: the loader's length).
        amp: mixed precision: autocast to ``amp_dtype`` on the engine's device.
        amp_dtype: "float16" (CUDA only, with gradient scaling; on CPU amp is then off) or "bfloat16"
            (CUDA or CPU, no scaling needed): the same code path either way, so a CPU run with
            bfloat16 exercises what a GPU runs.
        train_handlers: Ignite/MONAI handlers to attach.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        infocus_loader: Iterable,
        g_s: torch.nn.Module,
        g_b: torch.nn.Module,
        d_s: torch.nn.Module,
        d_b: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        criterion: AdversarialCriterion | None = None,
        p: float = 2.0,
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.0,
        cycle_sigma: float = 0.0,
        lambda_adversarial_b: float = 1.0,
        lambda_lowpass: float = 0.0,
        lowpass_sigma: float = 3.0,
        lambda_spectrum: float = 0.0,
        lambda_correction_tv: float = 0.0,
        lambda_focal_detail: float = 0.0,
        sharp_domain: str = "infocus",
        n_horizontal: int = 4,
        n_vertical: int = 4,
        pool_size: int = 50,
        epoch_length: int | None = None,
        amp: bool = False,
        amp_dtype: str = "float16",
        train_handlers: Sequence | None = None,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, epoch_length, train_handlers, amp, amp_dtype)
        self.g_s, self.g_b, self.d_s, self.d_b = g_s, g_b, d_s, d_b
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.criterion = criterion or AdversarialCriterion("lsgan")
        if sharp_domain not in SHARP_DOMAINS:
            raise ValueError(f"sharp_domain must be one of {list(SHARP_DOMAINS)}, got {sharp_domain!r}")
        self.p, self.lambda_cycle, self.lambda_identity = p, lambda_cycle, lambda_identity
        self.lambda_lowpass, self.lowpass_sigma, self.sharp_domain = lambda_lowpass, lowpass_sigma, sharp_domain
        self.lambda_spectrum, self.cycle_sigma, self.lambda_adversarial_b = (
            lambda_spectrum,
            cycle_sigma,
            lambda_adversarial_b,
        )
        self.lambda_correction_tv, self.lambda_focal_detail = lambda_correction_tv, lambda_focal_detail
        self.optical_g_b = getattr(unwrap(g_b), "needs_focus", False)
        if lambda_focal_detail > 0 and not self.optical_g_b:
            raise ValueError(
                "lambda_focal_detail > 0 needs the optical G_B (g_b_kind: optical): pass --lambda_focal_detail 0"
            )
        self.n_horizontal, self.n_vertical = n_horizontal, n_vertical
        self.infocus_loader = infocus_loader
        self._infocus = None
        # one pool per kind of fake that a discriminator sees
        self.pools = {name: ImagePool(pool_size) for name in ("S_parallel", "S_perpendicular", "B_parallel")}

    # ---- checkpoints hold the pools too (ignite's Checkpoint saves the engine through these) ----
    def state_dict(self):
        state = super().state_dict()
        state["pools"] = {name: pool.state_dict() for name, pool in self.pools.items()}
        return state

    def load_state_dict(self, state_dict) -> None:
        state = dict(state_dict)
        for name, pool_state in state.pop("pools", {}).items():
            self.pools[name].load_state_dict(pool_state)
        super().load_state_dict(state)

    def _next_infocus(self) -> torch.Tensor:
        if self._infocus is None:
            self._infocus = _cycle(self.infocus_loader)
        return plain(next(self._infocus)["image"], self.state.device, self.non_blocking)

    def _sharp_examples(self, x: torch.Tensor, sharpness: torch.Tensor) -> torch.Tensor:
        """y*, the real examples of D_S: N,C,Y,X in-focus images, sharpest stack slices, or half of each."""
        if self.sharp_domain == "infocus":
            return self._next_infocus()
        # each stack's n_horizontal examples drawn from its three sharpest slices
        n = self.n_horizontal
        top = sharpness.topk(min(3, sharpness.shape[1]), dim=1).indices  # (B, 3)
        pick = torch.randint(top.shape[1], (top.shape[0], n), device=top.device)
        own = horizontal_sections(x, top.gather(1, pick))  # (B*n, C, Y, X)
        if self.sharp_domain == "stack":
            return own
        infocus = self._next_infocus()
        half = own.shape[0] // 2
        return torch.cat([infocus[: own.shape[0] - half], own[:half]])

    def _iteration(self, engine: ZSEGANTrainer, batchdata: dict[str, Any]) -> dict[str, float]:
        device = engine.state.device
        x = plain(batchdata["image"], device, engine.non_blocking)
        alpha = plain(batchdata["alpha"], device).float()
        cycle_weight = plain(batchdata["cycle_weight"], device).float()
        sharpness = plain(batchdata["sharpness"], device).float()
        y_star = engine._sharp_examples(x, sharpness)
        batch, depth, width = x.shape[0], x.shape[2], x.shape[-1]
        if y_star.shape[-2] < depth or y_star.shape[-1] < width:
            raise ValueError(
                f"in-focus crops {tuple(y_star.shape[-2:])} are too small to give vertical examples of {depth}x{width}"
            )
        crit, p = engine.criterion, engine.p
        for network in (engine.g_s, engine.g_b, engine.d_s, engine.d_b):
            network.train()  # validation (MONAI's evaluator) leaves G_S in eval mode

        # ---- generators: eqs (1)-(9), minimised over G_S and G_B ----
        for d in (engine.d_s, engine.d_b):
            d.requires_grad_(False)
        focus = sharpness.argmax(dim=1)  # the focal plane of each stack: its sharpest slice
        with engine._autocast():
            y = engine.g_s(x)
            if engine.optical_g_b:
                x_rec = engine.g_b(y, focus.float())  # G_B(G_S(x)), eq (7)
            else:
                x_rec = engine.g_b(y)
            z = sample_depths(batch, depth, min(engine.n_horizontal, depth), device=device)
            y_par = horizontal_sections(y, z)
            y_perp = vertical_sections(y, engine.n_vertical)
            rec_par = horizontal_sections(x_rec, z)
            alpha_z = alpha.gather(1, z).flatten()
            loss_g_s = anisotropic_adversarial_loss(crit, engine.d_s(y_par), engine.d_s(y_perp), True, p)  # (1)-(3)
            loss_g_b = torch.zeros((), device=device)
            if engine.lambda_adversarial_b > 0:
                loss_g_b = engine.lambda_adversarial_b * crit(engine.d_b(rec_par), True, alpha_z)  # (4)-(6)
            if engine.cycle_sigma > 0:
                x_cyc, rec_cyc = lowpass(x, engine.cycle_sigma), lowpass(x_rec, engine.cycle_sigma)
            else:
                x_cyc, rec_cyc = x, x_rec
            loss_cycle = engine.lambda_cycle * weighted_cycle_loss(x_cyc, rec_cyc, cycle_weight)  # (8)
            loss_g = loss_g_s + loss_g_b + loss_cycle  # (9)
            loss_identity = torch.zeros((), device=device)
            if engine.lambda_identity > 0:
                loss_identity = engine.lambda_identity * weighted_identity_loss(x, y, sharpness)
                loss_g = loss_g + loss_identity
            loss_lowpass = torch.zeros((), device=device)
            if engine.lambda_lowpass > 0:
                loss_lowpass = engine.lambda_lowpass * lowpass_fidelity_loss(x, y, engine.lowpass_sigma, x.new_ones(()))
                loss_g = loss_g + loss_lowpass
            loss_spectrum = torch.zeros((), device=device)
            if engine.lambda_spectrum > 0:
                loss_spectrum = engine.lambda_spectrum * spectral_loss(x, y, focus)
                loss_g = loss_g + loss_spectrum
            loss_correction_tv = torch.zeros((), device=device)
            if engine.lambda_correction_tv > 0:
                loss_correction_tv = engine.lambda_correction_tv * correction_tv_loss(x, y)
                loss_g = loss_g + loss_correction_tv
            loss_focal_detail = torch.zeros((), device=device)
            if engine.lambda_focal_detail > 0:
                sigma = unwrap(engine.g_b).sigmas(depth, focus.float())
                loss_focal_detail = engine.lambda_focal_detail * focal_detail_loss(x, y, focus, sigma)
                loss_g = loss_g + loss_focal_detail
        engine._step(loss_g, engine.g_optimizer)

        # ---- discriminators: maximised over D_S and D_B, eq (10) ----
        for d in (engine.d_s, engine.d_b):
            d.requires_grad_(True)
        fake_par, _ = engine.pools["S_parallel"].query(y_par.detach())
        fake_perp, _ = engine.pools["S_perpendicular"].query(y_perp.detach())
        with engine._autocast():
            real_perp = random_crops(y_star, (depth, width), y_perp.shape[0])
            loss_d_s = 0.5 * (
                anisotropic_adversarial_loss(crit, engine.d_s(y_star), engine.d_s(real_perp), True, p)
                + anisotropic_adversarial_loss(crit, engine.d_s(fake_par), engine.d_s(fake_perp), False, p)
            )
            loss_d_b = torch.zeros((), device=device)
            if engine.lambda_adversarial_b > 0:
                fake_rec, alpha_fake = engine.pools["B_parallel"].query(rec_par.detach(), alpha_z.detach())
                x_par = horizontal_sections(x, z)  # real stack slices at the same depths
                loss_d_b = 0.5 * (
                    crit(engine.d_b(x_par), True, alpha_z) + crit(engine.d_b(fake_rec), False, alpha_fake)
                )
            loss_d = loss_d_s + loss_d_b
        engine._step(loss_d, engine.d_optimizer)
        if engine.scaler is not None:
            engine.scaler.update()

        return {
            "loss_G": loss_g.item(),
            "loss_G_S_adv": loss_g_s.item(),
            "loss_G_B_adv": loss_g_b.item(),
            "loss_cycle": loss_cycle.item(),
            "loss_identity": loss_identity.item(),
            "loss_lowpass": loss_lowpass.item(),
            "loss_spectrum": loss_spectrum.item(),
            "loss_correction_tv": loss_correction_tv.item(),
            "loss_focal_detail": loss_focal_detail.item(),
            "loss_D_S": loss_d_s.item(),
            "loss_D_B": loss_d_b.item(),
            "lr_G": engine.g_optimizer.param_groups[0]["lr"],
            "lr_D": engine.d_optimizer.param_groups[0]["lr"],
        }
