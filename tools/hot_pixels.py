"""Isolated hot pixels in a paired G's output: for each weights file, every pair of a dataset through G.

    python tools/hot_pixels.py WEIGHTS.pt [WEIGHTS.pt ...] [--dataset_dir bundle/data/paired] [--limit 10]

Each G is built as it was trained (the settings.json beside its weights: builder and network_args) and run on
each wide-field image (or z-stack, for a G trained with ``--input_planes``: ``--dataset_dir`` its pairs, e.g.
``bundle/data/paired_planes7``) of ``<dataset_dir>/widefield/`` as a whole (both images mapped by their own 0.5/99.5
percentiles to -1 and 1, as training maps them). Prints, per G, how many images hold an output pixel beyond
``--limit`` normalised units (the confocal targets' own brightest specks reach about 12), the largest such
value, and the largest |G(x) - y| with where it is (docs/paired.md, "Hot pixels").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.data.io import IMAGE_SUFFIXES, list_files, read_image, read_stack  # noqa: E402
from scripts.data.transforms import RobustNormalised  # noqa: E402
from scripts.errors import InputError  # noqa: E402
from scripts.inference.sliding_window import load_weights, read_settings  # noqa: E402
from scripts.ops.registry import build  # noqa: E402


def normalised(path: Path, stack: bool = False) -> np.ndarray:
    """The image (a z-stack with ``stack``) mapped as training maps it (``RobustNormalised``: its 0.5/99.5
    percentiles to -1 and 1)."""
    image = torch.as_tensor(np.asarray((read_stack if stack else read_image)(path)[0], np.float32))
    return RobustNormalised("image")({"image": image})["image"].numpy()


def hot_pixels(weights: Path, dataset_dir: Path, limit: float) -> dict:
    """Counts and extremes of one G over every pair in ``dataset_dir``."""
    settings = read_settings(weights)
    if not settings.get("network_args"):
        raise SystemExit(f"{weights}: no settings.json beside it, so its architecture is unknown")
    g = load_weights(build(settings), weights).eval()
    planes = int(settings["network_args"].get("in_channels", 1))  # --input_planes: a wide-field stack in
    images, hot, peak, worst = 0, 0, -np.inf, (0.0, "")
    for path in list_files(dataset_dir / "widefield", IMAGE_SUFFIXES):
        try:
            x, y = normalised(path, stack=planes > 1), normalised(dataset_dir / "confocal" / path.name)
        except InputError as e:
            raise SystemExit(
                f"error: {e} ({weights} takes {planes} plane(s): give the --dataset_dir of its pairs)"
            ) from e
        x = x[None] if x.ndim == 2 else x  # planes first
        if x.shape[0] != planes:
            raise SystemExit(
                f"error: {path}: {x.shape[0]} planes, but {weights} takes {planes}: give its --dataset_dir"
            )
        with torch.no_grad():
            out = g(torch.from_numpy(x)[None])[0, 0].numpy()
        images += 1
        hot += int(np.abs(out).max() > limit)
        peak = max(peak, float(np.abs(out).max()))
        error = np.abs(out - y)
        worst = max(
            worst,
            (
                float(error.max()),
                f"{path.name} at y, x {tuple(int(i) for i in np.unravel_index(error.argmax(), error.shape))}",
            ),
        )
    return {"images": images, "hot": hot, "peak": peak, "worst": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, nargs="+")
    parser.add_argument("--dataset_dir", type=Path, default=Path(__file__).resolve().parents[1] / "bundle/data/paired")
    parser.add_argument("--limit", type=float, default=10.0)
    args = parser.parse_args()
    for weights in args.weights:
        r = hot_pixels(weights, args.dataset_dir, args.limit)
        print(
            f"{weights}: {r['hot']} of {r['images']} images with an output pixel beyond {args.limit:g} units "
            f"(largest |output| {r['peak']:.1f}); largest |G(x) - y| {r['worst'][0]:.1f} ({r['worst'][1]})"
        )


if __name__ == "__main__":
    main()
