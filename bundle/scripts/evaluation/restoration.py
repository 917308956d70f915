"""Measures of MicroscopyGAN's multi-defect restoration: restored volumes against clean ones, and how close
synthesised defects come to the true ones.

Volumes are ZYX, uint8 (0-255) or float in [0, 1] (:mod:`scripts.evaluation.measures`' fixed domain).

- :func:`restoration_scores`: PSNR over the volume and SSIM as the mean over its XY planes of the 2D SSIM,
  on the fixed [0, 1] domain (ours: a method cannot gain by rescaling its output), and the same after
  scaling each XY plane of both volumes to [0, 1] by its own minimum and maximum (MicroscopyGAN's way,
  to compare with its table: 22.4/0.56 denoising, 17.4/0.38 axial, 14.3/0.22 SR with 10 pairs).
- :func:`evaluate_task`: those scores, per test volume, of the input (the defective volume, which for axial
  and SR is the linear interpolation back to the full grid), of cubic interpolation (axial and SR) and of
  any restorers given; :func:`baseline_table` their means for the input and cubic interpolation alone;
  :class:`RestorationEvaluation` (``configs/restore_evaluate.yaml``) runs trained restorers through the
  sliding window and writes the report: per-volume and mean scores, orthogonal views, one MLflow run.
- :func:`defect_distances`: the Hellinger distances of the intensity and gradient-magnitude histograms of
  synthesised defective volumes and of the clean volumes to those of the true defective volumes: the
  synthesis helps where its distances are smaller than the clean volumes'.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from scripts.data.io import STACK_SUFFIXES, list_files, read_stack
from scripts.data.transforms import RobustNormalised
from scripts.evaluation.measures import gradient_histogram, hellinger, psnr, ssim
from scripts.evaluation.report import log_to_mlflow, write_csv, write_json
from scripts.evaluation.views import comparison_png
from scripts.inference.sliding_window import enhance
from scripts.simulate.defects import TASKS, add_defect, check_task

__all__ = [
    "RestorationEvaluation",
    "baseline_table",
    "defect_distances",
    "evaluate_task",
    "gradient_hellinger",
    "minmax_planes",
    "restoration_scores",
    "ssim_planes",
]

logger = logging.getLogger("zsegan")
MEASURES = ("psnr", "ssim", "psnr_minmax", "ssim_minmax")


def _unit(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    return volume / 255.0 if volume.dtype == np.uint8 else volume.astype(np.float64)


def minmax_planes(volume: np.ndarray) -> np.ndarray:
    """Each XY plane scaled to [0, 1] by its own minimum and maximum (a constant plane becomes 0)."""
    v = np.asarray(volume, np.float64)
    low = v.min(axis=(1, 2), keepdims=True)
    span = v.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (v - low) / np.where(span > 0, span, 1.0), 0.0)


def ssim_planes(output: np.ndarray, clean: np.ndarray) -> float:
    """SSIM of two ZYX volumes in [0, 1] as the mean over their XY planes (the restorers' SSIM, MicroscopyGAN's
    2D one; also the validation's ``val_ssim`` during stage 2: ``scripts.ops.metrics.PlaneSSIM``)."""
    return float(np.mean([ssim(o, c) for o, c in zip(output, clean, strict=True)]))


def _scores(output: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    return psnr(output, clean), ssim_planes(output, clean)


def restoration_scores(output: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """``psnr``, ``ssim`` on the fixed [0, 1] domain and ``psnr_minmax``, ``ssim_minmax`` after per-plane
    min-max scaling, of a restored (or defective) ZYX volume against the clean one."""
    output, clean = np.asarray(output), np.asarray(clean)
    if output.ndim != 3 or output.shape != clean.shape:
        raise ValueError(f"expected two ZYX volumes of one shape, got {output.shape} and {clean.shape}")
    fixed = _scores(_unit(output), _unit(clean))
    scaled = _scores(minmax_planes(output), minmax_planes(clean))
    return {"psnr": fixed[0], "ssim": fixed[1], "psnr_minmax": scaled[0], "ssim_minmax": scaled[1]}


def _unit_range(volume: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """``volume`` on the fixed [0, 1] domain: ``value_range`` (lo, hi) mapped to 0, 1 and clipped."""
    lo, hi = value_range
    return np.clip((np.asarray(volume, np.float64) - lo) / (hi - lo), 0.0, 1.0)


def evaluate_task(
    dataset_dir: str | os.PathLike,
    task: str,
    restorers: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    split: str = "test",
    value_range: tuple[float, float] = (0.0, 255.0),
    view: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> list[dict]:
    """:func:`restoration_scores` of every method on each ``split`` pair of ``task`` in a defect dataset
    (``<dataset_dir>/<task>/<split>/{clean,defective}/``): "input" (the defective volume; for axial and SR
    that is linear interpolation), "cubic" (axial and SR: the same defect interpolated back with cubic splines,
    from the clean volume with the default defect settings) and each of ``restorers`` (name -> a function of
    the defective ZYX volume that returns the restored one in the same units). ``value_range``: the units'
    (lo, hi), mapped to [0, 1] and clipped (default: uint8's 0-255). ``view``, if given, is called once, with the first
    pair's volumes (every method's and "clean", on [0, 1]). Rows: ``{"task", "volume", "method", "psnr",
    "ssim", "psnr_minmax", "ssim_minmax"}``."""
    check_task(task)
    folder = Path(dataset_dir) / task / split
    rows = []
    for i, clean_file in enumerate(list_files(folder / "clean", STACK_SUFFIXES)):
        clean = read_stack(clean_file)[0]
        defective = read_stack(folder / "defective" / clean_file.name)[0]
        volumes = {"input": defective}
        if task != "denoising":
            volumes["cubic"] = add_defect(clean, task, np.random.default_rng(0), order=3)
        for name, restore in (restorers or {}).items():
            volumes[name] = restore(defective)
        unit = {name: _unit_range(v, value_range) for name, v in {**volumes, "clean": clean}.items()}
        for method, volume in unit.items():
            if method != "clean":
                scores = restoration_scores(volume, unit["clean"])
                rows.append({"task": task, "volume": clean_file.name, "method": method, **scores})
        if view is not None and i == 0:
            view(unit)
    return rows


def middle_depths(depth: int) -> list[int]:
    """The xy sections the views show: around the middle, where a thin section's tissue is (for the axial
    task's default factor 4 on 29 planes: 12, a kept plane, then 14 and 15, interpolated ones)."""
    middle = depth // 2
    return sorted({max(0, middle - 2), middle, min(depth - 1, middle + 1)})


def _means(rows: Sequence[Mapping]) -> list[dict]:
    """The mean of each measure per task and method, with the number of volumes ``n``."""
    out = []
    for task, method in dict.fromkeys((r["task"], r["method"]) for r in rows):
        group = [r for r in rows if (r["task"], r["method"]) == (task, method)]
        out.append(
            {
                "task": task,
                "method": method,
                "n": len(group),
                **{m: float(np.mean([r[m] for r in group])) for m in MEASURES},
            }
        )
    return out


def baseline_table(dataset_dir: str | os.PathLike, tasks: Sequence[str] = TASKS, split: str = "test") -> list[dict]:
    """Mean :func:`restoration_scores` over a defect dataset's ``split`` pairs, per task, of the input and of
    cubic interpolation (:func:`evaluate_task` without restorers). Rows: ``{"task", "method", "n", "psnr",
    "ssim", "psnr_minmax", "ssim_minmax"}``."""
    return [row for task in tasks for row in _means(evaluate_task(dataset_dir, task, split=split))]


class RestorationEvaluation:
    """Trained restorers and the baselines on a task's held-out pairs (:func:`evaluate_task`), with a report.

    Args:
        dataset_dir: the defect dataset (``<task>/<split>/{clean,defective}/``).
        task: the defect task.
        networks: name -> restorer (weights loaded, eval mode), each run by ``inferer`` on the volume
            normalised by ``normalise`` and mapped back to the volume's units.
        inferer: the sliding window.
        normalise: the training's intensity mapping (``RobustNormalised`` with ``intensity_range``, key ``image``);
            its range is also the fixed domain of the scores.
        output_dir: where ``metrics.csv`` (per volume and method), ``summary.csv`` and ``metrics.json`` (means),
            ``views/<task>.png`` (orthogonal views of the first test volume, every method beside the clean one,
            on the fixed domain, xy sections at :func:`middle_depths`) go.
        split: the pairs' folder, "test".
        tracking_uri, experiment_name: the MLflow store and experiment (None: not logged).
        device: where the restorers run.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        task: str,
        networks: Mapping[str, torch.nn.Module],
        inferer,
        normalise: RobustNormalised,
        output_dir: str | os.PathLike,
        split: str = "test",
        tracking_uri: str | None = None,
        experiment_name: str = "zsegan_restore",
        device: str | torch.device = "cpu",
    ):
        if normalise.intensity_range is None:
            raise ValueError("the restorers' normalise must map a fixed intensity_range")
        self.dataset_dir, self.task, self.networks, self.inferer = dataset_dir, check_task(task), networks, inferer
        self.normalise, self.output_dir, self.split = normalise, Path(output_dir), split
        self.tracking_uri, self.experiment_name, self.device = tracking_uri, experiment_name, device

    def _restorer(self, network: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
        return lambda volume: enhance(network, volume.astype(np.float32), self.inferer, self.normalise, self.device)

    def run(self) -> dict:
        restorers = {name: self._restorer(net) for name, net in self.networks.items()}
        view_path = self.output_dir / "views" / f"{self.task}.png"
        rows = evaluate_task(
            self.dataset_dir,
            self.task,
            restorers,
            self.split,
            tuple(self.normalise.intensity_range),
            lambda volumes: comparison_png(view_path, volumes, middle_depths(len(volumes["clean"])), (0.0, 1.0)),
        )
        summary = _means(rows)
        files = [
            write_csv(self.output_dir / "metrics.csv", rows, ["task", "volume", "method", *MEASURES]),
            write_csv(self.output_dir / "summary.csv", summary, ["task", "method", "n", *MEASURES]),
            write_json(self.output_dir / "metrics.json", {"per_volume": rows, "summary": summary}),
            view_path,
        ]
        lines = [f"{'method':<20}" + "".join(f"{m:>13}" for m in MEASURES)]
        lines += [f"{s['method']:<20}" + "".join(f"{s[m]:>13.4f}" for m in MEASURES) for s in summary]
        logger.info(f"restoration of {self.task}, mean over {summary[0]['n']} test volumes:\n" + "\n".join(lines))
        if self.tracking_uri:
            aggregates = [
                {"method": s["method"], "view": self.task, "index": "all", "measure": m, "mean": s[m]}
                for s in summary
                for m in MEASURES
            ]
            log_to_mlflow(
                self.tracking_uri, self.experiment_name, f"restore_evaluate_{self.task}", {}, aggregates, files
            )
        return {"rows": rows, "summary": summary, "files": [str(f) for f in files]}


def _gradient_distribution(volumes: Sequence[np.ndarray]) -> np.ndarray:
    """Normalised histogram of the gradient magnitudes of every XY plane of ``volumes`` (``GRADIENT_EDGES``)."""
    counts = sum(gradient_histogram(plane) for volume in volumes for plane in _unit(volume))
    return counts / counts.sum()


def gradient_hellinger(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Hellinger distance between the gradient-magnitude histograms (``measures.GRADIENT_EDGES``, gradients
    within each XY plane) of the volumes ``a`` and of the volumes ``b`` (ZYX, uint8 or [0, 1])."""
    p, q = _gradient_distribution(a), _gradient_distribution(b)
    return float(np.sqrt(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum()))  # as measures.hellinger


def defect_distances(
    synthesised: Sequence[np.ndarray], true_defective: Sequence[np.ndarray], clean: Sequence[np.ndarray]
) -> dict[str, float]:
    """How close synthesised defective volumes come to true ones, against the clean volumes as a reference:
    the Hellinger distances of the pooled intensity histograms (64 bins on [0, 1], ``measures.hellinger``)
    and gradient-magnitude histograms (:func:`gradient_hellinger`) of ``synthesised`` and of ``clean`` to
    those of ``true_defective`` (lists of ZYX volumes, not necessarily of the same specimens). Keys:
    ``intensity_synthesised``, ``intensity_clean``, ``gradient_synthesised``, ``gradient_clean``; smaller
    is closer."""
    if not (synthesised and true_defective and clean):
        raise ValueError("defect_distances needs at least one volume in each list")

    def intensities(volumes: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([_unit(v).ravel() for v in volumes])

    out = {}
    for name, volumes in (("synthesised", synthesised), ("clean", clean)):
        out[f"intensity_{name}"] = hellinger(intensities(volumes), intensities(true_defective))
        out[f"gradient_{name}"] = gradient_hellinger(volumes, true_defective)
    return out
