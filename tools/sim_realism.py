"""Compare simulated and real brightfield z-stacks by measurement: does the simulator look like the scanner?

    OMP_NUM_THREADS=1 python tools/sim_realism.py --real ../shared/data/zse-brain/stacks \\
        --sim before=/tmp/sim_old/stacks --out /tmp/realism

Without ``--sim``, simulates ``--n_sim`` stacks (128 x 128 x 29, seed ``--seed``) with the bundle's
simulator (``scripts.simulate.zstacks.simulate_dataset``) into a temporary folder. Every stack is read
as ZYX intensities; depths are counted from each stack's sharpest slice (``d = z - focus``, the focus
by ``scripts.zsegan.focus.sharpest_index``), so stacks focused at different planes line up.

Measures, one value per stack (the table gives the real stacks' median and 5th-95th percentiles, and
each simulated set's median, marked where it lies outside the real spread):

- intensity: mean, 1st/50th/99th percentiles of the focal slice; the 1st percentile ``EDGE`` planes
  from focus (how dark a defocused cell stays); the mean there over the focal slice's (light kept);
- contrast: std / mean of the focal slice, and the same ``EDGE`` planes away over the focal slice's;
- noise: the standard deviation of the camera noise, Immerkaer's (1996) Laplacian-difference estimate
  on the slice farthest from focus, where the specimen is smoothest;
- spectra: radially averaged power spectrum of each slice's contrast (``I / mean - 1``, Hann window),
  in three bands (low 0.02-0.1, mid 0.1-0.25, high 0.25-0.5 cycles/px): the focal slice's high over mid
  (fine texture), and the mid band ``BLUR_AT`` planes from focus over the focal slice's (blur scale);
- focus curve: the bundle's focus measure over its peak; the number of planes above one half (the
  depth of the sharp plateau) and its value ``EDGE`` planes away;
- cells: dark objects of the focal slice (Gaussian-smoothed 1 px, below ``CELL_THRESHOLD`` of the
  slice's 90th percentile, at least ``MIN_CELL_PX`` pixels): count per 100 x 100 px, median area (px),
  and the dark area fraction (assumes 1 um pixels for the "um" of the table);
- a real-vs-simulated slice classifier: logistic regression on per-slice features (the measures above,
  per slice) and a tiny CNN on the slices themselves (64-px crops in training, whole slices in test),
  each trained on half the stacks of both kinds and tested on the other half (split by stack; the two
  folds averaged; as many real stacks as simulated ones; fixed seed), on all slices, on those near
  focus and on those far from it. 50% = indistinguishable; the training accuracy beside it says
  whether the classifier learnt at all.

Writes ``table.md`` (Markdown) and small PNG figures to ``--out``: intensity statistics per depth,
intensity histograms at three depths, power spectra at four distances from focus, focus curves, and
example slices. Prints the table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage, optimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.data.io import STACK_SUFFIXES, list_files, read_stack  # noqa: E402
from scripts.evaluation import measures as image_measures  # noqa: E402
from scripts.zsegan.focus import focus_measure  # noqa: E402

DEPTHS = 12  # per-depth curves over d = -DEPTHS .. DEPTHS planes from the focal slice
EDGE = 12  # the "far from focus" distance of the table (planes)
BLUR_AT = 6  # the distance at which the blur scale is read (planes)
N_BINS = 32  # radial frequency bins over 0 .. 0.5 cycles per pixel
BANDS = {"low": (0.02, 0.1), "mid": (0.1, 0.25), "high": (0.25, 0.5)}  # cycles per pixel
CELL_THRESHOLD = 0.5  # a cell pixel is darker than this fraction of the slice's 90th percentile
MIN_CELL_PX = 12
HIST_BINS = np.linspace(0, 256, 33)


# ----------------------------------------------------------------------------- measures of one slice


def radial_power(image: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Radially averaged power spectrum of the contrast ``image / mean - 1`` (Hann window): ``n_bins``
    values, bin ``i`` the frequencies ``[i, i + 1) * 0.5 / n_bins`` cycles per pixel."""
    a = np.asarray(image, dtype=np.float64)
    return image_measures.radial_power(a / max(a.mean(), 1e-12) - 1.0, n_bins)


def band_power(spectrum: np.ndarray, band: tuple[float, float]) -> float:
    """Mean of a :func:`radial_power` spectrum over the bins whose centres lie in ``band`` (cycles/px)."""
    centres = image_measures.radial_frequencies(len(spectrum))
    return float(spectrum[(centres >= band[0]) & (centres < band[1])].mean())


def noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of additive white noise (Immerkaer 1996): the mean absolute response to the
    difference of two Laplacians, which cancels smooth and linear signal, scaled for Gaussian noise."""
    kernel = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    response = ndimage.convolve(np.asarray(image, dtype=np.float64), kernel)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2.0) * np.abs(response).mean() / 6.0)


def cells(image: np.ndarray) -> tuple[int, float, float]:
    """(count, median area in px, dark area fraction) of the dark objects of a brightfield slice."""
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), 1.0)
    dark = smooth < CELL_THRESHOLD * np.percentile(smooth, 90)
    labels, n = ndimage.label(dark)
    areas = np.bincount(labels.ravel())[1:]
    kept = areas[areas >= MIN_CELL_PX]
    return int(len(kept)), float(np.median(kept)) if len(kept) else 0.0, float(kept.sum() / dark.size)


def slice_features(image: np.ndarray) -> np.ndarray:
    """Simple features of one slice for the logistic classifier: intensity percentiles and spread,
    noise, and the log power of the three spectral bands."""
    a = np.asarray(image, dtype=np.float64)
    spectrum = radial_power(a)
    p1, p10, p50, p90, p99 = np.percentile(a, [1, 10, 50, 90, 99])
    bands = [np.log10(band_power(spectrum, b) + 1e-12) for b in BANDS.values()]
    return np.array([a.mean(), a.std(), p1, p10, p50, p90, p99, noise_sigma(a), *bands])


# ----------------------------------------------------------------------------- measures of one stack


def stack_measures(stack: np.ndarray) -> dict:
    """Per-stack scalars (the table's rows) and per-depth curves (``curves``: name -> array over
    d = -DEPTHS .. DEPTHS, NaN where the stack has no such plane) of one ZYX stack."""
    s = np.asarray(stack, dtype=np.float64)
    fm = focus_measure(torch.from_numpy(s.astype(np.float32))).numpy().astype(np.float64)
    focus = int(fm.argmax())
    fm = fm / max(fm.max(), 1e-12)
    ds = np.arange(-DEPTHS, DEPTHS + 1)
    curves = {k: np.full(len(ds), np.nan) for k in ("mean", "std", "p1", "p99", "focus")}
    spectra = np.full((len(ds), N_BINS), np.nan)
    hists = np.full((len(ds), len(HIST_BINS) - 1), np.nan)
    for i, d in enumerate(ds):
        z = focus + d
        if 0 <= z < len(s):
            plane = s[z]
            curves["mean"][i], curves["std"][i] = plane.mean(), plane.std()
            curves["p1"][i], curves["p99"][i] = np.percentile(plane, [1, 99])
            curves["focus"][i] = fm[z]
            spectra[i] = radial_power(plane)
            hists[i] = np.histogram(plane, HIST_BINS)[0] / plane.size
    focal = s[focus]
    far = s[0] if focus >= len(s) - 1 - focus else s[-1]

    def at(d: int, values: np.ndarray) -> float:
        """Mean of ``values`` at +-d planes from focus (those the stack has; NaN if none)."""
        both = values[[DEPTHS - d, DEPTHS + d]]
        return float(both[np.isfinite(both)].mean()) if np.isfinite(both).any() else float("nan")

    mid = np.array([band_power(sp, BANDS["mid"]) if np.isfinite(sp).all() else np.nan for sp in spectra])
    focal_spectrum = spectra[DEPTHS]
    count, area, fraction = cells(focal)
    p1, p50, p99 = np.percentile(focal, [1, 50, 99])
    scalars = {
        "focal plane (0-based)": focus,
        "mean, focal slice": focal.mean(),
        "1st percentile, focal slice": p1,
        "median, focal slice": p50,
        "99th percentile, focal slice": p99,
        f"1st percentile, {EDGE} planes away": at(EDGE, curves["p1"]),
        f"mean {EDGE} planes away / focal": at(EDGE, curves["mean"]) / focal.mean(),
        "contrast std/mean, focal slice": focal.std() / focal.mean(),
        f"contrast {EDGE} planes away / focal": at(EDGE, curves["std"] / curves["mean"]) / (focal.std() / focal.mean()),
        "noise sigma (DN), farthest slice": noise_sigma(far),
        "spectrum high/mid band, focal slice": band_power(focal_spectrum, BANDS["high"])
        / band_power(focal_spectrum, BANDS["mid"]),
        f"spectrum mid band {BLUR_AT} planes away / focal": at(BLUR_AT, mid) / mid[DEPTHS],
        "focus curve: planes above 1/2": int((fm >= 0.5).sum()),
        f"focus curve {EDGE} planes away": at(EDGE, curves["focus"]),
        "cells per 100x100 px, focal slice": count * 1e4 / focal.size,
        "median cell area (px), focal slice": area,
        "dark area fraction, focal slice": fraction,
    }
    return {"scalars": scalars, "curves": curves, "spectra": spectra, "hists": hists}


# ----------------------------------------------------------------------------- classifiers


def logistic_accuracy(train_x, train_y, test_x, test_y, l2: float = 1e-2) -> tuple[float, float]:
    """(held-out, training) accuracy of an L2-regularised logistic regression on standardised features."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-9
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    a1 = np.hstack([a, np.ones((len(a), 1))])

    def loss(w):
        z = a1 @ w
        p = 1.0 / (1.0 + np.exp(-z))
        value = np.mean(np.logaddexp(0.0, z) - train_y * z) + l2 * (w[:-1] @ w[:-1])
        grad = a1.T @ (p - train_y) / len(a1) + 2 * l2 * np.append(w[:-1], 0.0)
        return value, grad

    w = optimize.minimize(loss, np.zeros(a1.shape[1]), jac=True, method="L-BFGS-B").x
    predicted = (np.hstack([b, np.ones((len(b), 1))]) @ w) > 0
    return float((predicted == test_y.astype(bool)).mean()), float(((a1 @ w > 0) == train_y.astype(bool)).mean())


class TinyCNN(torch.nn.Module):
    """Three strided 3x3 convolutions (8, 16, 32 channels, batch norm, ReLU), global mean and std pooling,
    one logit."""

    def __init__(self):
        super().__init__()
        layers, c = [], 1
        for out in (8, 16, 32):
            layers += [torch.nn.Conv2d(c, out, 3, stride=2, padding=1), torch.nn.BatchNorm2d(out), torch.nn.ReLU()]
            c = out
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(2 * c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.head(torch.cat([f.mean(dim=(2, 3)), f.std(dim=(2, 3))], 1))[:, 0]


def cnn_accuracy(
    train_x, train_y, test_x, test_y, seed: int = 0, steps: int = 300, crop: int = 64
) -> tuple[float, float]:
    """(held-out, training) accuracy of :class:`TinyCNN` trained on random ``crop``-px crops of the training slices
    (intensities / 255), tested on whole test slices (batch-norm statistics re-measured on the whole
    training slices first)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = TinyCNN()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x = torch.from_numpy(np.asarray(train_x, dtype=np.float32) / 255.0 - 0.5)
    y = torch.from_numpy(np.asarray(train_y, dtype=np.float32))
    h, w = x.shape[1:]
    crop = min(crop, h, w)
    for _ in range(steps):
        idx = rng.integers(0, len(x), 32)
        oy, ox = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        logits = net(x[idx, None, oy : oy + crop, ox : ox + crop])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        # batch-norm statistics of whole training slices (what the test sees), not the crops' running mean
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average
        for i in range(0, len(x), 64):
            net(x[i : i + 64, None])
        net.eval()
        accuracies = []
        for images, labels in ((test_x, test_y), (train_x, train_y)):
            t = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0 - 0.5)
            predicted = torch.cat([net(t[i : i + 64, None]) for i in range(0, len(t), 64)]) > 0
            accuracies.append(float((predicted.numpy() == np.asarray(labels).astype(bool)).mean()))
    return accuracies[0], accuracies[1]


def classify(
    real: list[np.ndarray], sim: list[np.ndarray], kind: str, seed: int = 0, steps: int = 300
) -> tuple[float, float]:
    """Real-vs-simulated slice classification accuracy, split by stack: as many real stacks as simulated
    (drawn with ``seed``), each kind cut in two halves; train on one half of both, test on the other,
    and the other way round. Returns the means of the two held-out and of the two training accuracies
    (a training accuracy near 50% says the classifier learnt nothing, not that the two look alike).
    ``kind``: "features" (logistic regression on :func:`slice_features`) or "cnn"
    (:func:`cnn_accuracy`). Stacks: ZYX arrays of one slice size."""
    rng = np.random.default_rng(seed)
    n = min(len(real), len(sim))
    if n < 2:
        raise ValueError("the classifier needs at least 2 stacks of each kind")
    real = [real[i] for i in rng.permutation(len(real))[:n]]
    sim = [sim[i] for i in rng.permutation(len(sim))[:n]]
    halves = [(real[: n // 2], sim[: n // 2]), (real[n // 2 :], sim[n // 2 :])]

    def data(part):
        slices = [(p, label) for label, stacks in ((1, part[0]), (0, part[1])) for s in stacks for p in s]
        x = [slice_features(p) for p, _ in slices] if kind == "features" else [p for p, _ in slices]
        return np.stack(x), np.array([label for _, label in slices], dtype=np.float64)

    folds = [data(h) for h in halves]
    accuracies = []
    for (train_x, train_y), (test_x, test_y) in (folds, folds[::-1]):
        if kind == "features":
            accuracies.append(logistic_accuracy(train_x, train_y, test_x, test_y))
        else:
            accuracies.append(cnn_accuracy(train_x, train_y, test_x, test_y, seed=seed, steps=steps))
    held_out, training = np.mean(accuracies, axis=0)
    return float(held_out), float(training)


# ----------------------------------------------------------------------------- the report


def read_stacks(folder: Path, limit: int | None = None) -> list[np.ndarray]:
    files = list_files(folder, STACK_SUFFIXES)[:limit]
    if not files:
        raise SystemExit(f"error: {folder}: no z-stacks found")
    return [read_stack(f)[0] for f in files]


def summarise(measures: list[dict]) -> dict:
    """name -> array over stacks of each scalar measure."""
    return {k: np.array([m["scalars"][k] for m in measures], dtype=np.float64) for k in measures[0]["scalars"]}


def table(real: dict, sims: dict[str, dict], accuracies: dict[str, dict]) -> str:
    """Markdown: one row per measure; the real median [5th-95th percentile], each simulated set's median
    (marked with * when outside the real spread); the classifiers' held-out (and training) accuracies
    (``accuracies``: name -> classifier label -> (held-out, training))."""
    names = list(sims)
    lines = ["| measure | real: median [5th-95th pct] | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for key, values in real.items():
        lo, mid, hi = np.percentile(values, [5, 50, 95])
        cells_ = []
        for name in names:
            m = float(np.median(sims[name][key]))
            cells_.append(f"{m:.3g}" + ("" if lo <= m <= hi else " *"))
        lines.append(f"| {key} | {mid:.3g} [{lo:.3g}-{hi:.3g}] | " + " | ".join(cells_) + " |")
    for kind in next(iter(accuracies.values())):
        row = " | ".join(f"{accuracies[name][kind][0]:.0%} (train {accuracies[name][kind][1]:.0%})" for name in names)
        lines.append(f"| real-vs-simulated accuracy, {kind} (50% = indistinguishable) | - | {row} |")
    return "\n".join(lines)


#: The classifiers of the table: (kind, slices from lo to hi planes from focus, label).
CLASSIFIERS = [
    ("features", (0, None), "logistic regression on slice features, all slices"),
    ("cnn", (0, None), "tiny CNN, all slices"),
    ("features", (0, 2), "logistic regression, slices within 2 planes of focus"),
    ("cnn", (0, 2), "tiny CNN, slices within 2 planes of focus"),
    ("features", (8, None), "logistic regression, slices 8 or more planes from focus"),
    ("cnn", (8, None), "tiny CNN, slices 8 or more planes from focus"),
]


def by_depth(stacks: list[np.ndarray], lo: int, hi: int | None) -> list[np.ndarray]:
    """The slices of each ZYX stack ``lo`` to ``hi`` (None: any) planes from its sharpest slice."""
    out = []
    for s in stacks:
        focus = int(focus_measure(torch.from_numpy(s.astype(np.float32))).argmax())
        d = np.abs(np.arange(len(s)) - focus)
        out.append(s[(d >= lo) & (d <= (len(s) if hi is None else hi))])
    return out


def figures(out: Path, real: list[dict], sims: dict[str, list[dict]], examples: dict[str, np.ndarray]) -> list[Path]:
    """The PNG figures (small): per-depth statistics, histograms, spectra, focus curves, examples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    ds = np.arange(-DEPTHS, DEPTHS + 1)
    colours = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    written = []

    def band(ax, x, values, label):
        lo, mid, hi = np.nanpercentile(values, [5, 50, 95], axis=0)
        ax.fill_between(x, lo, hi, color="0.8", label=f"{label} 5-95%")
        ax.plot(x, mid, "k-", lw=1.5, label=f"{label} median")

    def sims_median(ax, x, key):
        for i, (name, ms) in enumerate(sims.items()):
            median = np.nanmedian(np.stack([key(m) for m in ms]), 0)
            ax.plot(x, median, "-", color=colours[i % len(colours)], lw=1.2, label=name)

    def save(fig, name):
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=80)
        plt.close(fig)
        with Image.open(path) as image:  # 64 colours: a quarter of the size
            small = image.convert("RGB").quantize(colors=64)
        small.save(path, optimize=True)
        written.append(path)

    fig, axes = plt.subplots(1, 4, figsize=(12, 3))
    for ax, key in zip(axes, ("mean", "std", "p1", "p99"), strict=True):
        band(ax, ds, np.stack([m["curves"][key] for m in real]), "real")
        sims_median(ax, ds, lambda m, key=key: m["curves"][key])
        ax.set(title=key, xlabel="planes from focus")
    axes[0].legend(fontsize=7)
    save(fig, "intensity_per_depth.png")

    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    centres = (HIST_BINS[:-1] + HIST_BINS[1:]) / 2
    for ax, d in zip(axes, (-EDGE, 0, EDGE), strict=True):
        band(ax, centres, np.stack([m["hists"][DEPTHS + d] for m in real]), "real")
        sims_median(ax, centres, lambda m, d=d: m["hists"][DEPTHS + d])
        ax.set(title=f"histogram, {d:+d} planes", xlabel="intensity")
    axes[0].legend(fontsize=7)
    save(fig, "histograms.png")

    fig, axes = plt.subplots(1, 4, figsize=(12, 3), sharey=True)
    f = image_measures.radial_frequencies(N_BINS)
    for ax, d in zip(axes, (0, BLUR_AT, 2 * BLUR_AT - 2, EDGE), strict=True):

        def both(m, d=d):
            return np.nanmean(m["spectra"][[DEPTHS - d, DEPTHS + d]], 0)

        band(ax, f, np.log10(np.stack([both(m) for m in real])), "real")
        sims_median(ax, f, lambda m, both=both: np.log10(both(m)))
        ax.set(title=f"power spectrum, +-{d} planes", xlabel="cycles per pixel")
    axes[0].set_ylabel("log10 power")
    axes[0].legend(fontsize=7)
    save(fig, "spectra.png")

    fig, ax = plt.subplots(figsize=(4.5, 3))
    band(ax, ds, np.stack([m["curves"]["focus"] for m in real]), "real")
    sims_median(ax, ds, lambda m: m["curves"]["focus"])
    ax.set(title="focus curve", xlabel="planes from focus", ylabel="focus measure / peak")
    ax.legend(fontsize=7)
    save(fig, "focus_curves.png")

    fig, axes = plt.subplots(len(examples), 3, figsize=(7, 2.4 * len(examples)), squeeze=False)
    for row, (name, stack) in zip(axes, examples.items(), strict=True):
        focus = int(focus_measure(torch.from_numpy(stack.astype(np.float32))).argmax())
        for ax, d in zip(row, (-EDGE, 0, EDGE), strict=True):
            z = int(np.clip(focus + d, 0, len(stack) - 1))
            ax.imshow(stack[z], cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{name}, {z - focus:+d}", fontsize=8)
            ax.axis("off")
    save(fig, "examples.png")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, required=True, help="a folder of real z-stacks")
    parser.add_argument("--sim", action="append", default=[], help="NAME=FOLDER of simulated z-stacks (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="folder for table.md and the figures")
    parser.add_argument("--n_sim", type=int, default=40, help="stacks to simulate when no --sim is given")
    parser.add_argument("--max_real", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cnn_steps", type=int, default=300)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", "(Mean of empty slice|All-NaN slice)", RuntimeWarning)  # depths a stack lacks
    start = time.perf_counter()
    sims: dict[str, list[np.ndarray]] = {}
    for spec in args.sim:
        name, sep, folder = spec.partition("=")
        if not sep:
            parser.error(f"--sim {spec}: expected NAME=FOLDER")
        sims[name] = read_stacks(Path(folder))
    if not sims:
        from scripts.simulate.zstacks import simulate_dataset

        with tempfile.TemporaryDirectory() as tmp:
            simulate_dataset(tmp, n_stacks=args.n_sim, n_infocus=0, seed=args.seed, progress=False)
            sims["simulated"] = read_stacks(Path(tmp) / "stacks")
    real = read_stacks(args.real, args.max_real)
    real_measures = [stack_measures(s) for s in real]
    sim_measures = {name: [stack_measures(s) for s in stacks] for name, stacks in sims.items()}
    accuracies = {
        name: {
            label: classify(by_depth(real, *depths), by_depth(stacks, *depths), kind, args.seed, args.cnn_steps)
            for kind, depths, label in CLASSIFIERS
        }
        for name, stacks in sims.items()
    }
    text = table(summarise(real_measures), {n: summarise(m) for n, m in sim_measures.items()}, accuracies)
    sizes = ", ".join(f"{name} {len(stacks)}" for name, stacks in sims.items())
    head = f"{len(real)} real stacks ({args.real}); simulated: {sizes}. * = outside the real 5th-95th percentiles."
    text = f"{head}\n\n{text}\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text)
    examples = {"real": real[0], **{name: stacks[0] for name, stacks in sims.items()}}
    written = figures(args.out, real_measures, sim_measures, examples)
    print(text)
    print(
        f"wrote {args.out / 'table.md'} and {', '.join(p.name for p in written)} in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
