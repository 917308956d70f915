"""The focal transfer's share of G_S's forward time: the default G_S (``--g_focal_skip true``) against the same G_S
without it, and ``focal_transfer`` alone, on one full-depth window per size, interleaved in one process.

    python tools/benchmark_focal_transfer.py --sizes 128 256 --depth 29 --repeats 3

Prints one Markdown row per window size (the minimum over ``--repeats``); docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.nets.architecture import default_generator  # noqa: E402
from scripts.nets.networks import FOCAL_DEFOCUS, focal_plane, focal_transfer  # noqa: E402


def interleaved(runs: dict, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """{name: the fastest of ``repeats`` calls of ``runs[name](x)``}, the calls taken in turn, round by round."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run(x)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def window_args(description: str, argv: list[str] | None) -> argparse.Namespace:
    """The window benchmarks' options (--sizes, --depth, --repeats, --threads) from ``argv``, torch's threads set."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--depth", type=int, default=29)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def main(argv: list[str] | None = None) -> None:
    args = window_args(__doc__.splitlines()[0], argv)
    nets = {"skip": default_generator().eval(), "plain": default_generator(focal_skip=False, focal_gate=False).eval()}
    print("| window (xy) | G_S with the focal skip | without | focal transfer alone | its share |")
    print("|---|---|---|---|---|")
    defocus = torch.tensor(FOCAL_DEFOCUS)
    with torch.no_grad():
        for size in args.sizes:
            x = torch.randn(1, 1, args.depth, size, size)
            for net in nets.values():
                net(x)  # warm-up
            runs = {**nets, "transfer": lambda v: focal_transfer(v, focal_plane(v), defocus)}
            times = interleaved(runs, x, args.repeats)
            alone = times["transfer"]
            print(f"| {size} × {size} | {times['skip']:.2f} s | {times['plain']:.2f} s | {alone:.3f} s | "
                  f"{100 * alone / times['plain']:.1f}% |")  # fmt: skip


if __name__ == "__main__":
    main()
