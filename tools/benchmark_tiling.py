"""Blend against halo tiling with the shipped G_S, in memory and for whole slides: seconds and differences.

    python tools/benchmark_tiling.py [--size 1024] [--slide]

One simulated size x size x 29 stack (seed 5) through ``enhance`` with: MONAI's blend at 128-px windows and overlap
0.25 (the default before 0.12.0), halo tiling at 256-px windows with halos of 24 and 32 px (32: the default since
0.12.0), and at 512-px windows with a 32-px halo, the reference the others are compared with (largest difference
in % of its output range). With ``--slide`` the stack is written as a zarr array and enhanced out of core
(``enhance_slide``, 1024-px tiles, dask's local threads) with blend and with halo 32 at 256 px instead.
Uncompiled float32 on CPU; run with OMP_NUM_THREADS set to compare like with like (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.data.transforms import RobustNormalised  # noqa: E402
from scripts.inference.sliding_window import enhance, load_weights, sliding_window  # noqa: E402
from scripts.inference.wholeslide import enhance_slide  # noqa: E402
from scripts.nets.architecture import default_generator  # noqa: E402
from scripts.simulate.zstacks import simulate_stack  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[1] / "bundle" / "models" / "model.pt"
#: (name, tiling, window, overlap in px); the last is the reference
IN_MEMORY = [
    ("blend 128 px, overlap 0.25", "blend", 128, None),
    ("halo 24 px, 256-px windows", "halo", 256, 48),
    ("halo 32 px, 256-px windows", "halo", 256, 64),
    ("halo 32 px, 512-px windows", "halo", 512, 64),
]
SLIDE = [IN_MEMORY[0], IN_MEMORY[2]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--slide", action="store_true", help="out of core (enhance_slide) instead of in memory")
    args = parser.parse_args()
    stack, _, _ = simulate_stack(np.random.default_rng(5), size=args.size)
    g_s = load_weights(default_generator(), WEIGHTS).eval()
    print(f"{stack.shape} stack, shipped G_S, {torch.get_num_threads()} torch thread(s)", flush=True)
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.zarr"
        if args.slide:
            array = zarr.create_array(source, shape=stack.shape, chunks=(1, 1024, 1024), dtype=stack.dtype)
            array[:] = stack
        for name, tiling, window, overlap_px in SLIDE if args.slide else IN_MEMORY:
            inferer = sliding_window(tiling, (-1, window, window), 1, 0.25, overlap_px, "gaussian", g_s)
            start = time.perf_counter()
            if args.slide:
                out = enhance_slide(g_s, source, Path(tmp) / f"{tiling}.ome.zarr", inferer, tile_size=1024)
                outputs[name] = np.asarray(zarr.open_group(str(out), mode="r")["0"])
            else:
                outputs[name] = enhance(g_s, stack, inferer, RobustNormalised("image"))
            print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    reference = outputs[name]
    for name, output in outputs.items():
        difference = 100 * np.abs(output.astype(np.float64) - reference).max() / np.ptp(reference)
        print(f"{name}: differs from the last by at most {difference:.4f}% of its range")


if __name__ == "__main__":
    main()
