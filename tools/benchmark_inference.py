"""Inference speed benchmark (issue 5): G_S's forward rate against the machine's matmul peak, and the
in-memory sliding window end to end, measured in one run so that the ratios hold on a noisy machine.

    python tools/benchmark_inference.py [--size 2048] [--depth 29] [--threads N] [--device cpu|cuda] [--repeats 5]
        [--slide_sizes 4096 8192] [--tile_size N]

(a) bare G_S forward on one window (1 x 1 x depth x 128 x 128, the default sliding window): voxels/s,
    FLOP/s (counted by torch.utils.flop_counter) and their share of a float32 matrix-multiply peak
    (4096 x 4096 matmuls) measured in the same process; in float32, uncompiled and compiled
    (scripts.inference.sliding_window.Accelerated), and in bfloat16 autocast on a CPU with bfloat16 support;
(b) in-memory sliding-window enhancement of a size x size x depth uint8 TIFF stack, end to end from file
    to file (read, normalise, sliding window with the defaults of inference.yaml, inverse mapping,
    write; compiling included where compiled), as voxels/s and as a share of (a) in the same setting;
(c) the out-of-core path (scripts.inference.wholeslide.enhance_slide, zarr to OME-Zarr, inference_wholeslide.yaml's
    tile size (or --tile_size), precision and compile setting, local threads) on each of --slide_sizes,
    each in a child process so that its peak memory (max RSS) is its own; as a share of (a) in the same
    setting;
(d) on a GPU (--device cuda): the forward's throughput for float32, float16 and bfloat16, in contiguous
    and channels-last memory, at 1, 4 and 16 windows per forward, against the GPU's matmul peak in the
    same type (8192 x 8192) measured in the same run.
Prints one line per figure and the machine. Default network (bundle/configs/inference.yaml sizes), random
weights (the speed does not depend on them).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))
CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"

from benchmark_evaluation import cpu_name  # noqa: E402  (tools/, this script's folder)
from monai.bundle import ConfigParser  # noqa: E402
from scripts.data.io import read_stack, write_stack  # noqa: E402
from scripts.data.transforms import RobustNormalised  # noqa: E402
from scripts.inference.sliding_window import Accelerated, enhance  # noqa: E402
from scripts.nets.networks import Generator3D  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(device: torch.device, repeats: int, n: int = 4096, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / best_seconds(lambda: a @ b, device, repeats)


def default_inferer(whole_slide: bool = False):
    """The sliding window (its defaults on this machine), tile size (None without ``whole_slide``), precision and
    channels-last setting of inference.yaml, with ``whole_slide`` of inference_wholeslide.yaml laid over it (its own
    tiling: blend by default)."""
    parser = ConfigParser()
    parser.read_config([CONFIGS / "inference.yaml", *([CONFIGS / "inference_wholeslide.yaml"] if whole_slide else [])])
    return (
        parser.get_parsed_content("inferer"),
        parser.get("tile_size"),
        *(parser.get_parsed_content(k) for k in ("precision", "channels_last")),
    )


def setting_name(precision: str, compiled: bool) -> str:
    return f"{precision}{', compiled' if compiled else ''}"


def cpu_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def forward_seconds(network, window: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        return best_seconds(lambda: network(window), window.device, repeats)


def gpu_throughput(network, depth: int, flops_per_window: float, repeats: int) -> None:
    """(d): the forward's voxels/s for each precision, memory format and windows per forward, and its share of
    the GPU's matmul peak in that precision."""
    device = torch.device("cuda")
    peaks = {p: matmul_peak(device, repeats, 8192, getattr(torch, p)) for p in ("float32", "float16", "bfloat16")}
    print("GPU matmul peaks (8192^3): " + ", ".join(f"{p} {v / 1e12:.0f} TFLOP/s" for p, v in peaks.items()))
    best = (0.0, "")
    for precision, channels_last, batch in itertools.product(peaks, (False, True), (1, 4, 16)):
        net = Accelerated(copy.deepcopy(network), precision, channels_last)
        window = torch.randn(batch, 1, depth, 128, 128, device=device)
        seconds = forward_seconds(net, window, repeats)
        rate = window.numel() / seconds
        share = 100 * batch * flops_per_window / seconds / peaks[precision]
        setting = f"{precision}, {'channels-last' if channels_last else 'contiguous'}, {batch} window(s)"
        print(f"(d) G_S forward, {setting}: {rate / 1e6:.0f} M voxels/s = {share:.0f}% of the {precision} peak")
        best = max(best, (rate, setting))
    print(f"(d) best: {best[0] / 1e6:.0f} M voxels/s ({best[1]}); target 300 M voxels/s on an H100")


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} thread(s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=29)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slide_sizes", type=int, nargs="*", default=[4096, 8192])
    parser.add_argument("--tile_size", type=int, default=None, help="(c)'s tiles; default: inference_wholeslide.yaml's")
    parser.add_argument("--slide", type=int, help=argparse.SUPPRESS)  # internal: one (c) run in this process
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.slide:
        return out_of_core(args.slide, args.depth, torch.device(args.device), args.tile_size)
    device = torch.device(args.device)
    torch.manual_seed(0)
    network = Generator3D().to(device).eval()
    print(f"machine: {machine(device)}; torch {torch.__version__}, Python {platform.python_version()}")

    peak = matmul_peak(device, args.repeats)
    print(f"float32 matmul peak (4096^3): {peak / 1e9:.1f} GFLOP/s")

    window = torch.randn(1, 1, args.depth, 128, 128, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(window)
    flops = counter.get_total_flops()
    bare = {}  # (a) in each setting (precision, compiled): voxels/s
    settings = [("float32", False), ("float32", True)]
    if device.type == "cpu" and cpu_bf16():
        settings.append(("bfloat16", False))
    for precision, compiled in settings:
        seconds = forward_seconds(Accelerated(network, precision, compile=compiled), window, args.repeats)
        bare[precision, compiled] = window.numel() / seconds
        print(
            f"(a) G_S forward, 1x1x{args.depth}x128x128, {setting_name(precision, compiled)}: {seconds * 1e3:.0f} ms, "
            f"{bare[precision, compiled] / 1e6:.2f} M voxels/s, {flops / seconds / 1e9:.1f} GFLOP/s "
            f"({flops / 1e9:.1f} GFLOP per window) = {100 * flops / seconds / peak:.0f}% of the float32 matmul peak"
        )
    if device.type == "cuda":
        gpu_throughput(network, args.depth, flops, args.repeats)

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 256, (args.depth, args.size, args.size), dtype=np.uint8)
    meta = {"format": "tiff", "axes": "ZYX", "dtype": "uint8", "spacing": (1.0, 1.0, 1.0), "unit": "um"}
    inferer, _, precision, channels_last = default_inferer()
    inferer.progress = False
    joined = (
        f"halo {inferer.halo} px" if hasattr(inferer, "halo") else f"overlap {inferer.overlap}, mode {inferer.mode}"
    )
    print(
        f"sliding window (inference.yaml): {type(inferer).__name__}, roi {inferer.roi_size}, {joined}, "
        f"{inferer.sw_batch_size} window(s) per forward"
    )
    side = inferer.roi_size[-1] if inferer.roi_size[-1] > 0 else args.size
    if side != 128:  # the default window's own bare rate (float32, uncompiled): larger windows run slower per voxel
        big = torch.randn(1, 1, args.depth, side, side, device=device)
        seconds = forward_seconds(Accelerated(network, "float32"), big, args.repeats)
        print(
            f"(a) G_S forward, 1x1x{args.depth}x{side}x{side} (the default window), float32: {seconds * 1e3:.0f} ms, "
            f"{big.numel() / seconds / 1e6:.2f} M voxels/s"
        )
    for precision, compiled in settings:
        net = Accelerated(copy.deepcopy(network), precision, channels_last, compiled)
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "in.tif", Path(tmp) / "out.tif"
            write_stack(source, stack, meta)
            start = time.perf_counter()
            x, x_meta = read_stack(source)
            y = enhance(net, x, inferer, RobustNormalised("image"), device)
            write_stack(target, y, x_meta)
            seconds = time.perf_counter() - start
        rate_b = stack.size / seconds
        print(
            f"(b) in-memory sliding window, {args.size}x{args.size}x{args.depth} TIFF to TIFF, "
            f"{setting_name(precision, compiled)}: {seconds:.1f} s, {rate_b / 1e6:.2f} M voxels/s = "
            f"{100 * rate_b / bare[precision, compiled]:.0f}% of (a) in the same setting"
        )
    _, _, precision, _ = default_inferer()
    compiled = ConfigParser.load_config_file(CONFIGS / "inference_wholeslide.yaml")["compile"]
    rate_a = bare[precision, compiled]
    for size in args.slide_sizes:
        cmd = [sys.executable, __file__, "--slide", str(size), "--depth", str(args.depth), "--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.tile_size:
            cmd += ["--tile_size", str(args.tile_size)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        seconds, voxels, peak_kb = (float(v) for v in result.stdout.split()[-3:])
        rate_c = voxels / seconds
        print(
            f"(c) out of core, {size}x{size}x{args.depth} zarr to OME-Zarr: {seconds:.1f} s, "
            f"{rate_c / 1e6:.2f} M voxels/s = {100 * rate_c / rate_a:.0f}% of (a) {setting_name(precision, compiled)}, "
            f"peak memory {peak_kb / 2**20:.2f} GiB"
        )


def peak_rss_kb() -> int:
    """This process's peak resident memory in KB, from Linux's VmHWM.

    Not `getrusage(...).ru_maxrss`: Linux carries that figure across exec, so a child started by a process
    that once held 3 GiB reports at least 3 GiB (so docs/benchmarks.md's run 3 read 3.00 GiB at every size).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("peak memory is measured from /proc/self/status (Linux only)")


def out_of_core(size: int, depth: int, device: torch.device, tile_size: int | None = None) -> None:
    """Write a size x size x depth uint8 zarr, enhance it out of core; print seconds, voxels, peak RSS (KB)."""
    import zarr
    from scripts.inference.wholeslide import enhance_slide

    torch.manual_seed(0)
    network = Generator3D().to(device).eval()
    rng = np.random.default_rng(0)
    inferer, default_tile, precision, channels_last = default_inferer(whole_slide=True)
    compiled = ConfigParser.load_config_file(CONFIGS / "inference_wholeslide.yaml")["compile"]
    network = Accelerated(network, precision, channels_last, compiled)
    with tempfile.TemporaryDirectory() as tmp:
        array = zarr.create_array(
            Path(tmp) / "in.zarr", shape=(depth, size, size), chunks=(1, 1024, 1024), dtype="uint8"
        )
        for y in range(0, size, 1024):
            array[:, y : y + 1024, :] = rng.integers(0, 256, (depth, min(1024, size - y), size), dtype=np.uint8)
        start = time.perf_counter()
        source, target = Path(tmp) / "in.zarr", Path(tmp) / "out.ome.zarr"
        enhance_slide(network, source, target, inferer, tile_size=tile_size or default_tile, device=device)
        seconds = time.perf_counter() - start
    print(seconds, depth * size * size, peak_rss_kb())


if __name__ == "__main__":
    main()
