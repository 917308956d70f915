"""Validation metrics: how sharp the sections of G_S(x) are, how faithful G_S(x) is to x, and the score
that selects models (sharpness, gated by fidelity).

Sharpness (:class:`SharpnessRatio`) alone rewards invented texture as much as real detail, so the
key metric of validation, and the registry's champion alias, use :class:`GatedScore`: the mean
sharpness ratio (capped at 1) of all sections, among models whose worst low-pass SSIM over depths
and whose SSIM at the input's sharpest slice pass their thresholds; a model that fails a gate scores
that value minus 1 (at most 0), below every model that passes.

:class:`CycleProbe` looks for information hidden in G_S(x): a CycleGAN can hide its input in
high-frequency codes that G_B decodes (Chu et al. 2017), so the cycle loss stays low while G_S(x)
shows something else. It measures how much the cycle's error |G_B(y + n) - x| grows when a faint
noise n (``epsilon``, 1% of the range by default) is added to y: a G_B that reads a hidden code is
thrown off far more than the noise itself explains.

:class:`PlaneSSIM` is the multi-defect restorer's validation SSIM (``configs/restore_train.yaml``): the
restoration evaluation's SSIM (mean over XY planes, fixed domain) of an output against its clean target.
"""

from __future__ import annotations

import numpy as np
import torch
from ignite.metrics import Metric
from scripts.evaluation import measures
from scripts.zsegan.focus import focus_measure, sharpest_index


def sharpness_ratios(stack: torch.Tensor, reference: torch.Tensor, sections: str = "horizontal") -> torch.Tensor:
    """Focus measure of each section of ``stack`` (CZYX) over that of ``reference``'s sharpest xy slice.

    ``sections="horizontal"``: one ratio per z slice; ``"vertical"``: one per xz and yz section.
    1.0 means as sharp as the best in-focus slice of the input.
    """
    best = focus_measure(reference[0].float()).max().clamp_min(1e-12)
    stack = stack[0].float()
    if sections == "horizontal":
        return focus_measure(stack) / best
    if sections == "vertical":
        xz = focus_measure(stack.permute(1, 0, 2))  # (Y, Z, X): one xz section per y
        yz = focus_measure(stack.permute(2, 0, 1))  # (X, Z, Y): one yz section per x
        return torch.cat([xz, yz]) / best
    raise ValueError(f"sections must be 'horizontal' or 'vertical', got {sections!r}")


class SharpnessRatio(Metric):
    """Mean (over sections and stacks) of ``sharpness_ratios(output, input)``.

    ``output_transform`` must give ``(outputs, inputs)``: lists (or batches) of CZYX tensors.
    """

    def __init__(self, sections: str = "horizontal", output_transform=lambda x: x, device="cpu"):
        self.sections = sections
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._sum, self._count = 0.0, 0

    def update(self, output) -> None:
        outputs, inputs = output
        for out, inp in zip(outputs, inputs, strict=False):
            ratios = sharpness_ratios(out.detach().cpu(), inp.detach().cpu(), self.sections)
            self._sum += float(ratios.sum())
            self._count += ratios.numel()

    def compute(self) -> float:
        return self._sum / max(self._count, 1)


def fidelity(pred: torch.Tensor, image: torch.Tensor, sigma: float = 3.0) -> tuple[float, float]:
    """(worst ssim_coarse over depths, SSIM at the input's sharpest slice) of one CZYX output and its input.

    Both are mapped with the input's 0.5/99.5 percentiles to [0, 1] and clipped, as the evaluation does.
    """
    from scripts.evaluation.evaluate import unit_domain

    x = image[0].detach().float().cpu().numpy()
    unit = unit_domain(x, 0.5, 99.5)
    xu, yu = unit(x), unit(pred[0].detach().float().cpu().numpy())
    focus = sharpest_index(x)
    worst = min(measures.ssim_coarse(xu[k], yu[k], sigma) for k in range(len(xu)))
    return worst, measures.ssim(xu[focus], yu[focus])


class _PerStack(Metric):
    """Collects one value per stack of ``(outputs, inputs)`` and reports their mean."""

    def reset(self) -> None:
        self._values: list[float] = []

    def update(self, output) -> None:
        for out, inp in zip(*output, strict=True):
            self._values.append(self.value(out, inp))

    def compute(self) -> float:
        return float(np.mean(self._values)) if self._values else float("nan")


class Fidelity(_PerStack):
    """Mean over stacks of ``fidelity``'s ``"coarse_worst"`` or ``"focus"`` value (1: the input itself)."""

    def __init__(self, measure: str = "coarse_worst", sigma: float = 3.0, output_transform=lambda x: x, device="cpu"):
        if measure not in ("coarse_worst", "focus"):
            raise ValueError(f"measure must be 'coarse_worst' or 'focus', got {measure!r}")
        self.measure, self.sigma = measure, sigma
        super().__init__(output_transform=output_transform, device=device)

    def value(self, out: torch.Tensor, inp: torch.Tensor) -> float:
        coarse_worst, focus = fidelity(out, inp, self.sigma)
        return coarse_worst if self.measure == "coarse_worst" else focus


class GatedScore(_PerStack):
    """The model-selection score of a stack (see the module doc); its mean over stacks.

    Args:
        min_ssim_coarse: the worst ssim_coarse over depths must reach this.
        min_ssim_focus: the SSIM at the input's sharpest slice must reach this.
        sigma: the low-pass of ssim_coarse, px.
    """

    def __init__(
        self,
        min_ssim_coarse: float = 0.75,
        min_ssim_focus: float = 0.85,
        sigma: float = 3.0,
        output_transform=lambda x: x,
        device="cpu",
    ):
        self.min_ssim_coarse, self.min_ssim_focus, self.sigma = min_ssim_coarse, min_ssim_focus, sigma
        super().__init__(output_transform=output_transform, device=device)

    def value(self, out: torch.Tensor, inp: torch.Tensor) -> float:
        out_cpu, inp_cpu = out.detach().cpu(), inp.detach().cpu()
        ratios = torch.cat([sharpness_ratios(out_cpu, inp_cpu, s) for s in ("horizontal", "vertical")])
        sharpness = float(ratios.clamp(max=1.0).mean())
        coarse_worst, focus = fidelity(out_cpu, inp_cpu, self.sigma)
        passed = coarse_worst >= self.min_ssim_coarse and focus >= self.min_ssim_focus
        return sharpness if passed else sharpness - 1.0


class CycleProbe(_PerStack):
    """Mean over stacks of mean|G_B(y + n) - x| - mean|G_B(y) - x|, n ~ N(0, epsilon^2), y = G_S(x).

    Args:
        g_b: the training's G_B (a ``Generator3D``, or an ``OpticalBlur`` that is told each stack's
            sharpest slice as its focal plane).
        epsilon: the noise's standard deviation, in the normalised range [-1, 1].
        seed: of the noise, the same for every validation.
    """

    def __init__(
        self, g_b: torch.nn.Module, epsilon: float = 0.02, seed: int = 0, output_transform=lambda x: x, device="cpu"
    ):
        self.g_b, self.epsilon, self.seed = g_b, epsilon, seed
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        super().reset()
        self._generator = torch.Generator().manual_seed(self.seed)

    def value(self, out: torch.Tensor, inp: torch.Tensor) -> float:
        from scripts.nets.networks import unwrap

        g_b = unwrap(self.g_b)
        y, x = out[None].float(), inp[None].float()
        noise = torch.randn(y.shape, generator=self._generator).to(y) * self.epsilon
        args = (torch.as_tensor([float(sharpest_index(x[0, 0]))], device=y.device),)
        args = args if getattr(g_b, "needs_focus", False) else ()
        with torch.no_grad():
            clean = (g_b(y, *args) - x).abs().mean()
            noisy = (g_b(y + noise, *args) - x).abs().mean()
        return float(noisy - clean)


class PlaneSSIM(_PerStack):
    """Mean over volumes of ``evaluation.restoration.ssim_planes`` (the mean SSIM over XY planes) of ``(outputs,
    targets)``, both CZYX in the normalised range [-1, 1] (the fixed intensities mapped: 0-255 for the defect
    data), taken to [0, 1] and clipped first, as the restoration evaluation does: so ``val_ssim`` during stage 2
    is the number ``restore_evaluate.yaml`` reports as ``ssim``."""

    def value(self, out: torch.Tensor, target: torch.Tensor) -> float:
        from scripts.evaluation.restoration import ssim_planes  # here only: it needs the plotting of views

        def unit(volume: torch.Tensor) -> np.ndarray:
            return ((volume[0].detach().float().cpu().numpy() + 1.0) / 2.0).clip(0.0, 1.0)

        return ssim_planes(unit(out), unit(target))
