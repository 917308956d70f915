"""The evaluation report: CSV and JSON tables, plots in the style of the paper's Figs 5–7, MLflow.

Input is ``scripts.evaluation.evaluate``'s aggregates (one dict per method × view × index × measure with
``mean``, ``std``, ``n``), its gradient histograms and the stacks kept for pictures. Every file is
written beside and renamed into place, so a report is either complete or absent.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scripts.data.atomic import atomic, write_text_atomic
from scripts.evaluation.measures import radial_frequencies
from scripts.evaluation.views import comparison_png
from scripts.zsegan.focus import sharpest_index

INPUT = "input"  # the method name of the unprocessed input in every table and picture

LABELS = {
    "ssim_input": "SSIM(x∥k, y∥k)",
    "ssim_focus": "SSIM(x∥focus, y∥k)",
    "fm": "FM (share of |F| > max|F| / threshold)",
    "piqe": "PIQE (lower is better)",
    "gradient": "mean absolute gradient (per px, [0,1] units)",
    "psnr_truth": "PSNR against truth (dB)",
    "ssim_truth": "SSIM against truth",
}


def write_csv(path, rows: Sequence[Mapping], columns: Sequence[str]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(Path(path), buffer.getvalue())


def write_histograms_csv(path, histograms: Mapping[str, Mapping[str, np.ndarray]], edges: np.ndarray) -> Path:
    """One row per gradient bin: its edges, then each method's share of pixels in xy and in vertical sections."""
    columns = ["bin_lower", "bin_upper"] + [f"{m}_{v}" for m, h in histograms.items() for v in h]
    rows = []
    for i in range(len(edges) - 1):
        row = {"bin_lower": float(edges[i]), "bin_upper": float(edges[i + 1])}
        for m, h in histograms.items():
            for v, counts in h.items():
                row[f"{m}_{v}"] = counts[i] / max(int(counts.sum()), 1)
        rows.append(row)
    return write_csv(path, rows, columns)


def _finite(value):
    """JSON has no NaN or infinity: write them as null (and say so in the docs)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def write_json(path, content: Mapping) -> Path:
    return write_text_atomic(Path(path), json.dumps(_finite(dict(content)), indent=1))


# ----------------------------------------------------------------------------- plots


def _series(aggregates, method: str, view: str, measure: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points = sorted(
        (a["index"], a["mean"], a["std"])
        for a in aggregates
        if a["method"] == method and a["view"] == view and a["measure"] == measure and a["index"] != "all"
    )
    if not points:
        return np.empty(0), np.empty(0), np.empty(0)
    k, mean, std = (np.array(v, dtype=float) for v in zip(*points, strict=False))
    return k, mean, std


def _overall(aggregates, method: str, view: str, measure: str) -> float | None:
    for a in aggregates:
        if (a["method"], a["view"], a["index"], a["measure"]) == (method, view, "all", measure):
            return a["mean"]
    return None


def _methods(aggregates) -> list[str]:
    return list(dict.fromkeys(a["method"] for a in aggregates))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def per_slice_plot(path, aggregates, measures: Sequence[str], vertical: bool = False) -> Path:
    """One panel per measure: its per-slice mean (± std over stacks) for each method, one line each;
    with ``vertical`` the mean over vertical sections (xz, yz) is drawn as a dashed line of the same colour."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(measures), figsize=(5.5 * len(measures) + 2.5, 3.8), dpi=100, squeeze=False)
    for ax, measure in zip(axes[0], measures, strict=False):
        for i, method in enumerate(_methods(aggregates)):
            k, mean, std = _series(aggregates, method, "xy", measure)
            if not len(k):
                continue
            colour = f"C{i}"
            ax.plot(k, mean, "-o", ms=3, color=colour, label=method)
            ax.fill_between(k, mean - std, mean + std, color=colour, alpha=0.12, lw=0)
            level = _overall(aggregates, method, "vertical", measure) if vertical else None
            if level is not None:
                ax.axhline(level, color=colour, ls="--", lw=1, label=f"{method}, xz/yz sections")
        ax.set(xlabel="slice k (0-based)", ylabel=LABELS.get(measure, measure), title=LABELS.get(measure, measure))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: never hides data
    fig.tight_layout()
    result = _save(fig, Path(path))
    plt.close(fig)
    return result


def spectrum_plot(path, ratios: Mapping[str, Mapping[str, np.ndarray]]) -> Path:
    """Power spectra against a reference: one panel per group ({group: {method: power ratio per radial frequency
    bin over 0 .. 0.5 cycles per pixel}}), log2 of the ratio per bin, one line per method; 0 is the reference."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(ratios), figsize=(4.5 * len(ratios) + 2.5, 3.6), dpi=100, squeeze=False)
    for ax, (group, methods) in zip(axes[0], ratios.items(), strict=False):
        for i, (method, ratio) in enumerate(methods.items()):
            centres = radial_frequencies(len(ratio))
            ax.plot(centres[1:], np.log2(ratio[1:]), "-o", ms=3, color=f"C{i}", label=method)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set(xlabel="frequency (cycles per pixel)", ylabel="log2 power / reference's (median)", title=group)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    result = _save(fig, Path(path))
    plt.close(fig)
    return result


def histogram_plot(path, histograms: Mapping[str, Mapping[str, np.ndarray]], edges: np.ndarray) -> Path:
    """Gradient-magnitude histograms (Fig. 6): share of pixels per bin, xy slices and vertical sections."""
    plt = _pyplot()
    centres = (edges[:-1] + edges[1:]) / 2
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), dpi=100, sharey=True)
    for ax, view, title in zip(axes, ("xy", "vertical"), ("xy slices", "vertical sections (xz, yz)"), strict=False):
        for i, (method, h) in enumerate(histograms.items()):
            counts = h[view]
            ax.plot(centres, counts / max(int(counts.sum()), 1), color=f"C{i}", label=method)
        ax.set(xlabel="gradient magnitude (per px, [0,1] intensity units)", ylabel="share of pixels", title=title)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    result = _save(fig, Path(path))
    plt.close(fig)
    return result


def plots(out, aggregates, histograms, edges, views: Mapping[str, Mapping[str, np.ndarray]]) -> list[Path]:
    """All the report's pictures: per-slice SSIM, FM and PIQE (with vertical sections), gradient
    histograms, truth scores when there is a truth, and orthogonal views of the kept stacks."""
    out = Path(out)
    files = [
        per_slice_plot(out / "ssim_per_slice.png", aggregates, ["ssim_input", "ssim_focus"]),
        per_slice_plot(out / "sharpness_per_slice.png", aggregates, ["gradient", "fm"], vertical=True),
        per_slice_plot(out / "piqe_per_slice.png", aggregates, ["piqe"], vertical=True),
        histogram_plot(out / "gradient_histograms.png", histograms, edges),
    ]
    if any(a["measure"] == "psnr_truth" for a in aggregates):
        files.append(per_slice_plot(out / "truth_per_slice.png", aggregates, ["psnr_truth", "ssim_truth"]))
    for name, stacks in views.items():
        x = stacks[INPUT]
        depths = sorted({0, sharpest_index(x), len(x) - 1})
        path = out / "views" / f"{Path(name).stem}.png"
        comparison_png(path, dict(stacks), depths)
        files.append(path)
    return files


# ----------------------------------------------------------------------------- MLflow


def log_to_mlflow(tracking_uri: str, experiment: str, run_name: str | None, params: Mapping, aggregates, files) -> str:
    """One MLflow run: the settings as params, every aggregate as a metric (``<method>.<view>.<measure>``,
    per-slice ones as steps of ``<method>.xy.<measure>.per_slice``), and the report's files."""
    import mlflow
    from mlflow.entities import Metric, Param

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri  # as MONAI's handlers and training do
    artifacts = None  # a server's own artifact store
    if tracking_uri.startswith("sqlite:///"):  # beside the store, not in whatever folder the command ran from
        store = Path(tracking_uri[len("sqlite:///") :]).absolute().parent
        store.mkdir(parents=True, exist_ok=True)
        artifacts = (store / "mlruns").as_uri()
    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, artifacts)
    run = client.create_run(experiment_id, run_name=run_name)
    run_id = run.info.run_id
    try:
        now = int(1000 * time.time())
        metrics = []
        for a in aggregates:
            if not (isinstance(a["mean"], float) and math.isfinite(a["mean"])):
                continue
            if a["index"] == "all":
                metrics.append(Metric(f"{a['method']}.{a['view']}.{a['measure']}", a["mean"], now, 0))
            elif a["view"] == "xy":
                metrics.append(Metric(f"{a['method']}.xy.{a['measure']}.per_slice", a["mean"], now, int(a["index"])))
        param_list = [Param(str(k), str(v)[:500]) for k, v in params.items()]
        for i in range(0, len(param_list), 100):  # MLflow's limits per batch: 100 params, 1000 metrics
            client.log_batch(run_id, params=param_list[i : i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        for f in files:
            f = Path(f)
            client.log_artifact(run_id, str(f), "views" if f.parent.name == "views" else None)
        client.set_terminated(run_id)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    return run_id
