"""Evaluation of the paired workflow (wide-field → confocal) on held-out pairs, as arXiv 2403.18026 reports it.

For each test pair, each method's image is compared with the confocal image: MSE, SSIM and PSNR (peak 1),
on [0, 1]: every image (the confocal too) is mapped by its own 0.5 / 99.5 percentiles to 0 and 1 and
clipped, so that a method is judged on contrast, not on the absolute level of its output. Sharpness:
the mean absolute gradient of that [0, 1] image (``gradient``; the confocal's own is listed as the
method ``confocal``, the level to approach), and how far its detail is from the confocal's at every scale
(``spectrum``: :func:`scripts.evaluation.measures.spectral_error`, the mean absolute log2 ratio of the two
radially averaged power spectra; 0: the confocal's). A gradient rises with noise and with over-sharpening as
with detail; the spectral error counts a smoothed output and an over-sharpened one alike. Methods:

- ``input``: the wide-field image itself (with ``input_planes``, the middle plane of the wide-field z-stack: the
  confocal image's plane, the image a single-plane G would be given);
- ``gan``: G of the paired GAN (``paired_train.yaml``);
- ``l1``: the same generator trained with the L1 loss only (``--lambda_adversarial 0 --lambda_ssim 0``), if given;
- ``richardson_lucy``: 2D Richardson-Lucy (``skimage.restoration.richardson_lucy``) with the true in-focus
  wide-field PSF of the simulated system (:data:`scripts.simulate.fluorescence.SYSTEMS`, told by the file
  name's prefix ``A_``, ``B_``, ``C_``); left out for images of an unknown system. A 2D deconvolution
  cannot remove the haze of out-of-focus planes (it needs the 3D stack): it is the classical baseline.

Per method and per group (all pairs, then each system) the median and the mean over images are reported
(the paper's medians), in ``metrics.csv`` (one row per image and method), ``summary.csv`` / ``metrics.json``,
a PNG of test pairs side by side (each system's first in turn: :func:`spread_views`), the methods' power spectra
against the confocal's (``spectra.csv``, ``views/spectra.png``), and one MLflow run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import fft as sfft
from scripts.data.io import read_image, read_stack, write_image
from scripts.data.transforms import RobustNormalised, SystemNormalised, percentile_range
from scripts.evaluation.measures import mean_abs_gradient, power_ratio, psnr, radial_frequencies, spectral_error, ssim
from scripts.evaluation.report import log_to_mlflow, spectrum_plot, write_csv, write_json
from scripts.inference.sliding_window import enhance
from scripts.simulate.fluorescence import CORE_SIGMA_UM, EMISSION_UM, OFFSET_DN, SYSTEMS
from scripts.simulate.optics import frequency_grid, otf
from skimage.restoration import richardson_lucy

__all__ = ["PairedEvaluation", "compare", "spread_views", "system_of", "unit_range", "widefield_psf"]

logger = logging.getLogger("zsegan")
MEASURES = ("mse", "ssim", "psnr", "gradient", "spectrum")


def unit_range(image: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """``image`` with its ``lower`` / ``upper`` percentiles mapped to 0 / 1, clipped to [0, 1] (float64)."""
    lo, hi = percentile_range(np.asarray(image, np.float32), lower, upper)
    return np.clip((np.asarray(image, np.float64) - lo) / (hi - lo), 0.0, 1.0)


def compare(output: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MSE, SSIM, PSNR (peak 1) of two [0, 1] images, the output's mean absolute gradient and its spectral error."""
    return {
        "mse": float(np.mean((output - target) ** 2)),
        "ssim": ssim(output, target),
        "psnr": psnr(output, target),
        "gradient": mean_abs_gradient(output),
        "spectrum": spectral_error(output, target),
    }


def system_of(path: str | Path) -> str | None:
    """The simulated system a file belongs to (its name's prefix before "_"), or None."""
    prefix = Path(path).name.split("_")[0]
    return prefix if prefix in SYSTEMS else None


def widefield_psf(system: str, size: int = 33) -> np.ndarray:
    """The in-focus wide-field PSF (``size`` x ``size``, centred, sum 1) of a simulated system."""
    optics = SYSTEMS[system]
    rho = frequency_grid((size, size), optics["pixel_um"], half=True)
    transfer = otf(rho, 0.0, optics["na"], optics["n_medium"], EMISSION_UM, CORE_SIGMA_UM)
    psf = np.fft.fftshift(sfft.irfft2(transfer, s=(size, size)))
    psf = np.maximum(psf, 0.0)
    return psf / psf.sum()


def deconvolve(image: np.ndarray, system: str, num_iter: int = 20) -> np.ndarray:
    """Richardson-Lucy of a wide-field image (camera offset removed) with its system's true in-focus PSF."""
    signal = np.maximum(np.asarray(image, np.float64) - OFFSET_DN, 0.0)
    scale = max(float(signal.max()), 1e-12)
    return richardson_lucy(signal / scale, widefield_psf(system), num_iter=num_iter, clip=False) * scale


def _side_by_side(path: Path, rows: Sequence[Mapping[str, np.ndarray]]) -> Path:
    """One row per pair of [0, 1] images (input, methods, confocal), 4 px apart, as an 8-bit PNG."""
    gap = 4
    strips = []
    for row in rows:
        images = [(np.clip(v, 0, 1) * 255).round().astype(np.uint8) for v in row.values()]
        strip = np.full((images[0].shape[0], sum(i.shape[1] + gap for i in images) - gap), 255, np.uint8)
        x = 0
        for image in images:
            strip[:, x : x + image.shape[1]] = image
            x += image.shape[1] + gap
        strips.append(strip)
    width = max(s.shape[1] for s in strips)
    canvas = np.full((sum(s.shape[0] + gap for s in strips) - gap, width), 255, np.uint8)
    y = 0
    for strip in strips:
        canvas[y : y + strip.shape[0], : strip.shape[1]] = strip
        y += strip.shape[0] + gap
    write_image(path, canvas)  # atomic, as every file of the report
    return path


def summarise(rows: Sequence[Mapping]) -> list[dict]:
    """Median and mean of each measure per method, over all images and per system."""
    out = []
    groups = ["all"] + sorted({r["system"] for r in rows if r["system"] != "-"})
    for group in groups:
        members = [r for r in rows if group in ("all", r["system"])]
        for method in dict.fromkeys(r["method"] for r in members):
            values = [r for r in members if r["method"] == method]
            for measure in MEASURES:
                v = np.array([r[measure] for r in values if r.get(measure) is not None], dtype=float)
                if len(v):
                    out.append(
                        {"method": method, "view": group, "index": "all", "measure": measure, "n": len(v),
                         "median": float(np.median(v)), "mean": float(np.mean(v))}
                    )  # fmt: skip
    return out


class PairedEvaluation:
    """Runs every method on the test pairs and writes the report (see the module docstring).

    Args:
        datalist: the test pairs, ``[{"image": wide-field file, "label": confocal file}, ...]`` (2D images).
        network: G (in eval mode, weights loaded).
        inferer: the sliding window.
        normalise: the training's intensity mapping (``RobustNormalised`` on key ``image``).
        output_dir: where the report goes.
        baseline: the L1-only generator, or None.
        rl_iterations: Richardson-Lucy iterations (0: no deconvolution baseline).
        n_views: test pairs shown in the picture, spread over the systems (:func:`spread_views`).
        tracking_uri, experiment_name: the MLflow store and experiment (None: not logged).
        device: where the generators run.
        system_ranges: {system: (lo, hi)} when G was trained with ``system_normalisation``: each input is then
            mapped by its system's range (``scripts.data.pairs.system_intensity_ranges``), not by ``normalise``.
        input_planes: > 1 when G (and the baseline) take wide-field z-stacks of that many planes as channels
            (``scripts.data.pairs.paired_datalist``): the inputs are read as z-stacks, the other methods and the
            ``input`` row are of their middle plane.
    """

    def __init__(
        self,
        datalist: Sequence[Mapping[str, str]],
        network: torch.nn.Module,
        inferer,
        normalise: RobustNormalised,
        output_dir: str | Path,
        baseline: torch.nn.Module | None = None,
        rl_iterations: int = 20,
        n_views: int = 4,
        tracking_uri: str | None = None,
        experiment_name: str = "zsegan_paired",
        device: str | torch.device = "cpu",
        system_ranges: Mapping[str, Sequence[float]] | None = None,
        input_planes: int = 1,
    ):
        self.datalist, self.network, self.inferer, self.normalise = list(datalist), network, inferer, normalise
        self.output_dir, self.baseline, self.rl_iterations = Path(output_dir), baseline, rl_iterations
        self.n_views, self.tracking_uri, self.experiment_name, self.device = (
            n_views,
            tracking_uri,
            experiment_name,
            device,
        )
        self.system_ranges = None if system_ranges is None else {k: tuple(v) for k, v in system_ranges.items()}
        self.input_planes = int(input_planes)

    def _normalise(self, path: str) -> RobustNormalised:
        """The input's intensity mapping: the training's per image, or its system's range."""
        if self.system_ranges is None:
            return self.normalise
        return SystemNormalised("image", self.system_ranges).for_file(path)

    def _methods(self, x: np.ndarray, system: str | None, path: str = "<in memory>") -> dict[str, np.ndarray]:
        normalise, planes = self._normalise(path), self.input_planes > 1
        plane = x[x.shape[0] // 2] if planes else x  # what the confocal image shows
        methods = {"input": plane}
        for name, network in (("gan", self.network), ("l1", self.baseline)):
            if network is not None:
                methods[name] = enhance(network, x, self.inferer, normalise, self.device, planes_as_channels=planes)
        if self.rl_iterations > 0 and system is not None:
            methods["richardson_lucy"] = deconvolve(plane, system, self.rl_iterations)
        return methods

    def run(self) -> dict:
        if not self.datalist:
            raise ValueError("no test pairs to evaluate")
        rows, views, spectra = [], {}, []
        for item in self.datalist:
            x = (read_stack if self.input_planes > 1 else read_image)(item["image"])[0]
            y = read_image(item["label"])[0]
            system = system_of(item["image"])
            target = unit_range(y)
            unit = {
                name: unit_range(image)
                for name, image in self._methods(x.astype(np.float32), system, item["image"]).items()
            }
            name = Path(item["image"]).name
            for method, image in unit.items():
                rows.append({"image": name, "system": system or "-", "method": method, **compare(image, target)})
                spectra.append((system or "-", method, power_ratio(image, target)))
            rows.append(
                {"image": name, "system": system or "-", "method": "confocal", "gradient": mean_abs_gradient(target)}
            )
            if len(views.setdefault(system, [])) < self.n_views:
                views[system].append({**unit, "confocal": target})
        summary = summarise(rows)
        columns = ["image", "system", "method", *MEASURES]
        files = [
            write_csv(self.output_dir / "metrics.csv", rows, columns),
            write_csv(self.output_dir / "summary.csv", summary, ["method", "view", "measure", "n", "median", "mean"]),
            write_json(self.output_dir / "metrics.json", {"per_image": rows, "summary": summary}),
            _side_by_side(self.output_dir / "views" / "test_pairs.png", spread_views(views, self.n_views)),
            *write_spectra(self.output_dir, spectra),
        ]
        logger.info("paired evaluation, all test pairs (median / mean):\n" + summary_table(summary))
        if self.tracking_uri:
            log_to_mlflow(self.tracking_uri, self.experiment_name, "paired_evaluate", {}, summary, files)
        return {"rows": rows, "summary": summary, "files": [str(f) for f in files]}


def spread_views(candidates: Mapping[object, Sequence], n: int) -> list:
    """``n`` of the ``candidates`` (a list per system, each in the test pairs' order): each system's first in turn, then
    each one's second, and so on, so that every system is shown (the unseen one too), grouped by system."""
    groups = list(candidates.values())
    # each candidate's turn is its place in its system's list; within a turn the systems go in order
    chosen = set(sorted((k, i) for i, group in enumerate(groups) for k in range(len(group)))[:n])
    return [v for i, group in enumerate(groups) for k, v in enumerate(group) if (k, i) in chosen]


def write_spectra(output_dir: Path, spectra: Sequence[tuple[str, str, np.ndarray]]) -> list[Path]:
    """``spectra.csv`` (per group, all pairs then each system, and method: the median over images of the power
    ratio to the confocal in each radial frequency bin) and ``views/spectra.png`` (their log2, a panel per group)."""
    groups = ["all"] + sorted({system for system, _, _ in spectra if system != "-"})
    medians = {
        group: {
            method: np.median([r for s, m, r in spectra if m == method and group in ("all", s)], axis=0)
            for method in dict.fromkeys(m for s, m, _ in spectra if group in ("all", s))
        }
        for group in groups
    }
    rows = [
        {"group": group, "method": method, "frequency": f, "power_ratio": v}
        for group, methods in medians.items()
        for method, ratio in methods.items()
        for f, v in zip(radial_frequencies(len(ratio)), ratio, strict=True)
    ]
    return [
        write_csv(output_dir / "spectra.csv", rows, ["group", "method", "frequency", "power_ratio"]),
        spectrum_plot(output_dir / "views" / "spectra.png", medians),
    ]


def summary_table(summary: Sequence[Mapping]) -> str:
    """The "all" group as a text table: one line per method, median / mean of each measure."""
    lines = [f"{'method':<16}" + "".join(f"{m:>22}" for m in MEASURES)]
    for method in dict.fromkeys(s["method"] for s in summary if s["view"] == "all"):
        cells = {s["measure"]: s for s in summary if s["view"] == "all" and s["method"] == method}
        line = f"{method:<16}"
        for m in MEASURES:
            line += f"{cells[m]['median']:>11.4g} /{cells[m]['mean']:>9.4g}" if m in cells else f"{'':>22}"
        lines.append(line)
    return "\n".join(lines)
