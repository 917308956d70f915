"""Measures of MicroscopyGAN's multi-defect restoration: restored volumes against clean ones, and how close
synthesised defects come to the true ones.

Volumes are ZYX, uint8 (0-255) or float in [0, 1] (:mod:`scripts.evaluation.measures`' fixed domain).

- :func:`restoration_scores`: PSNR over the volume and SSIM as the mean over its XY planes of the 2D SSIM,
  on the fixed [0, 1] domain (ours: a method cannot gain by rescaling its output), and the same after
  scaling each XY plane of both volumes to [0, 1] by its own minimum and maximum (MicroscopyGAN's way,
  to compare with its table: 22.4/0.56 denoising, 17.4/0.38 axial, 14.3/0.22 SR with 10 pairs).
- :func:`baseline_table`: those scores of the input (the defective volume, which for axial and SR is the
  linear interpolation back to the full grid) and of cubic interpolation, on a defect dataset's test pairs.
- :func:`defect_distances`: the Hellinger distances of the intensity and gradient-magnitude histograms of
  synthesised defective volumes and of the clean volumes to those of the true defective volumes: the
  synthesis helps where its distances are smaller than the clean volumes'.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scripts.data.io import STACK_SUFFIXES, list_files, read_stack
from scripts.evaluation.measures import gradient_histogram, hellinger, psnr, ssim
from scripts.simulate.defects import TASKS, add_defect, check_task

__all__ = ["baseline_table", "defect_distances", "gradient_hellinger", "minmax_planes", "restoration_scores"]


def _unit(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    return volume / 255.0 if volume.dtype == np.uint8 else volume.astype(np.float64)


def minmax_planes(volume: np.ndarray) -> np.ndarray:
    """Each XY plane scaled to [0, 1] by its own minimum and maximum (a constant plane becomes 0)."""
    v = np.asarray(volume, np.float64)
    low = v.min(axis=(1, 2), keepdims=True)
    span = v.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (v - low) / np.where(span > 0, span, 1.0), 0.0)


def _scores(output: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    return psnr(output, clean), float(np.mean([ssim(o, c) for o, c in zip(output, clean, strict=True)]))


def restoration_scores(output: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """``psnr``, ``ssim`` on the fixed [0, 1] domain and ``psnr_minmax``, ``ssim_minmax`` after per-plane
    min-max scaling, of a restored (or defective) ZYX volume against the clean one."""
    output, clean = np.asarray(output), np.asarray(clean)
    if output.ndim != 3 or output.shape != clean.shape:
        raise ValueError(f"expected two ZYX volumes of one shape, got {output.shape} and {clean.shape}")
    fixed = _scores(_unit(output), _unit(clean))
    scaled = _scores(minmax_planes(output), minmax_planes(clean))
    return {"psnr": fixed[0], "ssim": fixed[1], "psnr_minmax": scaled[0], "ssim_minmax": scaled[1]}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def baseline_table(dataset_dir: str | os.PathLike, tasks: Sequence[str] = TASKS, split: str = "test") -> list[dict]:
    """Mean :func:`restoration_scores` over a defect dataset's ``split`` pairs, per task: of the input
    ("input"; for axial and SR that is linear interpolation) and, for axial and SR, of the same defect
    interpolated back with cubic splines ("cubic", from the clean volume with the default defect settings).
    Rows: ``{"task", "method", "n", "psnr", "ssim", "psnr_minmax", "ssim_minmax"}``."""
    rows = []
    for task in (check_task(t) for t in tasks):
        folder = Path(dataset_dir) / task / split
        pairs = [(f, folder / "defective" / f.name) for f in list_files(folder / "clean", STACK_SUFFIXES)]
        results: dict[str, list] = {"input": [], "cubic": []}
        for clean_file, defective_file in pairs:
            clean = read_stack(clean_file)[0]
            results["input"].append(restoration_scores(read_stack(defective_file)[0], clean))
            if task != "denoising":
                cubic = add_defect(clean, task, np.random.default_rng(0), order=3)
                results["cubic"].append(restoration_scores(cubic, clean))
        for method, scores in results.items():
            if scores:
                rows.append({"task": task, "method": method, "n": len(scores), **_mean(scores)})
    return rows


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
