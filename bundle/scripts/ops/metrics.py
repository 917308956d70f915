"""Validation metric: how sharp the sections of a stack are, against the input's sharpest slice."""

from __future__ import annotations

import torch
from ignite.metrics import Metric

from scripts.zsegan.focus import focus_measure


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
