"""G_S's last convolution (to one channel) computed by tap (the default since 0.18.0) against a plain convolution with
the same weights: the convolution alone, and G_S's forward and its forward and backward, interleaved in one process.

    python tools/benchmark_one_output_conv.py --sizes 128 256 --depth 29 --repeats 3

The default G_S with random weights (the last convolution's too, which a residual G_S starts at zero). Prints one
Markdown row per setting (the fastest of ``--repeats``, in seconds) and the largest difference between the two
outputs; docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_focal_transfer import interleaved, window_args  # noqa: E402
from scripts.nets.architecture import default_generator  # noqa: E402


def last_conv(generator: nn.Module) -> nn.Module:
    """The MONAI ``Convolution`` that holds ``generator``'s last convolution."""
    return [m for m in generator.modules() if hasattr(m, "conv") and isinstance(m.conv, nn.Conv3d)][-1]


def with_plain_last_conv(generator: nn.Module) -> nn.Module:
    """A copy of ``generator`` whose last convolution is a plain nn.Conv3d with the same parameters."""
    plain = default_generator()
    plain.load_state_dict(generator.state_dict())
    folded = last_conv(plain).conv
    conv = nn.Conv3d(folded.in_channels, 1, folded.kernel_size, padding=folded.padding, bias=folded.bias is not None)
    conv.load_state_dict(folded.state_dict())
    last_conv(plain).conv = conv
    return plain.train(generator.training)


def main(argv: list[str] | None = None) -> None:
    args = window_args(__doc__.splitlines()[0], argv)
    torch.manual_seed(0)
    folded = default_generator()
    nn.init.normal_(last_conv(folded).conv.weight, std=0.02)
    nets = {"by tap": folded, "plain": with_plain_last_conv(folded)}
    print("| setting | by tap (default) | plain | plain / by tap | largest difference |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        x = torch.rand(1, 1, args.depth, size, size) * 2 - 1
        features = torch.randn(1, last_conv(folded).conv.in_channels, args.depth + 4, size + 4, size + 4)
        settings = {
            f"last convolution alone, {size} px": (lambda net, v: last_conv(net)(features), torch.no_grad, "eval"),
            f"G_S forward, {size} px, float32": (lambda net, v: net(v), torch.no_grad, "eval"),
            f"G_S forward and backward, {size} px, bfloat16": (
                lambda net, v: net(v).float().mean().backward(),
                lambda: torch.autocast("cpu", dtype=torch.bfloat16),
                "train",
            ),
        }
        for name, (run, context, mode) in settings.items():
            for net in nets.values():
                net.train(mode == "train")
            with context():
                outputs = [run(net, x) for net in nets.values()]  # warm-up, and the outputs to compare
                times = interleaved({n: (lambda v, net=net: run(net, v)) for n, net in nets.items()}, x, args.repeats)
            diff = "" if outputs[0] is None else f"{(outputs[0] - outputs[1]).abs().max().item():.1e}"
            print(f"| {name} | {times['by tap']:.3f} | {times['plain']:.3f} | "
                  f"{times['plain'] / times['by tap']:.2f} | {diff} |")  # fmt: skip


if __name__ == "__main__":
    main()
