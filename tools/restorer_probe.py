"""Does a restorer architecture learn its task at all? A bare training loop, without the workflow (docs/multidefect.md,
"Why the restorers did not learn"): pixel L1, Adam, batches of two random 32 x 32 crops of the full depth from the
task's real training pairs; prints the mean PSNR (fixed [-1, 1] domain) of the first four test volumes every 50
steps, beside the input's. From bundle/:

    OMP_NUM_THREADS=1 python ../tools/restorer_probe.py /tmp/defects denoising --lr 1e-4 --steps 150 --long_skip

``--architecture plain`` is a four-layer full-resolution CNN (3^3 kernels, 32 channels, input + its output), the
yardstick; the other choices are ResNetGenerator's ``output`` with the restore configs' sizes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scripts.data.io import read_stack
from scripts.evaluation import measures
from scripts.nets.networks import ResNetGenerator
from torch import nn


class Plain(nn.Module):
    """x + four 3^3 convolutions of x at full resolution."""

    def __init__(self):
        super().__init__()
        layers = []
        for i in range(4):
            layers += [nn.Conv3d(1 if i == 0 else 32, 1 if i == 3 else 32, 3, padding=1)] + (
                [nn.ReLU()] if i < 3 else []
            )
        self.f = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.f(x)


def volumes(folder: Path) -> list[torch.Tensor]:
    return [torch.from_numpy(read_stack(p)[0].astype(np.float32) / 127.5 - 1) for p in sorted(folder.glob("*.tif"))]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """The evaluation's PSNR of two volumes in [-1, 1] (a clipped), on [0, 1]."""
    return measures.psnr((a.clamp(-1, 1).numpy() + 1) / 2, (b.numpy() + 1) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("task")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--architecture", default="residual", choices=["residual", "tanh", "mean", "plain"])
    parser.add_argument("--downsamplings", type=int, default=2)
    parser.add_argument("--norm", default="instance")
    parser.add_argument("--upsampling", default="transpose")
    parser.add_argument("--long_skip", action="store_true")
    a = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    root = a.dataset_dir / a.task
    xs, ys = volumes(root / "train" / "defective"), volumes(root / "train" / "clean")
    tx, ty = volumes(root / "test" / "defective")[:4], volumes(root / "test" / "clean")[:4]
    if a.architecture == "plain":
        g = Plain()
    else:
        g = ResNetGenerator(3, channels=16, n_downsampling=a.downsamplings, n_residual_blocks=9, first_kernel_size=7,
                            norm=a.norm, upsampling=a.upsampling, output=a.architecture, long_skip=a.long_skip)  # fmt: skip
    optimiser = torch.optim.Adam(g.parameters(), lr=a.lr)
    baseline = np.mean([psnr(x, y) for x, y in zip(tx, ty, strict=True)])
    start = time.time()
    for step in range(a.steps + 1):
        if step % 50 == 0:
            g.eval()
            with torch.no_grad():
                out = np.mean([psnr(g(x[None, None])[0, 0], y) for x, y in zip(tx, ty, strict=True)])
            g.train()
            print(f"{step} test psnr {out:.2f} (input {baseline:.2f}) {time.time() - start:.0f}s", flush=True)
        if step == a.steps:
            break
        picks, (y0, x0) = rng.integers(len(xs), size=2), rng.integers(0, xs[0].shape[-1] - 32 + 1, size=2)
        x = torch.stack([xs[k][None, :, y0 : y0 + 32, x0 : x0 + 32] for k in picks])
        y = torch.stack([ys[k][None, :, y0 : y0 + 32, x0 : x0 + 32] for k in picks])
        loss = (g(x) - y).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


if __name__ == "__main__":
    main()
