"""Several systems, one model (issue 18): train on every simulated wide-field system but one, test on all of them.

    python tools/systems_study.py --out /tmp/systems                        # each of A, B, C held out in turn
    python tools/systems_study.py --out /tmp/systems --hold_out C --phase table
    python tools/systems_study.py --out /tmp/systems --variants none augmentation   # some of the variants only

For each held-out system and each variant (``--variants``, :data:`VARIANTS`: ``none``, neither switch, the default
training before 0.15.0; ``augmentation``, the wide-field input augmented over the systems' nuisances,
``--augment_input True``, the default since 0.15.0; ``system_norm``, each input normalised by its system's
percentiles, ``--system_normalisation True``, in training and evaluation alike, without the augmentation):
``paired_train.yaml`` trains the GAN and the L1-only generator (``--lambda_adversarial 0 --lambda_ssim 0``) on the
other systems' pairs (``train_systems``), and ``paired_evaluate.yaml`` tests both, with the input and Richardson-Lucy,
on the test split: the held-out pairs of the systems trained on and every pair of the unseen one.
``table.md`` and ``table.json`` under ``--out`` give, per held-out system and variant, the median PSNR and SSIM on
the seen systems' test pairs and on the unseen system's, each method's gain over the input there, and the drop: the
gain on the seen systems minus the gain on the unseen one (what a variant narrows, it makes smaller).

Phases (``--phase``, default all): ``train`` (a finished training is skipped; an interrupted one, started again,
resumes exactly from its checkpoint), ``evaluate`` (skipped where ``metrics.json`` exists), ``table``. ``--data``:
a paired dataset whose file names start with their system (``A_00000.tif``, as the simulator names them; default:
pairs simulated into ``<out>/data``). ``--override`` (one string of ``--key value`` pairs) goes to every training,
``--override_eval`` to every evaluation (tiny networks in tests; a variant such as ``--lambda_ssim 1``: run again
into another ``--out``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from pathlib import Path

from ablation import _args, _run  # tools/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundle" / "configs"
sys.path.insert(0, str(ROOT / "bundle"))

from scripts.evaluation.paired import summarise, system_of  # noqa: E402
from scripts.simulate.fluorescence import ensure_paired_dataset  # noqa: E402

#: the generators trained per held-out system: name -> overrides of paired_train.yaml
KINDS = {"gan": {}, "l1": {"lambda_adversarial": 0, "lambda_ssim": 0}}
#: what might narrow the drop on an unseen system: name -> (overrides of paired_train.yaml, of paired_evaluate.yaml)
VARIANTS = {
    "none": ({"augment_input": False}, {}),
    "augmentation": ({"augment_input": True}, {}),
    "system_norm": ({"augment_input": False, "system_normalisation": True}, {"system_normalisation": True}),
}
#: the methods of the table (paired_evaluate.yaml's names) and the measures
METHODS = ("input", "gan", "l1", "richardson_lucy")
MEASURES = ("psnr", "ssim")


def systems(data: Path) -> list[str]:
    """The systems of the wide-field images in ``data`` (their names' prefixes), sorted."""
    found = {system_of(path) for path in (data / "widefield").iterdir()}
    if None in found or len(found) < 2:
        raise SystemExit(f"error: {data / 'widefield'}: needs files of at least two known systems (A_..., B_...)")
    return sorted(found)


def trained_on(held_out: str, args) -> list[str]:
    return [f"{s}_" for s in args.systems if s != held_out]


def train(held_out: str, variant: str, kind: str, args) -> Path:
    out = args.out / f"without_{held_out}" / variant / kind
    model = out / "paired.pt"
    name = f"without {held_out}, {variant}, {kind}"
    if model.exists():
        print(f"{name}: trained already", flush=True)
        return model
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "dataset_dir": args.data,
        "output_dir": out / "run",
        "model_path": model,
        "train_systems": trained_on(held_out, args),
        "max_epochs": args.epochs,
        "val_interval": args.epochs,  # validate once, at the end
        "log_interval": args.log_interval,
        "seed": args.seed,
        **KINDS[kind],
        **VARIANTS[variant][0],
    }
    command = [sys.executable, "-m", "monai.bundle", "run", "training"]
    command += ["--config_file", str(CONFIGS / "paired_train.yaml"), *_args(settings), *args.override]
    print(f"{name}: training on {', '.join(settings['train_systems'])}", flush=True)
    seconds = _run(command, out / "train.log", args.threads)
    print(f"{name}: trained in {seconds / 60:.1f} min", flush=True)
    return model


def evaluate(held_out: str, variant: str, args) -> Path:
    run = args.out / f"without_{held_out}" / variant
    out = run / "evaluate"
    if (out / "metrics.json").exists():
        return out / "metrics.json"
    settings = {
        "dataset_dir": args.data,
        "output_dir": out,
        "model_path": run / "gan" / "paired.pt",
        "l1_model_path": run / "l1" / "paired.pt",
        "train_systems": trained_on(held_out, args),
        "seed": args.seed,
        **VARIANTS[variant][1],
    }
    command = [sys.executable, "-m", "monai.bundle", "run", "evaluate"]
    command += ["--config_file", str(CONFIGS / "paired_evaluate.yaml"), *_args(settings), *args.override_eval]
    out.mkdir(parents=True, exist_ok=True)
    print(f"without {held_out}, {variant}: evaluating", flush=True)
    _run(command, out / "evaluate.log", args.threads)
    return out / "metrics.json"


def medians(metrics: dict, held_out: str) -> dict[str, dict[str, dict[str, float]]]:
    """{"seen"/"unseen": {method: {measure: median over that group's test pairs}}} from an evaluation's
    per-image rows (``summarise`` over the rows relabelled by group)."""
    rows = [
        {**row, "system": "unseen" if row["system"] == held_out else "seen"}
        for row in metrics["per_image"]
        if row["method"] in METHODS
    ]
    out: dict = {"seen": {}, "unseen": {}}
    for s in summarise(rows):
        if s["view"] in out and s["measure"] in MEASURES:
            out[s["view"]].setdefault(s["method"], {})[s["measure"]] = s["median"]
    return out


def table(args) -> dict:
    """Write ``table.json`` and ``table.md`` from the evaluations; returns the JSON's content."""
    result = {"systems": args.systems, "variants": args.variants, "held_out": {}}
    lines = [
        "Median over test pairs; gain = method - input on the same pairs; drop = gain on the seen systems - gain on",
        "the unseen one (positive: the model helps the unseen system less).",
        "",
        "| held out | variant | method | PSNR seen | PSNR unseen | SSIM seen | SSIM unseen | PSNR gain seen "
        "| PSNR gain unseen | PSNR drop | SSIM drop |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for held_out, variant in itertools.product(args.hold_out, args.variants):
        path = args.out / f"without_{held_out}" / variant / "evaluate" / "metrics.json"
        groups = medians(json.loads(path.read_text()), held_out)
        rows = {}
        for method in METHODS:
            if method not in groups["seen"] or method not in groups["unseen"]:
                continue
            row = {f"{m}_{g}": groups[g][method][m] for g in ("seen", "unseen") for m in MEASURES}
            for m in MEASURES:
                for g in ("seen", "unseen"):
                    row[f"{m}_gain_{g}"] = row[f"{m}_{g}"] - groups[g]["input"][m]
                row[f"{m}_drop"] = row[f"{m}_gain_seen"] - row[f"{m}_gain_unseen"]
            rows[method] = row
            lines.append(
                f"| {held_out} | {variant} | {method} | {row['psnr_seen']:.2f} | {row['psnr_unseen']:.2f} "
                f"| {row['ssim_seen']:.3f} | {row['ssim_unseen']:.3f} | {row['psnr_gain_seen']:+.2f} "
                f"| {row['psnr_gain_unseen']:+.2f} | {row['psnr_drop']:+.2f} | {row['ssim_drop']:+.3f} |"
            )
        entry = result["held_out"].setdefault(held_out, {"trained_on": trained_on(held_out, args), "variants": {}})
        entry["variants"][variant] = {"methods": rows}
    (args.out / "table.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, help="paired dataset (widefield/, confocal/); default: <out>/data")
    parser.add_argument("--hold_out", nargs="+", help="systems held out in turn (default: every system)")
    parser.add_argument("--phase", choices=("all", "train", "evaluate", "table"), default="all")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="what might narrow the drop"
    )
    parser.add_argument("--epochs", type=int, default=200, help="paired_train.yaml's max_epochs")
    parser.add_argument("--log_interval", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="the split's and training's (and the simulation's)")
    parser.add_argument("--n_per_system", type=int, default=40, help="pairs simulated per system (default data)")
    parser.add_argument("--size", type=int, default=128, help="their size in pixels")
    parser.add_argument("--threads", type=int, default=1, help="threads per training or evaluation")
    parser.add_argument("--override", default="", help="more '--key value' pairs for every training, one string")
    parser.add_argument("--override_eval", default="", help="more '--key value' pairs for every evaluation")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data is None:
        args.data = ensure_paired_dataset(
            args.out / "data", n_per_system=args.n_per_system, size=args.size, seed=args.seed, progress=False
        )
    args.data = args.data.resolve()
    args.systems = systems(args.data)
    args.hold_out = args.hold_out or args.systems
    unknown = sorted(set(args.hold_out) - set(args.systems))
    if unknown:
        raise SystemExit(f"error: --hold_out {' '.join(unknown)}: not a system of {args.data} ({args.systems})")
    args.override, args.override_eval = shlex.split(args.override), shlex.split(args.override_eval)
    for held_out, variant in itertools.product(args.hold_out, args.variants):
        if args.phase in ("all", "train"):
            for kind in KINDS:
                train(held_out, variant, kind, args)
        if args.phase in ("all", "evaluate"):
            evaluate(held_out, variant, args)
    if args.phase in ("all", "table"):
        table(args)
        print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
