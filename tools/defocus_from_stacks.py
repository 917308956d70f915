"""Measure the defocus of real z-stacks: the transfer function of each plane relative to the focal plane.

    python tools/defocus_from_stacks.py ../shared/data/zse-brain/stacks --figure docs/figures/defocus_real.png

For every stack (in absorbance, -log of the intensity over the stack's bright background) and every plane
``d`` planes from the focal plane (the sharpest slice), the cross-spectrum with the focal plane over the
focal plane's power spectrum, radially averaged, is that plane's transfer function relative to focus,
T_d(rho), as far as plane d shows the focal plane's specimen. The median over stacks is fitted by
``A_d exp(-2 pi^2 sigma_d^2 rho^2)`` where T_d > 0.05: sigma_d is the Gaussian PSF width that
``scripts.nets.optical.OpticalBlur`` models, A_d the coherent fraction (1 where plane d is the focal
plane's specimen blurred, less where it holds content the focal plane does not: structure at other
depths of a thick section, or lost contrast). Prints a Markdown table and the fitted growth k (px per
plane, sigma_d^2 = sigma_0^2 + k^2 d^2) above and below focus; ``--figure`` draws T_d and the fits.

    python tools/defocus_from_stacks.py ../shared/data/zse-brain/stacks --domains --max_stacks 10

``--domains`` asks instead in which domain the blur acts (``OpticalBlur``'s ``domain``): each plane 4, 8
and 12 planes from focus is fitted as the focal plane blurred in intensity or in absorbance (best sigma
on a grid, gain and offset free), and the table gives, per domain and distance, the median fitted
sigma, the share of the plane's variance left unexplained, and how far the blurred focal plane's mean
lies from the plane's (an absorbance blur darkens, Jensen's inequality; a light-keeping one does not).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.data.io import STACK_SUFFIXES, list_files, read_stack  # noqa: E402
from scripts.evaluation.measures import radial_bins, radial_frequencies  # noqa: E402
from scripts.zsegan.focus import sharpest_index  # noqa: E402

N_BINS = 25  # radial frequency bins over 0 .. 0.5 cycles per pixel


def absorbance(stack: np.ndarray) -> np.ndarray:
    """ZYX intensities -> -log(I / background), the background the stack's 99.5th percentile."""
    stack = stack.astype(np.float64)
    return -np.log(np.clip(stack / np.percentile(stack, 99.5), 0.02, None))


def transfer_functions(stack: np.ndarray) -> dict[int, np.ndarray]:
    """{d: T_d over N_BINS radial bins} for one ZYX stack, d = plane - focal plane."""
    a = absorbance(stack)
    focus = sharpest_index(a)
    ny, nx = a.shape[1:]
    bins = radial_bins((ny, nx), N_BINS)  # the corners (rho > 0.5) in an extra bin
    window = np.outer(np.hanning(ny), np.hanning(nx))
    spectra = np.fft.fft2((a - a.mean(axis=(1, 2), keepdims=True)) * window)
    focal = spectra[focus]
    power = np.bincount(bins.ravel(), (np.abs(focal) ** 2).ravel(), N_BINS + 1)[:N_BINS]
    out = {}
    for z, plane in enumerate(spectra):
        cross = np.bincount(bins.ravel(), (plane * np.conj(focal)).real.ravel(), N_BINS + 1)[:N_BINS]
        out[z - focus] = cross / np.maximum(power, 1e-12)
    return out


def fit_gaussian(transfer: np.ndarray) -> tuple[float, float]:
    """(A, sigma) of A exp(-2 pi^2 sigma^2 rho^2), least squares on log T where 0.05 < T, bins 1 .. 19."""
    rho = radial_frequencies(N_BINS)
    use = (transfer > 0.05) & (np.arange(N_BINS) >= 1) & (np.arange(N_BINS) < 20)
    if use.sum() < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(-2 * np.pi**2 * rho[use] ** 2, np.log(transfer[use]), 1)
    return float(np.exp(intercept)), float(np.sqrt(max(slope, 0.0)))


def growth(ds: np.ndarray, sigmas: np.ndarray) -> tuple[float, float]:
    """(sigma_0, k) of sigma^2 = sigma_0^2 + k^2 d^2, least squares in sigma^2."""
    k2, s02 = np.polyfit(ds.astype(float) ** 2, sigmas**2, 1)
    return float(np.sqrt(max(s02, 0.0))), float(np.sqrt(max(k2, 0.0)))


def domain_fit(stack: np.ndarray, depths=(4, 8, 12), floor: float = 0.1) -> dict[str, list[tuple]]:
    """{domain: [(d, sigma, unexplained fraction, |mean shift|), ...]} for one ZYX stack (module docstring).

    Intensities are mapped as the optical G_B sees them: the 0.5 and 99.5 percentiles to transmissions
    ``floor`` and 1; mean shifts are in that [0, 1] range.
    """
    from scipy.ndimage import gaussian_filter

    lo, hi = np.percentile(stack, [0.5, 99.5])
    t = floor + (1 - floor) * np.clip((stack.astype(np.float64) - lo) / max(hi - lo, 1e-12), 0, 1)
    focus = sharpest_index(stack)
    blur = {
        "intensity": lambda s: gaussian_filter(t[focus], s, mode="nearest"),
        "absorbance": lambda s: np.exp(-gaussian_filter(-np.log(t[focus]), s, mode="nearest")),
    }
    out = {domain: [] for domain in blur}
    for d in depths:
        for z in (focus - d, focus + d):
            if not 0 <= z < len(t):
                continue
            target = t[z].ravel()
            for domain, model in blur.items():
                best = (np.inf, 0.0, None)
                for sigma in np.linspace(0.2, 6.0, 30):
                    m = model(sigma).ravel()
                    gain, offset = np.polyfit(m, target, 1)
                    err = np.mean((gain * m + offset - target) ** 2)
                    best = min(best, (err, sigma, m), key=lambda e: e[0])
                err, sigma, m = best
                out[domain].append((d, sigma, err / target.var(), abs(target.mean() - m.mean())))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", type=Path, help="a folder of z-stacks")
    parser.add_argument("--max_stacks", type=int, default=200)
    parser.add_argument("--min_stacks", type=int, default=10, help="depths seen in fewer stacks are left out")
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--domains", action="store_true", help="intensity or absorbance blur (module docstring)")
    args = parser.parse_args(argv)
    files = list_files(args.stacks, STACK_SUFFIXES)[: args.max_stacks]
    if not files:
        raise SystemExit(f"error: {args.stacks}: no z-stacks found")
    if args.domains:
        rows = defaultdict(list)
        for n, path in enumerate(files, 1):
            for domain, fits in domain_fit(read_stack(path)[0]).items():
                for d, *values in fits:
                    rows[domain, d].append(values)
            print(f"\r{n}/{len(files)} stacks", end="", file=sys.stderr, flush=True)
        print(f"\n{len(files)} stacks from {args.stacks}\n")
        print("| domain | d (planes) | planes | sigma (px) | unexplained variance | mean shift (of the range) |")
        print("|---|---|---|---|---|---|")
        for (domain, d), values in sorted(rows.items()):
            sigma, unexplained, shift = np.median(values, axis=0)
            print(f"| {domain} | {d} | {len(values)} | {sigma:.2f} | {unexplained:.3f} | {shift:.4f} |")
        return
    per_depth = defaultdict(list)
    for n, path in enumerate(files, 1):
        for d, t in transfer_functions(read_stack(path)[0]).items():
            per_depth[d].append(t)
        print(f"\r{n}/{len(files)} stacks", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    median = {d: np.median(ts, axis=0) for d, ts in sorted(per_depth.items()) if len(ts) >= args.min_stacks and d}
    fits = {d: fit_gaussian(t) for d, t in median.items()}
    print(f"{len(files)} stacks from {args.stacks}\n\n| d (planes) | stacks | A (coherent fraction) | sigma (px) |")
    print("|---|---|---|---|")
    for d, (amplitude, sigma) in fits.items():
        print(f"| {d:+d} | {len(per_depth[d])} | {amplitude:.2f} | {sigma:.2f} |")
    for side, sign in (("above (d < 0)", -1), ("below (d > 0)", 1)):
        ds = np.array([d for d in fits if np.sign(d) == sign and np.isfinite(fits[d][1])])
        sigma_0, k = growth(ds, np.array([fits[d][1] for d in ds]))
        print(f"\n{side}: k = {k:.3f} px per plane, sigma_0 = {sigma_0:.2f} px (from {len(ds)} depths)")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rho = radial_frequencies(N_BINS)
        fig, ax = plt.subplots(figsize=(6, 4))
        for d in [d for d in (-12, -8, -4, -2, 2, 4, 8, 12) if d in median]:
            (line,) = ax.plot(rho, median[d], "o", ms=3, label=f"d = {d:+d}")
            amplitude, sigma = fits[d]
            ax.plot(rho, amplitude * np.exp(-2 * np.pi**2 * sigma**2 * rho**2), "-", color=line.get_color(), lw=1)
        ax.set(xlabel="spatial frequency (cycles per pixel)", ylabel="transfer relative to the focal plane")
        ax.set_title("Real stacks: measured (dots) and Gaussian fits (lines)", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=110)
        print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()
