"""Benchmark of the evaluation: N simulated stacks with every measure and the three non-learned baselines.

    python tools/benchmark_evaluation.py [--stacks 100] [--size 128] [--depth 29] [--workers 2] [--data DIR]

Simulates the stacks (with their truth) into DIR (a temporary folder by default; not timed), then
times ``scripts.evaluation.evaluate.Evaluation`` on them exactly as ``evaluate.yaml`` runs it, without a model:
input, sharpest_slice, edf and richardson_lucy, all measures, the report's files and plots (MLflow
logging left out). Prints one line per timing and the machine it ran on. The target (issue 3):
100 stacks of 128x128x29 in under 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.evaluation import baselines  # noqa: E402
from scripts.evaluation.evaluate import Evaluation, RichardsonLucy, Settings, evaluation_datalist  # noqa: E402
from scripts.simulate.zstacks import simulate_dataset  # noqa: E402


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--depth", type=int, default=29)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", help="folder for the simulated stacks (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data or tmp) / "data"
        if not (data / "stacks").is_dir():
            start = time.perf_counter()
            simulate_dataset(data, n_stacks=args.stacks, n_infocus=0, size=args.size, depth=args.depth, progress=False)
            print(f"simulated {args.stacks} stacks in {time.perf_counter() - start:.1f} s (not part of the benchmark)")
        evaluation = Evaluation(
            evaluation_datalist(data, "all")[: args.stacks],
            str(Path(tmp) / "report"),
            models={},
            baselines={
                "sharpest_slice": baselines.sharpest_slice,
                "edf": baselines.edf,
                "richardson_lucy": RichardsonLucy(),
            },
            settings=Settings(),
            num_workers=args.workers,
        )
        start = time.perf_counter()
        evaluation.run()
        seconds = time.perf_counter() - start
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"evaluated {args.stacks} stacks of {args.size}x{args.size}x{args.depth} (input + 3 baselines, all measures, "
        f"report) with {args.workers} worker(s) in {seconds:.1f} s on {cores} core(s) of {cpu_name()}, "
        f"Python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
