"""Seams against speed: how the sliding window's size and overlap change the shipped G_S's output.

    python tools/sliding_window_seams.py [--stacks 2] [--size 512]

G_S's instance norms make each window's output depend on the whole window, so neighbouring windows
disagree where they meet and the blend shows there. For simulated stacks (with their sharp truth) and
each window setting this prints:
- PSNR against the truth (each volume's 0.5/99.5 percentiles mapped to 0/1, as in evaluation);
- the seam index: the largest mean |gradient| of any one column or row of the output (along x and y,
  over all planes and the other axis), divided by the median one. A seamless image is near 1 (the truth:
  about 1.1); window borders show up as columns and rows of larger gradients;
- the share of (a) that this setting allows at most: the voxels of one window over the voxels it adds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from monai.inferers import SlidingWindowInferer  # noqa: E402
from scripts.data.transforms import RobustNormalised  # noqa: E402
from scripts.evaluation.evaluate import unit_domain  # noqa: E402
from scripts.evaluation.measures import psnr as psnr_db  # noqa: E402
from scripts.inference.sliding_window import enhance, load_weights  # noqa: E402
from scripts.nets.networks import Generator3D  # noqa: E402
from scripts.simulate.zstacks import simulate_stack  # noqa: E402

SETTINGS = [(128, 0.25), (128, 0.125), (256, 0.25), (256, 0.125), (None, 0.0)]  # None: one window, the whole field


def unit(a: np.ndarray) -> np.ndarray:
    """``a``'s own 0.5/99.5 percentiles to 0/1, clipped: the evaluation's intensity domain."""
    return unit_domain(a, 0.5, 99.5)(a)


def seam_index(y: np.ndarray) -> float:
    u = unit(y)
    profile = np.abs(np.diff(u, axis=2)).mean(axis=(0, 1)) + np.abs(np.diff(u, axis=1)).mean(axis=(0, 2))
    return float(profile.max() / np.median(profile))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    network = load_weights(Generator3D(), Path(__file__).resolve().parents[1] / "bundle" / "models" / "model.pt")
    rng = np.random.default_rng(5)
    settings = [(roi or args.size, overlap) for roi, overlap in SETTINGS]
    psnr, seams = np.zeros((args.stacks, len(settings))), np.zeros((args.stacks, len(settings) + 1))
    for i in range(args.stacks):
        stack, truth, _ = simulate_stack(rng, size=args.size)
        t = unit(truth.astype(np.float32))
        seams[i, -1] = seam_index(t)
        for j, (roi, overlap) in enumerate(settings):
            inferer = SlidingWindowInferer((-1, roi, roi), sw_batch_size=1, overlap=overlap, mode="gaussian")
            with torch.no_grad():
                y = unit(enhance(network, stack, inferer, RobustNormalised("image")))
            psnr[i, j], seams[i, j] = psnr_db(y, t), seam_index(y)
    print(f"{args.stacks} simulated stacks of {args.size}x{args.size}x29, shipped G_S (means)")
    for j, (roi, overlap) in enumerate(settings):
        print(
            f"window {roi}, overlap {overlap}: PSNR {psnr[:, j].mean():.2f} dB, seam index {seams[:, j].mean():.2f}, "
            f"at most {100 * (1 - overlap) ** 2:.0f}% of (a)"
        )
    print(f"truth: seam index {seams[:, -1].mean():.2f}")


if __name__ == "__main__":
    main()
