"""Seconds per training iteration of ablation variants, measured in one process, in alternation.

    python tools/benchmark_training.py --data ../shared/data/zse-brain --variants paper knobs residual optical \
        --iterations 10 --rounds 3 --threads 1

Each variant's trainer is built from train.yaml with the variant's overrides (``tools/ablation.py``'s
``VARIANTS``), on the same data and crops as the ablation; after one warm-up iteration each, the variants
run ``--iterations`` iterations in turn, ``--rounds`` times, so that a busy machine slows them alike. The
median of the rounds is reported, and each variant's ratio to the first.

With ``--passes`` (issue 17, item 3), each variant's iteration is also set against the sum of its passes
measured bare, in the same rounds: every call of G_S, G_B, D_S and D_B that one iteration makes (recorded
by forward pre-hooks: the same inputs, the same gradient flags), run alone as forward and backward, plus the
two optimiser steps. The rest of the iteration (losses, sections, pools, the in-focus batch it loads) is
the difference; the in-focus batch and a stack batch (loaded outside the timed iteration, by MONAI's loop
in training) are timed on their own too::

    OMP_NUM_THREADS=1 python tools/benchmark_training.py --data /tmp/zsegan_data --variants optical \
        --crop_size 64 --iterations 4 --rounds 3 --passes

``--g_s eager compiled channels_last`` runs each variant with G_S as trained, compiled (``torch.compile``) and in
channels-last memory, in the same alternation (issue 17, item 3); ``--amp_dtypes`` each with a mixed precision.
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


def build(name: str, data: Path, crop_size: int, out: Path, amp_dtype: str | None = None, g_s: str = "eager"):
    """The variant's trainer (train.yaml + overrides; ``amp_dtype``: the mixed precision's type, None: the config's),
    with no handlers: iterations only. ``g_s``: how its G_S runs: ``eager``, ``compiled`` (train.yaml's ``compile``:
    ``torch.compile``, forward and backward) or ``channels_last`` (its weights in channels-last-3d memory)."""
    parser = ConfigParser()
    parser.read_config(ROOT / "bundle" / "configs" / "train.yaml")
    parser.update({"dataset_dir": str(data), "output_dir": str(out / name), "crop_size": crop_size})
    if amp_dtype is not None:
        parser.update({"amp_dtype": amp_dtype})
    parser.update({"sw_roi_size": [-1, crop_size, crop_size], "train#handlers": [], "device": "cpu"})
    parser.update({"train#dataset#progress": False})
    parser.update(dict(VARIANTS[name][1]))
    parser["train#trainer#train_handlers"] = []
    parser["compile"] = g_s == "compiled"
    trainer = parser.get_parsed_content("train#trainer")
    if g_s == "channels_last":
        trainer.g_s.to(memory_format=torch.channels_last_3d)
    return trainer


NETWORKS = ("g_s", "g_b", "d_s", "d_b")


def record_calls(trainer, batch) -> list[tuple[str, list[torch.Tensor], bool]]:
    """Every network call of one iteration on ``batch``: (network, its inputs detached, whether its parameters
    took gradients), in order."""
    calls, hooks = [], []
    for name in NETWORKS:

        def pre(module, args, name=name):
            params = any(p.requires_grad for p in module.parameters())
            calls.append((name, [a.detach().clone().requires_grad_(a.requires_grad) for a in args], params))

        hooks.append(getattr(trainer, name).register_forward_pre_hook(pre))
    trainer._iteration(trainer, batch)
    for hook in hooks:
        hook.remove()
    return calls


def bare_passes(trainer, calls) -> dict[str, float]:
    """Seconds of each network's recorded calls run alone (forward, then backward of the sum of the output
    to whatever took gradients in the iteration), and of the two optimiser steps, as {part: seconds}."""
    times = dict.fromkeys([*NETWORKS, "optimiser steps"], 0.0)
    with trainer._autocast():
        for name, args, params in calls:
            network = getattr(trainer, name)
            network.requires_grad_(params)
            inputs = [a.detach().requires_grad_(a.requires_grad) for a in args]
            start = time.perf_counter()
            network(*inputs).float().sum().backward()
            times[name] += time.perf_counter() - start
    for optimizer in (trainer.g_optimizer, trainer.d_optimizer):
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.requires_grad_(True)
                p.grad = torch.zeros_like(p) if p.grad is None else p.grad
        start = time.perf_counter()
        optimizer.step()
        times["optimiser steps"] += time.perf_counter() - start
        optimizer.zero_grad(set_to_none=True)
    return times


def loading_times(trainer, n: int) -> dict[str, float]:
    """Seconds to load a stack batch (the training loader) and an in-focus batch, medians of ``n``."""
    loader = iter(trainer.data_loader)
    stack, infocus = [], []
    for _ in range(n):
        start = time.perf_counter()
        next(loader)
        stack.append(time.perf_counter() - start)
        start = time.perf_counter()
        trainer._next_infocus()
        infocus.append(time.perf_counter() - start)
    return {"stack batch": statistics.median(stack), "in-focus batch": statistics.median(infocus)}


def report_passes(name: str, iteration: float, parts: list[dict[str, float]], calls, loading) -> None:
    """One variant's iteration against the sum of its bare passes, in a markdown table."""
    median = {part: statistics.median(p[part] for p in parts) for part in parts[0]}
    total = sum(median.values())
    counts = {n: sum(c[0] == n for c in calls) for n in NETWORKS}
    print(f"\n{name}: iteration {iteration:.3f} s, sum of bare passes {total:.3f} s, ratio {iteration / total:.2f}")
    print("| part | calls | s/iteration | share of the iteration |")
    print("|---|---|---|---|")
    for part, seconds in median.items():
        print(f"| {part} | {counts.get(part, 2)} | {seconds:.3f} | {seconds / iteration:.0%} |")
    rest = iteration - total
    print(f"| rest (losses, sections, pools, in-focus loading) | | {rest:.3f} | {rest / iteration:.0%} |")
    for part, seconds in loading.items():
        print(f"| {part} (loaded alone) | 1 | {seconds:.3f} | {seconds / iteration:.0%} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=["paper", "optical"], choices=list(VARIANTS))
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crop_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/benchmark_training"))
    parser.add_argument("--passes", action="store_true", help="also the sum of each variant's passes, run bare")
    parser.add_argument(
        "--amp_dtypes", nargs="+", default=[None], help="each variant with each mixed-precision type (amp_dtype)"
    )
    parser.add_argument(
        "--g_s", nargs="+", default=["eager"], choices=["eager", "compiled", "channels_last"],
        help="each variant with G_S run each of these ways (compiling happens in the warm-up iteration)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    trainers = {
        " ".join([name] + ([] if dtype is None else [dtype]) + ([] if mode == "eager" else [mode])): build(
            name, args.data.resolve(), args.crop_size, args.out, dtype, mode
        )
        for name in args.variants
        for dtype in args.amp_dtypes
        for mode in args.g_s
    }
    batches = {}
    for name, trainer in trainers.items():
        loader = iter(trainer.data_loader)
        batches[name] = [next(loader) for _ in range(args.iterations)]
        start = time.perf_counter()
        trainer._iteration(trainer, batches[name][0])  # warm-up
        print(f"warm-up iteration of {name}: {time.perf_counter() - start:.1f} s", flush=True)
    calls = {name: record_calls(trainer, batches[name][0]) for name, trainer in trainers.items()} if args.passes else {}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    parts: dict[str, list[dict[str, float]]] = {name: [] for name in trainers}
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            for batch in batches[name]:
                trainer._iteration(trainer, batch)
            times[name].append((time.perf_counter() - start) / args.iterations)
            for _ in range(args.iterations if args.passes else 0):
                parts[name].append(bare_passes(trainer, calls[name]))
    reference = next(iter(trainers))
    first = statistics.median(times[reference])
    print(f"| variant | s/iteration (median of {args.rounds} rounds of {args.iterations}) | ratio to {reference} |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / first:.2f} |")
    for name, trainer in trainers.items():
        if args.passes:
            loading = loading_times(trainer, args.iterations)
            report_passes(name, statistics.median(times[name]), parts[name], calls[name], loading)


if __name__ == "__main__":
    main()
