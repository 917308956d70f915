"""The fidelity ablation: train every variant with the same seed and budget, evaluate each the same way.

    python tools/ablation.py --data ../shared/data/zse-brain --out /tmp/ablation --epochs 5 --epoch_length 180
    python tools/ablation.py --data ../shared/data/zse-brain --out /tmp/ablation --phase table

Phases (``--phase``, default all): ``train`` runs ``monai.bundle run training`` once per variant
(``--jobs`` at a time, each with ``--threads`` threads; a finished variant is skipped, an interrupted
one resumes from its checkpoint), ``evaluate`` runs ``monai.bundle run evaluate`` on the held-out
stacks for each variant and once for the reference methods (input, sharpest slice copied, an
unrelated stack: the chance level), and ``table`` writes ``table.md`` and ``table.json`` under
``--out`` from the evaluations' ``metrics.json`` and the training logs (seconds per iteration).
``--eval_data`` evaluates on every stack of another folder (new simulated stacks with ``truth/``).
``--override`` (one string of ``--key value`` pairs) goes to every training, ``--override_eval`` to every
evaluation (e.g. tiny networks in tests).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundle" / "configs"

#: name -> (what it tests, overrides of train.yaml). Each variant adds to the one it names first; all of them
#: state every key they depend on, so that they stay the same when train.yaml's defaults change.
PAPER = {  # every key a variant changes, at the value train.yaml had before this study
    "p": 2.0,
    "d_layers": 4,
    "lambda_identity": 0,
    "lambda_lowpass": 0,
    "g_residual": False,
    "g_upsampling": "transpose",
    "g_b_kind": "generator",
    "sharp_domain": "infocus",
    "lambda_spectrum": 0,
    "cycle_sigma": 0,
    "lambda_adversarial_b": 1,
    "g_focus_guide": False,
    "lambda_correction_tv": 0,
    "lambda_focal_detail": 0,
    "optical_domain": "absorbance",
    "g_norm": "instance",
    "g_focal_skip": False,
    "g_focal_gate": False,
}
VARIANTS: dict[str, tuple[str, dict]] = {
    "paper": ("the paper's losses and networks (train.yaml before this study)", PAPER),
    "knobs": (
        "p 0.35, 3-layer discriminators, identity loss 10",
        {**PAPER, "p": 0.35, "d_layers": 3, "lambda_identity": 10},
    ),
}
VARIANTS["knobs_optical"] = (
    "knobs + optical G_B (learnable defocus blur)",
    {**VARIANTS["knobs"][1], "g_b_kind": "optical"},
)
VARIANTS["residual"] = (
    "knobs + residual G_S (identity at start, no tanh) + sub-pixel upsampling",
    {**VARIANTS["knobs"][1], "g_residual": True, "g_upsampling": "pixelshuffle"},
)
VARIANTS["optical"] = (
    "residual + optical G_B (learnable defocus blur)",
    {**VARIANTS["residual"][1], "g_b_kind": "optical"},
)
VARIANTS["optical_lowpass"] = (
    "optical + low-pass fidelity loss 10 (sigma 3 px)",
    {**VARIANTS["optical"][1], "lambda_lowpass": 10},
)
VARIANTS["optical_both"] = (
    "optical + sharp domain: in-focus images and the stacks' sharpest slices",
    {**VARIANTS["optical"][1], "sharp_domain": "both"},
)
VARIANTS["optical_stack"] = (
    "optical + sharp domain: each stack's own sharpest slices only (the paper's x*)",
    {**VARIANTS["optical"][1], "sharp_domain": "stack"},
)
VARIANTS["optical_spectrum"] = (
    "optical + spectral loss 1 (every section with the focal plane's power spectrum)",
    {**VARIANTS["optical"][1], "lambda_spectrum": 1.0},
)
VARIANTS["optical_quiet"] = (
    "optical + cycle compared after a 1 px low-pass, no D_B: nothing asks G_S to reproduce x's noise",
    {**VARIANTS["optical"][1], "cycle_sigma": 1.0, "lambda_adversarial_b": 0},
)
VARIANTS["optical_p2"] = (
    "optical with p 2 (vertical sections weighted as in train.yaml before)",
    {**VARIANTS["optical"][1], "p": 2.0},
)
VARIANTS["optical_noid"] = ("optical without the identity loss", {**VARIANTS["optical"][1], "lambda_identity": 0})
VARIANTS["optical_guide"] = (
    "optical + focus-guided G_S (every plane also sees the focal plane and its distance from it)",
    {**VARIANTS["optical"][1], "g_focus_guide": True},
)
VARIANTS["optical_tv"] = (
    "optical + total-variation prior 1 on the correction G_S(x) - x",
    {**VARIANTS["optical"][1], "lambda_correction_tv": 1.0},
)
VARIANTS["optical_focal"] = (
    "optical + focal-detail prior 10 (the detail defocus removes from each plane is the focal plane's)",
    {**VARIANTS["optical"][1], "lambda_focal_detail": 10.0},
)
VARIANTS["optical_focal_p2"] = (
    "optical_focal with p 2 (the prior keeps xy, the vertical term asks for sharp vertical sections)",
    {**VARIANTS["optical_focal"][1], "p": 2.0},
)
VARIANTS["optical_intensity"] = (
    "optical with the blur in intensity (each plane keeps its mean, as the real stacks' do), not absorbance",
    {**VARIANTS["optical"][1], "optical_domain": "intensity"},
)
VARIANTS["optical_focal_guide"] = (
    "optical_focal + focus-guided G_S: the prior asks for the focal plane's detail, the guide hands it over",
    {**VARIANTS["optical_focal"][1], "g_focus_guide": True},
)
VARIANTS["optical_focal30_guide"] = (
    "optical_focal_guide with the focal-detail prior at 30",
    {**VARIANTS["optical_focal_guide"][1], "lambda_focal_detail": 30.0},
)
VARIANTS["optical_focal30_guide_p1"] = (
    "optical_focal30_guide with p 1 (the guide and the prior hold xy; does the vertical term then sharpen z?)",
    {**VARIANTS["optical_focal30_guide"][1], "p": 1.0},
)
VARIANTS["optical_focal30_guide_p2"] = (
    "optical_focal30_guide with p 2 (vertical sections weighted as in the paper)",
    {**VARIANTS["optical_focal30_guide"][1], "p": 2.0},
)
VARIANTS["optical_focal100_guide"] = (
    "optical_focal_guide with the focal-detail prior at 100 (do the outer planes reach the focal plane's sharpness?)",
    {**VARIANTS["optical_focal_guide"][1], "lambda_focal_detail": 100.0},
)
VARIANTS["optical_batchnorm"] = (
    "optical with batch-norm G_S (running statistics at inference: the output does not depend on the window)",
    {**VARIANTS["optical"][1], "g_norm": "batch"},
)
VARIANTS["optical_focal30_guide_batchnorm"] = (
    "optical_focal30_guide with batch-norm G_S (window-independent: exact halo tiling of whole slides)",
    {**VARIANTS["optical_focal30_guide"][1], "g_norm": "batch"},
)
VARIANTS["optical_focal30_guide_bn_transfer"] = (
    "optical_focal30_guide_batchnorm with G_S = focal_transfer(x) + correction: training starts from the non-learned "
    "reference (each plane's low frequencies, the focal plane's high frequencies its defocus removed)",
    {**VARIANTS["optical_focal30_guide_batchnorm"][1], "g_focal_skip": True},
)
VARIANTS["optical_focal30_guide_bn_transfer_p1"] = (
    "optical_focal30_guide_bn_transfer with vertical sections weighted 1 (can the base's anchor let D_S sharpen "
    "vertical sections without invention?)",
    {**VARIANTS["optical_focal30_guide_bn_transfer"][1], "p": 1.0},
)
VARIANTS["optical_focal30_guide_bn_transfer_lowpass"] = (
    "optical_focal30_guide_bn_transfer with the low-pass fidelity term at 10 (does it stop the correction's cost "
    "in low-pass SSIM?)",
    {**VARIANTS["optical_focal30_guide_bn_transfer"][1], "lambda_lowpass": 10},
)
VARIANTS["optical_focal30_guide_bn_transfer_lowpass_gate"] = (
    "optical_focal30_guide_bn_transfer_lowpass with the correction weighed by each plane's defocus, none within the "
    "depth of field (round 7: are the in-focus planes then never worse than the input?)",
    {**VARIANTS["optical_focal30_guide_bn_transfer_lowpass"][1], "g_focal_gate": True},
)
VARIANTS["optical_guide_bn_transfer"] = (
    "optical_focal30_guide_bn_transfer without the focal-detail prior (does the focal transfer make it redundant?)",
    {**VARIANTS["optical_focal30_guide_bn_transfer"][1], "lambda_focal_detail": 0},
)

ARCHITECTURE = ("g_channels", "g_downsamplings", "g_residual_blocks", "g_first_kernel", "g_norm", "g_padding_mode")
ARCHITECTURE += ("g_upsampling", "g_residual", "g_focus_guide", "g_focal_skip", "g_focal_gate")
REFERENCE = "reference"  # the evaluation of the non-learned reference methods


def _args(overrides: dict) -> list[str]:
    out = []
    for key, value in overrides.items():
        out += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]  # True, not true
    return out


def _run(command: list[str], log: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with open(log, "a") as out:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[:6])} ... failed (exit {result.returncode}); see {log}")
    return time.perf_counter() - start


def window_settings(window: int) -> dict:
    """The sliding window of ``window`` px along y and x, with an overlap it can hold: the configs' 64 px (halo
    tiling's 32-px halo) for windows of 128 px and more, else half the window (on G_S's stride lattice)."""
    return {"sw_roi_size": [-1, window, window], "sw_overlap_px": min(64, window // 2 // 8 * 8)}


def train(name: str, args) -> None:
    out = args.out / name
    if (out / "done").exists():
        print(f"{name}: trained already", flush=True)
        return
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "dataset_dir": args.data,
        "output_dir": out,
        "model_path": out / "model.pt",
        "crop_size": args.crop_size,
        **window_settings(args.crop_size),
        "max_epochs": args.epochs,
        "epoch_length": args.epoch_length,
        "val_interval": args.epochs,  # validate once, at the end
        "checkpoint_interval": args.epoch_length,
        "log_interval": args.log_interval,
        "seed": args.seed,
    }
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIGS / "train.yaml")]
    command += _args(settings) + _args(VARIANTS[name][1]) + args.override
    print(f"{name}: training ({VARIANTS[name][0]})", flush=True)
    seconds = _run(command, out / "train.log", args.threads)
    (out / "done").write_text(f"{seconds:.1f}\n")
    print(f"{name}: trained in {seconds / 60:.1f} min", flush=True)


def evaluate(name: str, args, window: int | None = None) -> None:
    """Evaluate a variant (or the reference methods); ``window``: sliding windows of that xy size
    instead of evaluate.yaml's (written to ``eval/<name>-w<window>``)."""
    out = args.out / "eval" / (name if window is None else f"{name}-w{window}")
    if (out / "metrics.json").exists():
        return
    command = [sys.executable, "-m", "monai.bundle", "run", "evaluate", "--config_file", str(CONFIGS / "evaluate.yaml")]
    settings = {"dataset_dir": args.data, "output_dir": out, "seed": args.seed, "n_views": 1, "num_workers": args.jobs}
    if args.eval_data is not None:  # other stacks than training's held-out ones: every stack of that folder
        settings.update({"dataset_dir": args.eval_data, "subset": "all"})
    if name == REFERENCE:
        settings["models"] = "{}"
        chance = "$@scripts.evaluation.baselines.Unrelated(@scripts.data.datalist.datalist(@dataset, 'stacks'))"
        settings["baselines"] = repr(
            {
                "sharpest_slice": "$@scripts.evaluation.baselines.sharpest_slice",
                "focal_detail": "$@scripts.evaluation.baselines.focal_detail",
                "focal_transfer": "$@scripts.evaluation.baselines.focal_transfer",
                "unrelated": chance,
            }
        )
    else:
        _mark_residual(args.out / name / "model.pt", VARIANTS[name][1])
        settings["models"] = repr({out.name: str(args.out / name / "model.pt")})
        settings["baselines"] = "{}"
        settings.update({k: v for k, v in VARIANTS[name][1].items() if k in ARCHITECTURE})
    if window is not None:
        settings.update(window_settings(window))
    out.mkdir(parents=True, exist_ok=True)
    print(f"{out.name}: evaluating", flush=True)
    _run(command + _args(settings) + args.override_eval, out / "evaluate.log", args.threads * args.jobs)


def _mark_residual(model: Path, overrides: dict) -> None:
    """Give a residual G_S's weights the ``skip.gain`` entry that residual generators carry since this
    study (its runs started before it existed); the value is the 1 that their forward pass used."""
    if not overrides.get("g_residual"):
        return
    import torch

    state = torch.load(model, map_location="cpu", weights_only=True)
    if "skip.gain" not in state:
        state["skip.gain"] = torch.ones(())
        torch.save(state, model.with_suffix(".tmp"))
        model.with_suffix(".tmp").replace(model)


def _literal(value: str):
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def seconds_per_iteration(log: Path) -> float | None:
    """From the training log's iteration lines: (t_last - t_first) / (iterations between them)."""
    pattern = re.compile(r"^(\S+ \S+,\d+) - INFO - Epoch: (\d+)/\d+, Iter: (\d+)/(\d+)")
    points = []
    for line in log.read_text().splitlines():
        m = pattern.match(line)
        if m:
            epoch, it, length = int(m.group(2)), int(m.group(3)), int(m.group(4))
            points.append((datetime.fromisoformat(m.group(1).replace(",", ".")), (epoch - 1) * length + it))
    if len(points) < 2:
        return None
    (t0, i0), (t1, i1) = points[0], points[-1]
    return (t1 - t0).total_seconds() / max(i1 - i0, 1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (stacks/, infocus/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--eval_data",
        type=Path,
        help="evaluate on every stack of this folder (e.g. new simulated stacks with truth/) "
        "instead of the held-out stacks of --data",
    )
    parser.add_argument("--phase", choices=("all", "train", "evaluate", "table"), default="all")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--epoch_length", type=int, default=180)
    parser.add_argument("--crop_size", type=int, default=64)
    parser.add_argument("--log_interval", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    parser.add_argument("--threads", type=int, default=1, help="threads per training")
    parser.add_argument(
        "--window_variants",
        nargs="*",
        default=[],
        choices=list(VARIANTS),
        metavar="VARIANT",
        help="variants also evaluated with --window-sized sliding windows (e.g. the training crops)",
    )
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--view_stack", help="the stack drawn for every variant (default: the first held-out)")
    parser.add_argument("--depths", type=int, nargs="+", default=None, help="its xy sections shown")
    parser.add_argument("--override", default="", help="more '--key value' pairs for every training, one string")
    parser.add_argument("--override_eval", default="", help="more '--key value' pairs for every evaluation")
    args = parser.parse_args(argv)
    args.data, args.out = args.data.resolve(), args.out.resolve()
    args.eval_data = args.eval_data.resolve() if args.eval_data else None
    args.override, args.override_eval = shlex.split(args.override), shlex.split(args.override_eval)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase in ("all", "train"):
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda n: train(n, args), args.variants))
    if args.phase in ("all", "evaluate"):
        for name in [REFERENCE] + args.variants:
            evaluate(name, args)
        for name in args.window_variants:
            evaluate(name, args, args.window)
    if args.phase in ("all", "table"):
        from ablation_table import write_table, write_views  # tools/ is on sys.path when run as a script

        windowed = [f"{name}-w{args.window}" for name in args.window_variants]
        write_table(args.out, [REFERENCE] + args.variants + windowed, VARIANTS, seconds_per_iteration)
        reference = json.loads((args.out / "eval" / REFERENCE / "metrics.json").read_text())
        stack = args.view_stack or reference["stacks"][0]
        pairs = dict(zip(args.override_eval[::2], args.override_eval[1::2], strict=True))
        extra = {k.lstrip("-"): _literal(v) for k, v in pairs.items() if k.lstrip("-") in ARCHITECTURE}
        print(write_views(args.out, args.variants, VARIANTS, ARCHITECTURE, stack, args.depths, extra))


if __name__ == "__main__":
    main()
