"""Seconds per training iteration of ablation variants, measured in one process, in alternation.

    python tools/benchmark_training.py --data ../shared/data/zse-brain --variants paper knobs residual optical \
        --iterations 10 --rounds 3 --threads 1

Each variant's trainer is built from train.yaml with the variant's overrides (``tools/ablation.py``'s
``VARIANTS``), on the same data and crops as the ablation; after one warm-up iteration each, the variants
run ``--iterations`` iterations in turn, ``--rounds`` times, so that a busy machine slows them alike. The
median of the rounds is reported, and each variant's ratio to the first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bundle"))
sys.path.insert(0, str(ROOT / "tools"))

from ablation import VARIANTS  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402


def build(name: str, data: Path, crop_size: int, out: Path):
    """The variant's trainer (train.yaml + overrides), with no handlers: iterations only."""
    parser = ConfigParser()
    parser.read_config(ROOT / "bundle" / "configs" / "train.yaml")
    parser.update({"dataset_dir": str(data), "output_dir": str(out / name), "crop_size": crop_size})
    parser.update({"sw_roi_size": [-1, crop_size, crop_size], "train#handlers": [], "device": "cpu"})
    parser.update({"train#dataset#progress": False})
    parser.update(dict(VARIANTS[name][1]))
    parser["train#trainer#train_handlers"] = []
    return parser.get_parsed_content("train#trainer")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=["paper", "optical"], choices=list(VARIANTS))
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crop_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/benchmark_training"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    trainers = {name: build(name, args.data.resolve(), args.crop_size, args.out) for name in args.variants}
    batches = {}
    for name, trainer in trainers.items():
        loader = iter(trainer.data_loader)
        batches[name] = [next(loader) for _ in range(args.iterations)]
        trainer._iteration(trainer, batches[name][0])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            for batch in batches[name]:
                trainer._iteration(trainer, batch)
            times[name].append((time.perf_counter() - start) / args.iterations)
    first = statistics.median(times[args.variants[0]])
    print(
        f"| variant | s/iteration (median of {args.rounds} rounds of {args.iterations}) | ratio to {args.variants[0]} |"
    )
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / first:.2f} |")


if __name__ == "__main__":
    main()
