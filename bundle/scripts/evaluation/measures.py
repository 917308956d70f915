"""Image measures of the paper's evaluation (section 3.2): similarity, sharpness and quality of sections.

Reference measures compare two images: :func:`ssim` (Wang et al. 2004, Table 1 and Fig. 5), :func:`psnr`,
:func:`mutual_information` and :func:`hellinger` (section 4: consistency of x and y). No-reference measures
score one image: the gradient magnitude (:func:`gradient_magnitude`, :func:`mean_abs_gradient` for Table 2,
:func:`gradient_histogram` for Fig. 6), :func:`fm` (De & Masilamani 2013, Table 3 and Fig. 7) and
:func:`piqe` (Venkatanath et al. 2015, as MATLAB's ``piqe``; Table 3 and Fig. 7).

**Fixed intensity domain.** Every image is a 2D float array (YX, or a vertical section ZX/ZY with z along
the rows) with intensities in [0, 1]. The caller maps every method's output with the *input* stack's
percentile mapping and clips to [0, 1], so that all methods are measured in the same units; a float
image outside [0, 1] is refused (ValueError). Unsigned-integer images are accepted and scaled as
MATLAB's ``im2double`` does (uint8 u -> u / 255). :func:`psnr`, :func:`ssim` and the histogram
measures also take whole stacks.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d, gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "GRADIENT_EDGES",
    "SSIM_MIN_SIZE",
    "detail_support",
    "fm",
    "gradient_histogram",
    "gradient_magnitude",
    "hellinger",
    "mean_abs_gradient",
    "mutual_information",
    "piqe",
    "piqe_many",
    "piqe_maps",
    "power_ratio",
    "psnr",
    "radial_bins",
    "radial_frequencies",
    "radial_power",
    "spectral_error",
    "ssim",
    "ssim_coarse",
]

#: Gaussian weighting of SSIM (pixels), Wang et al. 2004; skimage truncates it at 3.5 sigma: an 11x11 window.
SSIM_SIGMA = 1.5

#: Smallest image side (pixels) that SSIM's 11x11 Gaussian window fits in.
SSIM_MIN_SIZE = 11

#: Bin edges of :func:`gradient_histogram` (intensity per pixel): 100 bins of 0.01, the same for every image.
GRADIENT_EDGES = np.linspace(0.0, 1.0, 101)

# PIQE (Venkatanath et al. 2015) constants, as in MATLAB's piqe.m
_PIQE_BLOCK = 16  # non-overlapping blocks, pixels
_PIQE_ACTIVITY = 0.1  # block variance above which a block is spatially active
_PIQE_IMPAIRED = 0.1  # edge-segment std below which a block has a noticeable artifact
_PIQE_SEGMENT = 6  # pixels per edge segment
_PIQE_C = 1.0  # constant of the pooled score
_PIQE_GAUSS = np.exp(-0.5 * (np.arange(-3, 4) / (7 / 6)) ** 2)  # MSCN window: 7 taps, sigma 7/6
_PIQE_GAUSS /= _PIQE_GAUSS.sum()
_PIQE_CHUNK_PIXELS = 16384  # pixels scored at once by piqe_many (cache-sized)
_PIQE_SEGMENTS = np.arange(_PIQE_BLOCK - _PIQE_SEGMENT + 1)[:, None] + np.arange(_PIQE_SEGMENT)  # (11, 6) indices


def _unit(img: np.ndarray, ndim: int | None = 2) -> np.ndarray:
    """``img`` as float64 in [0, 1]: floats checked, unsigned integers divided by their maximum (im2double)."""
    img = np.asarray(img)
    if ndim is not None and img.ndim != ndim:
        raise ValueError(f"expected a {ndim}D image, got shape {img.shape}")
    if img.size == 0:
        raise ValueError("empty image")
    if np.issubdtype(img.dtype, np.unsignedinteger):
        return img / np.iinfo(img.dtype).max
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"images must be float in [0, 1] or unsigned integers, got {img.dtype}")
    img = img.astype(np.float64, copy=False)
    low, high = img.min(), img.max()
    if not (low >= 0.0 and high <= 1.0):  # also catches NaN
        raise ValueError(f"intensities must be in [0, 1] (map and clip first), got [{low}, {high}]")
    return img


def _pair(a: np.ndarray, b: np.ndarray, ndim: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = _unit(a, ndim), _unit(b, ndim)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} and {b.shape}")
    return a, b


# ---- reference measures --------------------------------------------------------------------------------------


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two YX images (or two ZYX stacks) in [0, 1], with Wang et al.'s settings (dimensionless, <= 1).

    11-tap Gaussian window of sigma 1.5 px, K1 = 0.01, K2 = 0.03, data range 1, population covariances
    (``skimage.metrics.structural_similarity``); the mean is over the pixels whose window lies inside the
    image (a 5 px border is left out). Every side must be at least :data:`SSIM_MIN_SIZE` px (a 128x29 or
    29x16 section is fine); smaller images raise ValueError. Two stacks get skimage's 3D SSIM (an 11x11x11
    Gaussian window), which is not the mean of the per-slice SSIMs.
    """
    a, b = _pair(a, b, ndim=None)
    if a.ndim not in (2, 3):
        raise ValueError(f"SSIM takes 2D images or 3D stacks, got shape {a.shape}")
    if min(a.shape) < SSIM_MIN_SIZE:
        raise ValueError(f"SSIM needs at least {SSIM_MIN_SIZE} px a side (its window), got {a.shape}")
    return float(
        structural_similarity(
            a, b, data_range=1.0, gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False, K1=0.01, K2=0.03
        )
    )


def ssim_coarse(a: np.ndarray, b: np.ndarray, sigma: float = 3.0) -> float:
    """:func:`ssim` of two YX images after the same Gaussian low-pass of ``sigma`` px (nearest borders).

    "Is the specimen still where it was, at the scale that defocus leaves it": fine detail that G_S
    adds to a blurred slice does not lower it, cells moved, lost or invented do.
    """
    a, b = _pair(a, b)
    return ssim(gaussian_filter(a, sigma, mode="nearest"), gaussian_filter(b, sigma, mode="nearest"))


def detail_support(y: np.ndarray, x: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Per plane of ``y``: the highest correlation of its detail with the detail of any plane of ``x``.

    y, x: ZYX stacks in [0, 1] (y enhanced from x; the depths may differ). Detail is what a Gaussian
    low-pass of ``sigma`` px removes; the correlation is Pearson's over the plane. "Does the detail this
    plane shows exist, sharp, somewhere in the input?": a plane of the input itself scores 1, a plane
    whose detail was borrowed from the input's focal plane scores high, and invented texture (ripples, a
    grid), which no input plane holds, lowers it in proportion to its share of the plane's detail
    energy (uncorrelated texture with as much energy as the true detail: about 0.71). SSIM after a
    low-pass cannot see such texture, and PIQE may reward it; this measure is meant to be read beside
    a sharpness measure (copying one sharp plane everywhere also scores 1). A plane without detail
    scores 0.
    """
    y, x = _unit(y, ndim=3), _unit(x, ndim=3)
    if y.shape[1:] != x.shape[1:]:
        raise ValueError(f"y and x need planes of one size, got {y.shape} and {x.shape}")

    def rows(stack: np.ndarray) -> np.ndarray:
        detail = stack - gaussian_filter(stack, (0, sigma, sigma), mode="nearest")
        detail = detail.reshape(len(stack), -1)
        detail = detail - detail.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(detail, axis=1, keepdims=True)
        return np.divide(detail, norm, out=np.zeros_like(detail), where=norm > 0)

    return np.clip((rows(y) @ rows(x).T).max(axis=1), -1.0, 1.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two same-shaped images or stacks in [0, 1], in dB for a peak of 1; inf if equal."""
    a, b = _pair(a, b, ndim=None)
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(a, b, data_range=1.0))


def _bin_index(x: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each intensity for ``bins`` equal bins on [0, 1]: [k/bins, (k+1)/bins), the last one closed."""
    return np.minimum((x * bins).astype(np.intp), bins - 1).ravel()


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 64) -> float:
    """Mutual information of the intensities of ``a`` and ``b`` (same shape, any number of axes), in bits.

    From their joint histogram with ``bins`` x ``bins`` equal bins on [0, 1]: MI = H(a) + H(b) - H(a, b).
    MI(a, a) is the entropy of a's histogram; independent images give about 0.
    """
    a, b = _pair(a, b, ndim=None)
    joint = np.bincount(_bin_index(a, bins) * bins + _bin_index(b, bins), minlength=bins * bins)
    joint = joint.reshape(bins, bins) / a.size
    return _entropy_bits(joint.sum(axis=1)) + _entropy_bits(joint.sum(axis=0)) - _entropy_bits(joint)


def hellinger(a: np.ndarray, b: np.ndarray, bins: int = 64) -> float:
    """Hellinger distance between the intensity histograms of ``a`` and ``b`` (any shapes, even different).

    ``bins`` equal bins on [0, 1], each histogram normalised to sum 1:
    H = sqrt(sum (sqrt p - sqrt q)^2 / 2), in [0, 1]; 0 for equal histograms, 1 for disjoint ones.
    """
    a, b = _unit(a, ndim=None), _unit(b, ndim=None)
    p = np.bincount(_bin_index(a, bins), minlength=bins) / a.size
    q = np.bincount(_bin_index(b, bins), minlength=bins) / b.size
    return float(np.sqrt(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum()))


# ---- sharpness -----------------------------------------------------------------------------------------------


def gradient_magnitude(img: np.ndarray) -> np.ndarray:
    """Per-pixel gradient magnitude of a YX image in [0, 1], in intensity per pixel: sqrt(gy^2 + gx^2).

    The paper does not define its gradient; we take numpy's central differences (f[i+1] - f[i-1]) / 2,
    one-sided differences at the borders (``np.gradient``). Inside the image the magnitude is at most
    sqrt(2)/2; at the borders it can reach sqrt(2).
    """
    img = _unit(img)
    if min(img.shape) < 2:
        raise ValueError(f"gradients need at least 2 px a side, got {img.shape}")
    grad_y, grad_x = np.gradient(img)
    return np.hypot(grad_y, grad_x)


def mean_abs_gradient(img: np.ndarray) -> float:
    """Average absolute gradient (the paper's Table 2): mean of :func:`gradient_magnitude`, intensity per pixel."""
    return float(gradient_magnitude(img).mean())


def gradient_histogram(img: np.ndarray, bins: int | np.ndarray = GRADIENT_EDGES) -> np.ndarray:
    """Counts of :func:`gradient_magnitude` (the paper's Fig. 6) in fixed bins; they sum to the pixel count.

    ``bins``: bin edges (intensity per pixel), :data:`GRADIENT_EDGES` by default, or a number of equal
    bins on [0, 1]; never derived from the data, so histograms of different images and methods are
    comparable. Magnitudes outside the edges are counted in the nearest end bin (with the default edges:
    magnitudes above 1, only possible at the borders, go to the last bin).
    """
    edges = np.linspace(0.0, 1.0, bins + 1) if np.isscalar(bins) else np.asarray(bins, dtype=np.float64)
    magnitude = np.clip(gradient_magnitude(img), edges[0], edges[-1])
    return np.histogram(magnitude, bins=edges)[0]


def fm(img: np.ndarray, threshold: float = 1000.0) -> float:
    """Frequency-domain image sharpness measure FM of De & Masilamani (2013), a fraction in [0, 1].

    F = fftshift(fft2(img)), AF = |F|, M = max(AF), TH = number of AF > M / threshold, FM = TH / (rows cols):
    the fraction of frequencies carrying more than 1/threshold of the strongest one (higher = sharper).
    For images in [0, 1] M is the DC term, sum(img), so FM does not change if intensities are multiplied
    by a constant but does with an offset: compare only images in the same intensity domain. A constant
    image c > 0 gives 1 / (rows cols) (only DC), an all-zero image 0.
    """
    img = _unit(img)
    spectrum = np.abs(np.fft.fft2(img))  # fftshift only reorders the frequencies: it does not change the count
    return float(np.count_nonzero(spectrum > spectrum.max() / threshold) / img.size)


def radial_bins(shape: tuple[int, int], n_bins: int) -> np.ndarray:
    """For each frequency of a YX FFT of ``shape`` (numpy's order), its radial bin: ``i`` for ``[i, i + 1) * 0.5 /
    n_bins`` cycles per pixel, ``n_bins`` for the corners beyond 0.5."""
    rho = np.hypot(*np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing="ij"))
    return np.minimum((rho / 0.5 * n_bins).astype(int), n_bins)


def radial_frequencies(n_bins: int) -> np.ndarray:
    """The centres of :func:`radial_bins`' ``n_bins`` bins, in cycles per pixel."""
    return (np.arange(n_bins) + 0.5) * 0.5 / n_bins


def radial_power(img: np.ndarray, n_bins: int = 32) -> np.ndarray:
    """Radially averaged power spectrum of a YX image's variation about its mean (Hann window): ``n_bins`` values,
    bin ``i`` the frequencies ``[i, i + 1) * 0.5 / n_bins`` cycles per pixel (the corners beyond 0.5 left out)."""
    a = np.asarray(img, dtype=np.float64)
    ny, nx = a.shape
    power = np.abs(np.fft.fft2((a - a.mean()) * np.outer(np.hanning(ny), np.hanning(nx)))) ** 2
    bins = radial_bins(a.shape, n_bins).ravel()
    total = np.bincount(bins, power.ravel(), n_bins + 1)[:n_bins]
    return total / np.maximum(np.bincount(bins, minlength=n_bins + 1)[:n_bins], 1)


def power_ratio(output: np.ndarray, target: np.ndarray, n_bins: int = 16) -> np.ndarray:
    """``output``'s :func:`radial_power` over ``target``'s, per frequency bin: two YX images of the same shape in the
    same intensity range; above 1 where the output holds more detail (or noise) than the target, below where less."""
    a, b = _pair(output, target)
    p, q = radial_power(a, n_bins), radial_power(b, n_bins)
    floor = 1e-12 * max(float(q.max()), float(p.max()), 1e-300)  # a flat image: no power, not 0 / 0
    return (p + floor) / (q + floor)


def spectral_error(output: np.ndarray, target: np.ndarray, n_bins: int = 16) -> float:
    """How far ``output``'s detail is from ``target``'s at every scale: the mean over the frequency bins (but the
    lowest, the image's shading) of ``|log2|`` of their :func:`power_ratio`. 0: the same spectrum; 1: on average
    twice or half the target's power. A smoothed output and an over-sharpened one both score above 0, where a mean
    gradient rises with noise as with detail."""
    return float(np.mean(np.abs(np.log2(power_ratio(output, target, n_bins)[1:]))))


# ---- PIQE ----------------------------------------------------------------------------------------------------


def _piqe_blocks(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PIQE of a batch (N, H, W) in [0, 1]: scores (N,) and block masks (N, rows, cols) active, artifact, noise.

    Follows MATLAB's piqe.m (Image Processing Toolbox, 2018) step by step, vectorised over images and blocks:
    pad to a multiple of 16 by replicating the last row/column ('replicate', 'post'), every block of the
    padded image counts; round(255 * im2double(I)); MSCN (I - mu) / (sigma + 1) with mu and sigma from a
    7x7 Gaussian of sigma 7/6 with replicate borders; then per 16x16 block the activity, noticeable-artifact
    and noise criteria, and the pooled score.
    """
    n, height, width = images.shape
    pad_rows, pad_cols = -height % _PIQE_BLOCK, -width % _PIQE_BLOCK
    if pad_rows or pad_cols:
        images = np.pad(images, ((0, 0), (0, pad_rows), (0, pad_cols)), mode="edge")
    img = np.floor(255.0 * images + 0.5)  # MATLAB's round (half away from zero) for x >= 0

    def gauss(x):
        return correlate1d(correlate1d(x, _PIQE_GAUSS, axis=1, mode="nearest"), _PIQE_GAUSS, axis=2, mode="nearest")

    mu = gauss(img)
    sigma = np.sqrt(np.abs(gauss(img * img) - mu * mu))
    mscn = (img - mu) / (sigma + 1.0)

    size = _PIQE_BLOCK
    rows, cols = mscn.shape[1] // size, mscn.shape[2] // size
    blocks = np.ascontiguousarray(mscn.reshape(n, rows, size, cols, size).swapaxes(2, 3))  # (N, rows, cols, 16, 16)
    variance = blocks.reshape(n, rows, cols, size * size).var(axis=-1, ddof=1)
    active = variance > _PIQE_ACTIVITY

    # noticeable artifacts: some run of 6 pixels along a block edge (top, right, bottom, left) is almost flat
    edges = np.stack([blocks[..., 0, :], blocks[..., :, -1], blocks[..., -1, :], blocks[..., :, 0]], axis=-2)
    segment_std = edges[..., _PIQE_SEGMENTS].std(axis=-1, ddof=1)  # (N, rows, cols, 4 edges, 11 segments)
    artifact = (segment_std < _PIQE_IMPAIRED).any(axis=(-2, -1))

    # Gaussian noise: block std against the ratio of the std of the two centre columns (8 and 9, 1-based) to the
    # std of the surround; piqe.m deletes column 8 and then column 9 of what is left, i.e. columns 8 and 10
    block_sigma = np.sqrt(variance)
    centre = blocks[..., size // 2 - 1 : size // 2 + 1]
    surround = np.delete(blocks, [size // 2 - 1, size // 2 + 1], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = centre.std(axis=(-2, -1), ddof=1) / surround.std(axis=(-2, -1), ddof=1)
        ratio[np.isnan(ratio)] = 0.0  # 0/0; x/0 stays inf, and then beta is NaN: no noise, as in MATLAB
        beta = np.abs(block_sigma - ratio) / np.maximum(block_sigma, ratio)
        noise = block_sigma > 2 * beta

    distortion = np.where(active, artifact * (1 - variance) + noise * variance, 0.0)
    scores = (distortion.sum(axis=(1, 2)) + _PIQE_C) / (_PIQE_C + active.sum(axis=(1, 2))) * 100
    return scores, active, artifact & active, noise & active


def piqe_many(images: np.ndarray) -> np.ndarray:
    """:func:`piqe` of every image of a batch (..., H, W) of equal-sized images in [0, 1]: scores (...).

    Small images (e.g. 29x128 vertical sections) are scored a few at a time, about twice as fast as one
    by one; larger batches are slower again once they no longer fit in the CPU cache.
    """
    images = _unit(images, ndim=None)
    if images.ndim < 2:
        raise ValueError(f"expected images (..., H, W), got shape {images.shape}")
    lead, (height, width) = images.shape[:-2], images.shape[-2:]
    flat = images.reshape(-1, height, width)
    step = max(1, _PIQE_CHUNK_PIXELS // (height * width))
    scores = [_piqe_blocks(flat[start : start + step])[0] for start in range(0, len(flat), step)]
    return np.concatenate(scores).reshape(lead)


def piqe(img: np.ndarray) -> float:
    """PIQE no-reference quality score of a YX image in [0, 1], as MATLAB's ``piqe``: 0 (best) to 100 (worst).

    Venkatanath et al. (2015): the MSCN image is cut into non-overlapping 16x16 blocks; blocks whose
    variance exceeds 0.1 are "active"; an active block is distorted by a noticeable artifact (weight
    1 - variance) if a run of 6 pixels along one of its edges has a std below 0.1, and by noise (weight
    variance) if its std exceeds twice its centre-surround deviation; score = (sum of block weights + 1) /
    (number of active blocks + 1) * 100. A constant image has no active block and scores 100.

    Intensities: MATLAB computes round(255 * im2double(I)), so a float image x in [0, 1] and the uint8
    image round(255 x) score the same: the thresholds are meant for 0-255 integer levels. Sizes that are
    not a multiple of 16 are padded at the bottom/right by repeating the last row/column (128x29 ->
    128x32) and the padded blocks count like any other, as in MATLAB.
    """
    return float(_piqe_blocks(_unit(img)[None])[0][0])


def piqe_maps(img: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`piqe` score and MATLAB's masks (bool, the image's shape): active, noticeable-artifact and noise blocks."""
    img = _unit(img)
    scores, *masks = _piqe_blocks(img[None])
    ones = np.ones((_PIQE_BLOCK, _PIQE_BLOCK), dtype=bool)
    pixel_masks = [np.kron(mask[0], ones)[: img.shape[0], : img.shape[1]] for mask in masks]
    return float(scores[0]), *pixel_masks
