"""Seams against speed: how the sliding window's size and overlap change the shipped G_S's output.

    python tools/sliding_window_seams.py [--stacks 2] [--size 512]

G_S's instance norms make each window's output depend on the whole window, so neighbouring windows
disagree where they meet and the blend shows there. For simulated stacks (with their sharp truth) and
each window setting (and inference.yaml's default) this prints:
- PSNR against the truth (each volume's 0.5/99.5 percentiles mapped to 0/1, as in evaluation);
- the seam index: the largest mean |gradient| of any one column or row of the output (along x and y,
  over all planes and the other axis), divided by the median one. A seamless image is near 1 (the truth:
  about 1.1); window borders show up as columns and rows of larger gradients;
- the share of (a) that this setting allows at most: the voxels of one window over the voxels it adds.

    python tools/sliding_window_seams.py --tilings [--size 256] [--window 192] [--weights W] [--halos 8 16 32]

compares, instead, the two ways of joining windows (``--sw_tiling``) on an untrained window-independent G_S (the
default architecture with ``--g_norm batch`` and ``--g_residual false``, since an untrained residual G_S is the
identity; random weights, running statistics from a few passes over the stack): one window over the whole field,
blend (MONAI's Gaussian blend, ``--sw_overlap_px auto`` and the halo tiler's own windows) and halo
(``HaloInferer``, a halo of G_S's reach on its lattice), each at the same window, on one simulated stack: seam
index, the largest difference to the one window (% of its range) and the time against the one window's. Untrained:
what it measures is the tiling, not the enhancement.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from monai.bundle import ConfigParser  # noqa: E402
from monai.inferers import SimpleInferer  # noqa: E402
from scripts.data.transforms import RobustNormalised  # noqa: E402
from scripts.evaluation.evaluate import unit_domain  # noqa: E402
from scripts.evaluation.measures import psnr as psnr_db  # noqa: E402
from scripts.inference.sliding_window import (  # noqa: E402
    SlidingWindow,
    enhance,
    halo_width,
    load_weights,
    sliding_window,
)
from scripts.nets.architecture import default_generator  # noqa: E402
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


def window_independent_g_s(stack: np.ndarray, **args) -> Generator3D:
    """An untrained ``--g_norm batch`` G_S (the configs' default architecture; ``args``: Generator3D's), its running
    statistics the averages over a few training-mode passes on crops of ``stack``, in eval mode."""
    torch.manual_seed(0)
    g_s = default_generator(**{"norm": "batch", **args})
    for m in g_s.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.momentum = None  # a plain average of the passes
    x = torch.as_tensor(stack, dtype=torch.float32)[None, None] / 127.5 - 1
    with torch.no_grad():
        for y in (0, x.shape[-2] // 2):
            g_s(x[..., y : y + 64, :64])
    return g_s.eval()


def compare_tilings(
    size: int = 256, window: int = 192, weights: Path | None = None, halos: tuple[int, ...] = (), **g_s_args
) -> list[tuple[str, float, float, float]]:
    """(setting, seam index, max |tiled - one window| in % of the one window's output range, seconds) for one
    window over the whole field and blend and halo tiling at ``window`` px, on one simulated ``size``-px stack,
    with :func:`window_independent_g_s` (``residual`` and ``focal_skip`` False unless ``g_s_args`` say otherwise:
    an untrained residual G_S is the identity, or the focal transfer), or a trained ``--g_norm batch`` G_S from
    ``weights`` (the configs' default architecture otherwise); then halo tiling with each of ``halos`` (px,
    smaller than the reach: how far the output really depends on); the last row is the truth's seam index."""
    stack, truth, _ = simulate_stack(np.random.default_rng(5), size=size)
    if weights is None:
        g_s = window_independent_g_s(stack, **{"residual": False, "focal_skip": False, "focal_gate": False, **g_s_args})
    else:
        g_s = load_weights(default_generator(**{"norm": "batch", **g_s_args}), weights).eval()
    halo = halo_width("auto", g_s)
    roi = (-1, window, window)
    settings = [
        ("one window", SimpleInferer()),
        ("blend, auto overlap", sliding_window("blend", roi, 1, 0.25, "auto", "gaussian", g_s)),
        (f"blend, {2 * halo} px overlap", sliding_window("blend", roi, 1, 0.25, 2 * halo, "gaussian", g_s)),
        (f"halo {halo} px", sliding_window("halo", roi, 1, 0.25, "auto", "gaussian", g_s)),
        *((f"halo {h} px", sliding_window("halo", roi, 1, 0.25, 2 * h, "gaussian", g_s)) for h in halos),
    ]
    rows, whole = [], None
    for name, inferer in settings:
        start = time.perf_counter()
        with torch.no_grad():
            y = enhance(g_s, stack, inferer, RobustNormalised("image"))
        seconds = time.perf_counter() - start
        whole = y if whole is None else whole
        error = 100 * float(np.abs(y - whole).max() / np.ptp(whole))  # in % of the one window's output range
        rows.append((name, seam_index(y), error, seconds))
    rows.append(("truth", seam_index(truth.astype(np.float32)), float("nan"), float("nan")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tilings", action="store_true", help="blend against halo, untrained batch-norm G_S")
    parser.add_argument("--window", type=int, default=192, help="with --tilings: the window's y, x")
    parser.add_argument("--weights", type=Path, help="with --tilings: a trained g_norm batch G_S (default: untrained)")
    parser.add_argument("--halos", type=int, nargs="*", default=[], help="with --tilings: halo tiling with these too")
    args = parser.parse_args()
    if args.tilings:
        rows = compare_tilings(args.size, args.window, args.weights, tuple(args.halos))
        network = f"G_S from {args.weights}" if args.weights else "untrained default G_S, residual off"
        print(
            f"one simulated stack of {args.size}x{args.size}x29, {network}, g_norm batch, "
            f"window {args.window} px, {torch.get_num_threads()} torch threads"
        )
        for name, seams, error, seconds in rows[:-1]:
            print(
                f"{name}: seam index {seams:.3f}, difference to one window at most {error:.4f}% of its range; "
                f"{seconds:.1f} s = {seconds / rows[0][3]:.2f}x one window"
            )
        print(f"truth: seam index {rows[-1][1]:.3f}")
        return
    network = load_weights(default_generator(), Path(__file__).resolve().parents[1] / "bundle" / "models" / "model.pt")
    rng = np.random.default_rng(5)
    settings = [
        (f"window {roi or args.size}, overlap {overlap} (blend)", blend_window(roi or args.size, overlap), overlap)
        for roi, overlap in SETTINGS
    ]
    config = ConfigParser()
    config.read_config(Path(__file__).resolve().parents[1] / "bundle" / "configs" / "inference.yaml")
    default = config.get_parsed_content("inferer")  # as inference builds it (for the config's G_S: the same reach)
    name = f"the default: {config['sw_tiling']}, window {config['sw_roi_size']}, overlap {config['sw_overlap_px']} px"
    settings.append((name, default, None))
    psnr, seams = np.zeros((args.stacks, len(settings))), np.zeros((args.stacks, len(settings) + 1))
    for i in range(args.stacks):
        stack, truth, _ = simulate_stack(rng, size=args.size)
        t = unit(truth.astype(np.float32))
        seams[i, -1] = seam_index(t)
        for j, (_, inferer, _) in enumerate(settings):
            with torch.no_grad():
                y = unit(enhance(network, stack, inferer, RobustNormalised("image")))
            psnr[i, j], seams[i, j] = psnr_db(y, t), seam_index(y)
    print(f"{args.stacks} simulated stacks of {args.size}x{args.size}x29, shipped G_S (means)")
    for j, (name, _, overlap) in enumerate(settings):
        cap = "" if overlap is None else f", at most {100 * (1 - overlap) ** 2:.0f}% of (a)"
        print(f"{name}: PSNR {psnr[:, j].mean():.2f} dB, seam index {seams[:, j].mean():.3f}{cap}")
    print(f"truth: seam index {seams[:, -1].mean():.3f}")


def blend_window(roi: int, overlap: float) -> SlidingWindow:
    return SlidingWindow((-1, roi, roi), sw_batch_size=1, overlap=overlap, mode="gaussian")


if __name__ == "__main__":
    main()
