"""Evaluation of enhanced z-stacks: the paper's measurements (section 3), ground-truth scores, baselines.

Every method maps an input stack x (ZYX, the file's own intensity units) to a stack y of the same
shape: the model G_S (or other checkpoints, or a registered MLflow model) and the non-learned
baselines of ``scripts.evaluation.baselines``. The input itself is always evaluated too, as the method
``input``. All measures are computed in one fixed intensity domain: x's 0.5/99.5 percentiles (the
training normalisation's) mapped to 0 and 1 and clipped, applied to x, to every y and to the truth,
so that every method is measured on the same scale.

Per stack, method and slice k (the paper's x∥k, y∥k, 0-based) the ``xy`` rows hold:

- consistency: ``ssim_input`` = SSIM(x∥k, y∥k), ``ssim_focus`` = SSIM(x∥focus, y∥k) with focus x's
  sharpest slice (for the input this is the paper's SSIM(x∥k, x∥focus)), ``mutual_information``
  (bits) and ``hellinger`` between the intensity histograms of x∥k and y∥k;
- fidelity: ``ssim_coarse`` = SSIM of x∥k and y∥k after the same Gaussian low-pass
  (``coarse_sigma``, 3 px): is the specimen still where it was, at the scale the blur leaves it;
  ``detail_support`` (``measures.detail_support``, ``detail_sigma`` 2 px): the highest correlation of
  y∥k's fine detail with that of any plane of x: is the detail shown there in the input, or invented;
- sharpness: ``gradient`` (mean absolute gradient), ``fm`` (De & Masilamani's frequency measure),
  ``fm_ratio`` = FM(y∥k) / FM(x∥focus) (1: as sharp as the input's sharpest slice);
- quality: ``piqe`` (lower is better);
- against the truth, where ``truth/`` has the stack: ``psnr_truth`` (dB), ``ssim_truth``.

``xz`` and ``yz`` rows hold ``gradient``, ``fm`` and ``piqe`` of vertical sections (x⊥, y⊥) at evenly
spaced y and x; ``3d`` rows hold the whole-stack ``mutual_information``, ``hellinger`` and, with truth,
``psnr_truth`` and ``ssim_truth``, and per stack ``ssim_focus_slice`` = SSIM(x∥focus, y∥focus) (an
already sharp slice should come out nearly unchanged), ``ssim_coarse_min``, the stack's worst
``ssim_coarse`` over depths, ``detail_support_min``, the worst ``detail_support``, and
``piqe_focus_slice``, the PIQE of y at x's sharpest slice.
Gradient-magnitude histograms (Fig. 6) are summed per method over the xy slices and over the
vertical sections.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from scripts.data.io import read_stack
from scripts.data.transforms import RobustNormalised, percentile_range
from scripts.errors import InputError
from scripts.evaluation import baselines, measures, report
from scripts.evaluation.report import INPUT
from scripts.inference.sliding_window import enhance
from scripts.zsegan.focus import sharpest_index
from scripts.zsegan.sections import vertical_split
from tqdm import tqdm

logger = logging.getLogger("zsegan")

VERTICAL = ("xz", "yz")


@dataclass(frozen=True)
class Settings:
    """How the measures are taken (config keys of evaluate.yaml)."""

    intensity_lower: float = 0.5  # percentiles of x mapped to 0 and 1 (the measures' intensity domain)
    intensity_upper: float = 99.5
    fm_threshold: float = 1000.0  # De & Masilamani's threshold: share of |F| above max|F| / threshold
    n_vertical: int = 8  # vertical sections per stack: half xz (at evenly spaced y), half yz (at x)
    histogram_bins: int = 64  # of mutual information and Hellinger distance
    coarse_sigma: float = 3.0  # the Gaussian low-pass (px) of ssim_coarse
    detail_sigma: float = 2.0  # the Gaussian low-pass (px) whose residue is detail_support's detail


class RichardsonLucy:
    """The Richardson–Lucy baseline (on absorbance) with a defocus PSF (``baselines.defocus_psf``) per depth.

    On simulated data the defaults are the simulator's own optics; on real data set them to the
    microscope's (numerical aperture, medium, wavelength, pixel size and plane spacing in µm).
    ``psf_size`` is the PSF's lateral size in pixels (17 holds the simulated data's blur well enough).
    """

    def __init__(self, num_iter: int = 20, psf_size: int = 17, **optics: float):
        self.num_iter, self.psf_size, self.optics = int(num_iter), int(psf_size), dict(optics)

    def psf(self, depth: int) -> np.ndarray:
        return _psf(depth, (self.psf_size, self.psf_size), tuple(sorted(self.optics.items())))

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        return baselines.richardson_lucy(stack, self.psf(stack.shape[0]), num_iter=self.num_iter)


@lru_cache(maxsize=8)
def _psf(depth: int, shape_yx: tuple[int, int], optics: tuple) -> np.ndarray:
    return baselines.defocus_psf(depth, shape_yx, **dict(optics))


# ----------------------------------------------------------------------------- measures of one stack


def unit_domain(x: np.ndarray, lower: float, upper: float) -> Callable[[np.ndarray], np.ndarray]:
    """The measures' intensity domain: x's ``lower``/``upper`` percentiles (the same as inference's,
    :func:`scripts.data.transforms.percentile_range`) to 0/1, clipped (float64)."""
    lo, hi = percentile_range(x, lower, upper)
    scale = 1.0 / (hi - lo)
    return lambda a: np.clip((np.asarray(a, np.float64) - lo) * scale, 0.0, 1.0)


def vertical_positions(size: int, n: int) -> list[int]:
    """``n`` evenly spaced interior positions along an axis of ``size`` pixels (no edge sections)."""
    return sorted({int(round(p)) for p in np.linspace(0, size - 1, n + 2)[1:-1]})


def evenly_spaced_vertical_sections(stack: np.ndarray, n: int) -> list[tuple[str, int, np.ndarray]]:
    """``(view, position, section)``: xz sections at evenly spaced y, then yz at x (Z rows), split as in
    training (:func:`scripts.zsegan.sections.vertical_split`: the odd one is an xz section)."""
    _, height, width = stack.shape
    n_xz, n_yz = vertical_split(n)
    xz = [("xz", y, stack[:, y, :]) for y in vertical_positions(height, n_xz)]
    yz = [("yz", x, stack[:, :, x]) for x in vertical_positions(width, n_yz)]
    return xz + yz


def measure_stack(
    name: str, x: np.ndarray, outputs: Mapping[str, np.ndarray], truth: np.ndarray | None, settings: Settings
) -> tuple[list[dict], dict]:
    """Rows ``{method, stack, view, index, measure, value}`` and gradient histograms of one stack.

    ``outputs`` maps method names to their y (same shape as x, x's units); the input is added as
    ``input``. Histograms: ``{method: {"xy": counts, "vertical": counts}}`` over ``measures.GRADIENT_EDGES``.
    """
    unit = unit_domain(x, settings.intensity_lower, settings.intensity_upper)
    xu = unit(x)
    tu = unit(truth) if truth is not None else None
    focus = sharpest_index(x)
    rows: list[dict] = []
    histograms: dict[str, dict[str, np.ndarray]] = {}
    bins = settings.histogram_bins

    def add(method: str, view: str, index, measure: str, value: float) -> None:
        rows.append({"method": method, "stack": name, "view": view, "index": index, "measure": measure, "value": value})

    for method, y in {INPUT: x, **outputs}.items():
        if y.shape != x.shape:
            raise ValueError(f"{method} returned shape {y.shape} for a stack of shape {x.shape}")
        yu = unit(y)
        hist_xy = np.zeros(len(measures.GRADIENT_EDGES) - 1, np.int64)
        piqe_xy = measures.piqe_many(yu)
        coarse = [measures.ssim_coarse(xu[k], yu[k], settings.coarse_sigma) for k in range(len(yu))]
        fm_focus = max(measures.fm(xu[focus], settings.fm_threshold), 1e-12)
        support = measures.detail_support(yu, xu, settings.detail_sigma)
        for k in range(len(yu)):
            add(method, "xy", k, "ssim_input", measures.ssim(xu[k], yu[k]))
            add(method, "xy", k, "ssim_coarse", coarse[k])
            add(method, "xy", k, "detail_support", float(support[k]))
            add(method, "xy", k, "ssim_focus", measures.ssim(xu[focus], yu[k]))
            add(method, "xy", k, "mutual_information", measures.mutual_information(xu[k], yu[k], bins))
            add(method, "xy", k, "hellinger", measures.hellinger(xu[k], yu[k], bins))
            add(method, "xy", k, "gradient", measures.mean_abs_gradient(yu[k]))
            fm_k = measures.fm(yu[k], settings.fm_threshold)
            add(method, "xy", k, "fm", fm_k)
            add(method, "xy", k, "fm_ratio", fm_k / fm_focus)
            add(method, "xy", k, "piqe", float(piqe_xy[k]))
            hist_xy += measures.gradient_histogram(yu[k])
            if tu is not None:
                add(method, "xy", k, "psnr_truth", measures.psnr(tu[k], yu[k]))
                add(method, "xy", k, "ssim_truth", measures.ssim(tu[k], yu[k]))
        hist_vertical = np.zeros_like(hist_xy)
        for view in VERTICAL:
            sections = [(p, s) for v, p, s in evenly_spaced_vertical_sections(yu, settings.n_vertical) if v == view]
            if not sections:
                continue
            piqe_sections = measures.piqe_many(np.stack([s for _, s in sections]))
            for (position, section), piqe_value in zip(sections, piqe_sections, strict=False):
                add(method, view, position, "gradient", measures.mean_abs_gradient(section))
                add(method, view, position, "fm", measures.fm(section, settings.fm_threshold))
                add(method, view, position, "piqe", float(piqe_value))
                hist_vertical += measures.gradient_histogram(section)
        add(method, "3d", "all", "ssim_focus_slice", measures.ssim(xu[focus], yu[focus]))
        add(method, "3d", "all", "ssim_coarse_min", min(coarse))
        add(method, "3d", "all", "detail_support_min", float(support.min()))
        add(method, "3d", "all", "piqe_focus_slice", float(piqe_xy[focus]))
        add(method, "3d", "all", "mutual_information", measures.mutual_information(xu, yu, bins))
        add(method, "3d", "all", "hellinger", measures.hellinger(xu, yu, bins))
        if tu is not None:
            add(method, "3d", "all", "psnr_truth", measures.psnr(tu, yu))
            add(method, "3d", "all", "ssim_truth", measures.ssim(tu, yu))
        histograms[method] = {"xy": hist_xy, "vertical": hist_vertical}
    return rows, histograms


def _evaluate_file(
    stack_path: str,
    x: np.ndarray | None,
    truth_path: str | None,
    outputs: dict[str, np.ndarray],
    non_learned: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    settings: Settings,
    keep: bool,
) -> tuple[list[dict], dict, dict | None, float]:
    """One stack, in a worker: read it (unless the caller already has, ``x``), run the baselines, measure
    every method. Returns rows, histograms, the stacks in the measures' domain when ``keep`` (for
    pictures) and the seconds taken."""
    start = time.perf_counter()
    torch.set_num_threads(1)
    x = read_stack(stack_path)[0].astype(np.float32) if x is None else x
    truth = _read_truth(truth_path, x.shape) if truth_path else None
    outputs = dict(outputs)
    for method, baseline in non_learned.items():
        outputs[method] = np.asarray(baseline(x), np.float32)
    rows, histograms = measure_stack(Path(stack_path).name, x, outputs, truth, settings)
    kept = None
    if keep:
        unit = unit_domain(x, settings.intensity_lower, settings.intensity_upper)
        kept = {INPUT: unit(x), **{m: unit(y) for m, y in outputs.items()}}
        if truth is not None:
            kept["truth"] = unit(truth)
        kept = {m: s.astype(np.float32) for m, s in kept.items()}
    return rows, histograms, kept, time.perf_counter() - start


def _read_truth(path: str, shape: tuple[int, ...]) -> np.ndarray:
    truth = read_stack(path)[0].astype(np.float32)
    if truth.shape != shape:
        raise InputError(path, f"truth of shape {truth.shape} does not match its stack's {shape}")
    return truth


# ----------------------------------------------------------------------------- aggregation


def aggregate(rows: Sequence[Mapping]) -> list[dict]:
    """Mean, standard deviation and count over stacks, per method × view × index × measure, plus
    per method × view × measure over all indices (``index`` = ``all``: the mean over stacks of each
    stack's mean, so every stack weighs the same; xz and yz together also as view ``vertical``)."""
    per_index: dict[tuple, list[float]] = defaultdict(list)
    per_stack: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        views = (r["view"], "vertical") if r["view"] in VERTICAL else (r["view"],)
        for view in views:
            if view != "vertical" and r["index"] != "all":
                per_index[(r["method"], view, r["index"], r["measure"])].append(r["value"])
            per_stack[(r["method"], view, r["measure"], r["stack"])].append(r["value"])
    overall: dict[tuple, list[float]] = defaultdict(list)
    for (method, view, measure, _), values in per_stack.items():
        overall[(method, view, "all", measure)].append(_mean(values))
    out = []
    for (method, view, index, measure), values in list(per_index.items()) + list(overall.items()):
        finite = [v for v in values if math.isfinite(v)]
        out.append(
            {
                "method": method,
                "view": view,
                "index": index,
                "measure": measure,
                "mean": _mean(finite),
                "std": float(np.std(finite)) if finite else float("nan"),
                "n": len(finite),
                "n_infinite": len(values) - len(finite),
            }
        )
    order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in rows))}
    views = {v: i for i, v in enumerate(("xy", "xz", "yz", "vertical", "3d"))}
    out.sort(
        key=lambda r: (
            order[r["method"]],
            views[r["view"]],
            r["measure"],
            r["index"] == "all",
            str(r["index"]).zfill(6),
        )
    )
    return out


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


SUMMARY = (  # (view, measure, label) of the printed table, in order
    ("xy", "ssim_input", "SSIM(x,y) xy"),
    ("3d", "ssim_focus_slice", "SSIM focus"),
    ("3d", "ssim_coarse_min", "coarse min"),
    ("3d", "mutual_information", "MI bits"),
    ("3d", "hellinger", "Hellinger"),
    ("xy", "gradient", "grad xy"),
    ("vertical", "gradient", "grad vert"),
    ("xy", "fm", "FM xy"),
    ("vertical", "fm", "FM vert"),
    ("xy", "piqe", "PIQE xy"),
    ("vertical", "piqe", "PIQE vert"),
    ("3d", "psnr_truth", "PSNR truth"),
    ("3d", "ssim_truth", "SSIM truth"),
)


def summary_table(aggregates: Sequence[Mapping]) -> str:
    """One line per method: the main aggregates (mean ± std over stacks), as a plain-text table."""
    cells = {(a["method"], a["view"], a["measure"]): a for a in aggregates if a["index"] == "all"}
    methods = list(dict.fromkeys(a["method"] for a in aggregates))
    columns = [c for c in SUMMARY if any((m, c[0], c[1]) in cells for m in methods)]
    header = ["method"] + [c[2] for c in columns]
    lines = [header]
    for m in methods:
        line = [m]
        for view, measure, _ in columns:
            a = cells.get((m, view, measure))
            line.append("" if a is None else f"{a['mean']:.3f}±{a['std']:.3f}")
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


# ----------------------------------------------------------------------------- the workflow


def evaluation_datalist(
    dataset_dir: str | Path, subset: str = "held_out", val_fraction: float = 0.1, seed: int = 0
) -> list[dict]:
    """``[{"image": stack, "truth": path or None}]`` for the stacks of a dataset folder.

    ``subset``: ``held_out`` (the validation split of training with the same ``val_fraction`` and
    ``seed``: stacks the model has not been trained on) or ``all``. Each stack gets the same-named
    file of ``truth/`` when there is one.
    """
    from scripts.data.datalist import datalist, train_val_split

    dataset_dir = Path(dataset_dir)
    if subset not in ("held_out", "all"):
        raise InputError(None, f"subset must be 'held_out' or 'all', got {subset!r}")
    stacks = datalist(dataset_dir, "stacks")
    if subset == "held_out":
        stacks = train_val_split(stacks, val_fraction, seed)[1]
    if not stacks:
        raise InputError(dataset_dir, f"has no stacks to evaluate (subset {subset!r})")
    truth_dir = dataset_dir / "truth"
    items = []
    for item in stacks:
        truth = truth_dir / Path(item["image"]).name
        items.append({"image": str(item["image"]), "truth": str(truth) if truth.is_file() else None})
    return items


class Evaluation:
    """Enhance every stack with every model, run the baselines, measure all, write and log the report.

    Args:
        datalist: ``evaluation_datalist``'s items.
        output_dir: where ``metrics.csv``, ``metrics.json``, ``gradient_histograms.csv`` and the plots go.
        models: name → G_S network (already loaded); run on the main process with ``inferer``.
        baselines: name → callable (ZYX stack in its units → same), run in the worker processes.
        inferer: MONAI inferer for the models (sliding window).
        settings: the measures' settings.
        device: for the models.
        num_workers: processes measuring stacks (0: in this process).
        n_views: stacks whose orthogonal views are drawn (input beside each method).
        tracking_uri, experiment_name, run_name: the MLflow run everything is logged to (None: no MLflow).
        config: parameters to log (the executed config's scalars).
        summary: at the end, ``summary.finish(n)`` says what was written where and how long it took
            (``ops.handlers.RunSummary``); None: the summary table only.
    """

    def __init__(
        self,
        datalist: Sequence[Mapping],
        output_dir: str,
        models: Mapping[str, torch.nn.Module],
        baselines: Mapping[str, Callable[[np.ndarray], np.ndarray]],
        inferer=None,
        settings: Settings | None = None,
        device: str | torch.device = "cpu",
        num_workers: int = 0,
        n_views: int = 2,
        tracking_uri: str | None = None,
        experiment_name: str = "zsegan-evaluation",
        run_name: str | None = None,
        config: Mapping | None = None,
        summary=None,
    ):
        names = [INPUT, *models, *baselines]
        if len(set(names)) != len(names):
            raise ValueError(f"method names must be unique and not {INPUT!r}: {names}")
        bad = [n for n in names if not re.fullmatch(r"[\w\-. :/]+", n)]
        if bad:  # they name MLflow metrics, which allow only these characters: refuse before hours of work
            raise ValueError(f"method names may hold only letters, digits, '_', '-', '.', ' ', ':' and '/': {bad}")
        self.datalist, self.output_dir = list(datalist), Path(output_dir)
        self.models, self.baselines, self.inferer = dict(models), dict(baselines), inferer
        self.settings = settings or Settings()
        self.device, self.num_workers, self.n_views = device, int(num_workers), int(n_views)
        self.tracking_uri, self.experiment_name, self.run_name = tracking_uri, experiment_name, run_name
        self.config, self.summary = dict(config or {}), summary

    def _outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        normalise = RobustNormalised("image", self.settings.intensity_lower, self.settings.intensity_upper)
        return {m: enhance(net, x, self.inferer, normalise, self.device) for m, net in self.models.items()}

    def run(self) -> dict:
        """Evaluate all stacks and write the report; returns ``{"rows", "aggregates", "histograms", "files"}``."""
        for item in self.datalist:  # every input readable before hours of work (and before any output)
            read_stack(item["image"])
        n = len(self.datalist)
        bar = tqdm(total=n, desc="evaluated", unit="stack")  # one bar over all stacks
        rows: list[dict] = []
        histograms: dict[str, dict[str, np.ndarray]] = {}
        views: dict[str, dict] = {}
        pool = ProcessPoolExecutor(self.num_workers, mp_context=get_context("spawn")) if self.num_workers > 0 else None
        try:
            pending: list = []
            done = 0
            for i, item in enumerate(self.datalist):
                # the models run here (torch's threads); a stack read for them is passed on, not read again
                x = read_stack(item["image"])[0].astype(np.float32) if self.models else None
                args = (
                    item["image"],
                    x,
                    item["truth"],
                    self._outputs(x) if self.models else {},
                    self.baselines,
                    self.settings,
                    i < self.n_views,
                )
                pending.append(pool.submit(_evaluate_file, *args) if pool else _Done(_evaluate_file(*args)))
                while pending and (len(pending) > 2 * max(self.num_workers, 1) or i == n - 1):
                    result = pending.pop(0).result()
                    done += 1
                    self._collect(result, rows, histograms, views, self.datalist[done - 1]["image"])
                    bar.update()
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        aggregates = aggregate(rows)
        files = self._write(rows, aggregates, histograms, views)
        print(summary_table(aggregates), flush=True)
        if self.summary is not None:
            self.summary.finish(n)
        return {"rows": rows, "aggregates": aggregates, "histograms": histograms, "files": files}

    @staticmethod
    def _collect(result, rows, histograms, views, path) -> None:
        stack_rows, stack_histograms, kept, _ = result
        rows.extend(stack_rows)
        for method, by_view in stack_histograms.items():
            totals = histograms.setdefault(method, {v: np.zeros_like(h) for v, h in by_view.items()})
            for view, counts in by_view.items():
                totals[view] += counts
        if kept is not None:
            views[Path(path).name] = kept

    def _write(self, rows, aggregates, histograms, views) -> list[Path]:

        out = self.output_dir
        files = [
            report.write_csv(
                out / "metrics.csv",
                aggregates,
                ["method", "view", "index", "measure", "mean", "std", "n", "n_infinite"],
            ),
            report.write_histograms_csv(out / "gradient_histograms.csv", histograms, measures.GRADIENT_EDGES),
            report.write_json(
                out / "metrics.json",
                {
                    "settings": asdict(self.settings),
                    "methods": [INPUT, *self.models, *self.baselines],
                    "stacks": [item["image"] for item in self.datalist],
                    "aggregates": aggregates,
                    "per_stack": rows,
                    "gradient_histograms": {
                        "edges": measures.GRADIENT_EDGES.tolist(),
                        "counts": {m: {v: c.tolist() for v, c in h.items()} for m, h in histograms.items()},
                    },
                },
            ),
        ]
        files += report.plots(out, aggregates, histograms, measures.GRADIENT_EDGES, views)
        if self.tracking_uri:
            report.log_to_mlflow(self.tracking_uri, self.experiment_name, self.run_name, self.config, aggregates, files)
        return files


class _Done:
    """A finished result with a future's ``result()``, for evaluation without worker processes."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def default_workers() -> int:
    """Worker processes for the measures: the CPU cores this process may use, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))
