"""Figures and numbers of docs/results.md from stacks enhanced by the inference workflow.

    python tools/make_figures.py NAME INPUT_DIR OUTPUT_DIR [--truth TRUTH_DIR] [--depths 2 14 26]

Writes docs/figures/NAME_views.png (orthogonal views of the first stack: input, G_S(x), truth),
docs/figures/NAME_sharpness.png (per-slice sharpness relative to each input's sharpest slice, mean
over the stacks) and prints a Markdown table of the mean sharpness ratios (and PSNR against the
truth, where given). Outputs are matched to inputs by name (``<name>_enhanced.<suffix>``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.data.io import STACK_SUFFIXES, list_files, read_stack  # noqa: E402
from scripts.evaluation.views import comparison_png, sharpness_plot  # noqa: E402
from scripts.inference.sliding_window import output_path  # noqa: E402
from scripts.ops.metrics import sharpness_ratios  # noqa: E402

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    return float(10 * np.log10(peak**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("inputs")
    parser.add_argument("outputs")
    parser.add_argument("--truth")
    parser.add_argument("--depths", type=int, nargs="*")
    args = parser.parse_args(argv)

    rows = {"x": [], "y": [], "x_v": [], "y_v": [], "psnr_x": [], "psnr_y": []}
    first = None
    for path in list_files(args.inputs, STACK_SUFFIXES):
        x = read_stack(path)[0]
        y = read_stack(output_path(path, args.outputs))[0]
        tx, ty = (torch.from_numpy(a.astype(np.float32))[None] for a in (x, y))
        rows["x"].append(sharpness_ratios(tx, tx).numpy())
        rows["y"].append(sharpness_ratios(ty, tx).numpy())
        rows["x_v"].append(float(sharpness_ratios(tx, tx, "vertical").mean()))
        rows["y_v"].append(float(sharpness_ratios(ty, tx, "vertical").mean()))
        stacks = {"input x": x, "G_S(x)": y}
        if args.truth:
            truth = read_stack(Path(args.truth) / path.name)[0]
            stacks["truth"] = truth
            rows["psnr_x"].append(psnr(x, truth))
            rows["psnr_y"].append(psnr(y, truth))
        first = first or stacks

    FIGURES.mkdir(exist_ok=True)
    comparison_png(FIGURES / f"{args.name}_views.png", first, args.depths)
    x_ratio, y_ratio = np.mean(rows["x"], axis=0), np.mean(rows["y"], axis=0)
    title = f"{args.name}: mean of {len(rows['x'])} held-out stacks"
    sharpness_plot(FIGURES / f"{args.name}_sharpness.png", x_ratio, y_ratio, title)

    def cell(values) -> str:
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    print("| | input x | G_S(x) |\n|---|---|---|")
    print(f"| sharpness of xy slices (mean over slices) | {cell(rows['x'])} | {cell(rows['y'])} |")
    print(f"| sharpness of xz/yz sections | {cell(rows['x_v'])} | {cell(rows['y_v'])} |")
    if rows["psnr_x"]:
        print(f"| PSNR against the truth (dB) | {cell(rows['psnr_x'])} | {cell(rows['psnr_y'])} |")


if __name__ == "__main__":
    main()
