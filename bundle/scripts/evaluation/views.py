"""Orthogonal views of stacks as one PNG: xy at several depths, xz and yz; input beside output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scripts.data.io import write_image


def _to_uint8(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((plane - lo) / max(hi - lo, 1e-8), 0, 1) * 255).round().astype(np.uint8)


def default_depths(depth: int) -> list[int]:
    """The xy sections shown when none are asked for: top, middle and bottom."""
    return [0, depth // 2, depth - 1]


def orthogonal_views(
    stack: np.ndarray, depths: list[int] | None = None, gap: int = 4, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """One row: xy sections at ``depths`` (default: top, middle, bottom), then the central xz and yz.

    ``stack`` is ZYX; vertical sections have z along rows. Grey levels are the stack's 1-99% range, or
    ``value_range`` (the same for every stack, so that a loss of contrast shows).
    """
    stack = np.asarray(stack, dtype=np.float32)
    depth, height, width = stack.shape
    depths = depths if depths is not None else default_depths(depth)
    lo, hi = np.percentile(stack, [1, 99]) if value_range is None else value_range
    tiles = [stack[z] for z in depths] + [stack[:, height // 2, :], stack[:, :, width // 2]]
    row_height = max(t.shape[0] for t in tiles)
    row = np.full((row_height, sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)), 255, np.uint8)
    x = 0
    for tile in tiles:
        row[: tile.shape[0], x : x + tile.shape[1]] = _to_uint8(tile, lo, hi)
        x += tile.shape[1] + gap
    return row


def comparison_png(
    path, stacks: dict[str, np.ndarray], depths: list[int] | None = None, value_range: tuple[float, float] | None = None
) -> None:
    """Write rows of orthogonal views, one per named stack (e.g. input, output, truth), labelled; grey levels
    as :func:`orthogonal_views`."""
    header, gap = 14, 4
    label_width = max(70, 6 * max(len(name) for name in stacks) + 10)  # PIL's default font: 6 px a character
    first = np.asarray(next(iter(stacks.values())))
    depth, height, width = first.shape
    depths = depths if depths is not None else default_depths(depth)
    rows = [orthogonal_views(s, depths, gap, value_range) for s in stacks.values()]
    canvas = Image.new(
        "L", (max(r.shape[1] for r in rows) + label_width, header + sum(r.shape[0] + gap for r in rows)), 255
    )
    draw = ImageDraw.Draw(canvas)
    x = label_width
    for title, tile_width in [(f"xy z={z}", width) for z in depths] + [("xz", width), ("yz", height)]:
        draw.text((x + 2, 1), title, fill=0)
        x += tile_width + gap
    y = header
    for name, row in zip(stacks, rows, strict=False):
        canvas.paste(Image.fromarray(row), (label_width, y))
        draw.text((4, y + row.shape[0] // 2), name, fill=0)
        y += row.shape[0] + gap
    write_image(path, np.asarray(canvas))


def sharpness_plot(path, input_ratio: np.ndarray, output_ratio: np.ndarray, title: str) -> None:
    """Line plot of per-slice sharpness (relative to the input's sharpest slice), input and output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    z = np.arange(len(input_ratio))
    ax.plot(z, input_ratio, "o-", label="input x")
    ax.plot(z, output_ratio, "s-", label="G_S(x)")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="slice z (0-based)", ylabel="focus measure / input's sharpest slice", title=title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """``python -m scripts.evaluation.views OUT.png NAME=STACK [NAME=STACK ...] [--depths 0 14 28]`` (from bundle/)."""
    import argparse

    from scripts.data.io import read_stack
    from scripts.errors import install_excepthook

    install_excepthook()
    parser = argparse.ArgumentParser(description="Orthogonal views of stacks, one labelled row per stack.")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("stacks", nargs="+", help="NAME=PATH of each stack (any format scripts.data.io reads)")
    parser.add_argument("--depths", type=int, nargs="*", help="xy sections to show (default: top, middle, bottom)")
    args = parser.parse_args(argv)
    stacks = {}
    for item in args.stacks:
        name, _, path = item.rpartition("=")
        stacks[name or path] = read_stack(path)[0]
    comparison_png(args.out, stacks, args.depths)


if __name__ == "__main__":
    main()
