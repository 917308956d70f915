"""Inference around MONAI's sliding-window evaluator: input checks, weights, and writing outputs."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import threading
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer, SlidingWindowInferer
from monai.transforms import MapTransform
from scripts.data.atomic import write_text_atomic
from scripts.data.io import (
    IMAGE_SUFFIXES,
    STACK_SUFFIXES,
    cast_to,
    list_files,
    plain_meta,
    read_image,
    read_stack,
    write_image,
    write_stack,
)
from scripts.data.transforms import RobustNormalised, percentile_range
from scripts.errors import InputError
from scripts.nets.networks import focal_plane, focus_guided, receptive_reach

logger = logging.getLogger("zsegan")

PRECISIONS = ("float32", "float16", "bfloat16")


def _suffix(path: Path) -> str:
    suffixes = sorted(set(STACK_SUFFIXES + IMAGE_SUFFIXES), key=len, reverse=True)
    return next((s for s in suffixes if path.name.lower().endswith(s)), "")


def output_path(input_path: str | Path, output_dir: str | Path, postfix: str = "_enhanced") -> Path:
    """``<output_dir>/<name><postfix><suffix>``: same format as the input, never the input itself."""
    input_path = Path(input_path)
    suffix = _suffix(input_path)
    out = Path(output_dir) / f"{input_path.name[: len(input_path.name) - len(suffix)]}{postfix}{suffix}"
    if out.resolve() == input_path.resolve():
        raise InputError(out, "output would overwrite the input: choose another output_dir or postfix")
    return out


def without_outputs(inputs: list[Path], outputs_of) -> list[Path]:
    """``inputs`` less those that are the output of another input (``outputs_of(path)``: its output paths), so
    that a run whose output_dir is its input folder does not enhance the outputs of the run before."""
    made = {out.resolve() for f in inputs for out in outputs_of(f)}
    kept = [f for f in inputs if f.resolve() not in made]
    for f in sorted(set(inputs) - set(kept)):
        logger.info(f"skipped {f}: it is the output of another input")
    return kept


def inference_datalist(
    input_path: str | Path, output_dir: str | Path | None = None, postfix: str = "_enhanced", ndim: int = 3
) -> list[dict[str, str]]:
    """Every stack (``ndim`` 3) or 2D image (``ndim`` 2) of a file or folder, listed, not read. With
    ``output_dir``, the inputs that are outputs of the others (``output_dir`` the input folder, enhanced before)
    are left out.

    An ``input_path`` that does not exist lists nothing: parsing an inference config (MONAI's and the model zoo's
    property checks build its dataset with the default input, which a bundle need not have) reads no input.
    ``check_inputs``, the first step of running it, refuses such a path before anything is written.
    """
    if not Path(input_path).exists():
        return []
    files = list_files(input_path, STACK_SUFFIXES if ndim == 3 else IMAGE_SUFFIXES)
    if output_dir is not None:
        files = without_outputs(files, lambda f: [output_path(f, output_dir, postfix)])
    return [{"image": str(f)} for f in files]


def check_inputs(
    datalist: list[dict[str, str]],
    input_path: str | Path,
    min_planes: int = 1,
    lower: float = 0.5,
    upper: float = 99.5,
    ndim: int = 3,
    planes: int | None = None,
) -> list[dict[str, str]]:
    """Read and check every input of ``datalist`` (``inference_datalist(input_path, ...)``) before any output is
    written: its values and, with the ``lower``/``upper`` percentiles, its intensity range; with ``planes`` (a G that
    takes z-stacks of that many planes as channels, ``--input_planes``), its number of planes. InputError naming the
    file for the first bad one, and for an ``input_path`` that lists nothing (no such file or folder)."""
    if not datalist:  # inference_datalist lists nothing only where input_path did not exist
        raise InputError(input_path, "no such file or folder: check the path")
    for i, item in enumerate(datalist, 1):
        f = item["image"]
        array, _ = read_stack(f, min_planes=min_planes) if ndim == 3 else read_image(f)
        if planes is not None and array.shape[0] != planes:
            raise InputError(f, f"has {array.shape[0]} planes, but G takes z-stacks of input_planes {planes}")
        percentile_range(array, lower, upper, str(f))  # (almost) constant intensity: nothing to enhance
        logger.info(f"checked input {i}/{len(datalist)}: {f}")
    return datalist


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (G_S's stride lattice, its ``2 ** n_downsampling``)."""
    return -(-n // multiple) * multiple


def auto_overlap(network: torch.nn.Module) -> int:
    """The overlap in pixels that a window-independent G_S (``--g_norm batch``, eval mode) needs: twice its
    receptive reach (:func:`~scripts.nets.networks.receptive_reach`), so that every pixel lies at least the
    reach inside the window whose centre is nearest, rounded up to the network's ``multiple`` (its
    ``2 ** n_downsampling``), so that windows stay on its stride lattice. 132 px for the default G_S."""
    multiple = getattr(network, "multiple", 1)
    return round_up(2 * receptive_reach(network), multiple)


def window_overlap(
    roi_size, overlap: float = 0.25, overlap_px: int | str | None = None, network: torch.nn.Module | None = None
) -> float | tuple[float, ...]:
    """The ``overlap`` to give MONAI's sliding window for windows of ``roi_size`` ((Z,) Y, X; -1: the full size).

    ``overlap_px`` None: ``overlap`` itself, a fraction of the window along every axis (MONAI's meaning). Else the
    windows overlap by ``overlap_px`` pixels along y and x, whatever their size, so that larger windows are not
    penalised (a fraction of 0.25 is 32 px of a 128-px window but 128 px of a 512-px one): per axis the fraction
    with which MONAI's step, ``int(r * (1 - fraction))``, is exactly ``r - overlap_px``; along z (planes) the
    windows keep ``overlap``. An axis the window covers whole (-1) needs none. ``overlap_px`` "auto": the
    overlap of :func:`auto_overlap` for ``network`` (G_S; not needed otherwise). InputError when ``overlap_px``
    is not below a window's size."""
    if overlap_px is None:
        return overlap
    name = repr(overlap_px)
    if overlap_px == "auto":
        if network is None:
            return overlap  # checking the command line: the network is built later
        overlap_px = auto_overlap(network)
        name = f"auto ({overlap_px} px, twice G_S's reach)"
    fractions = [float(overlap)] * (len(roi_size) - 2)
    for r in roi_size[-2:]:
        if r is None or r <= 0:
            fractions.append(0.0)
            continue
        if not 0 <= overlap_px < r:
            raise InputError(None, f"--sw_overlap_px {name}: must be below the window's {r} px (--sw_roi_size)")
        fraction = overlap_px / r
        while int(r * (1 - fraction)) < r - overlap_px:  # rounded down a pixel short: take the next float below
            fraction = math.nextafter(fraction, 0.0)
        fractions.append(fraction)
    return tuple(fractions)


#: how the sliding window joins its windows (``--sw_tiling``): MONAI's blending, or exact halo tiling
TILINGS = ("blend", "halo")


def halo_width(overlap_px: int | str | None, network: torch.nn.Module | None = None, multiple: int | None = None):
    """The halo of ``--sw_tiling halo``: half of ``overlap_px`` (a multiple of twice G_S's ``multiple``, its
    ``2 ** n_downsampling``), or for ``overlap_px`` None or "auto" G_S's receptive reach
    (:func:`~scripts.nets.networks.receptive_reach`) rounded up to ``multiple`` (68 px for the default G_S);
    None where that needs ``network`` and it is not given (checking the command line). InputError for an
    ``overlap_px`` that is not twice a halo on the lattice."""
    multiple = multiple or getattr(network, "multiple", 4)
    if overlap_px in (None, "auto"):
        return None if network is None else round_up(receptive_reach(network), multiple)
    if overlap_px % (2 * multiple):
        raise InputError(
            None, f"--sw_overlap_px {overlap_px}: with --sw_tiling halo it must be twice a halo that is a multiple "
            f"of {multiple} (a multiple of {2 * multiple}), or auto (twice G_S's reach)",
        )  # fmt: skip
    return overlap_px // 2


def sliding_window(
    tiling: str,
    roi_size,
    sw_batch_size: int = 1,
    overlap: float = 0.25,
    overlap_px: int | str | None = None,
    mode: str = "gaussian",
    network: torch.nn.Module | None = None,
    progress: bool = False,
) -> Inferer:
    """The configs' sliding window (``--sw_tiling``): ``blend``, :class:`SlidingWindow` (MONAI's) with windows of
    ``roi_size`` overlapping by :func:`window_overlap` and blended by ``mode``; ``halo``, :class:`HaloInferer`
    with the halo of :func:`halo_width` (``overlap`` and ``mode`` unused), exact for a window-independent G_S
    (``--g_norm batch``). ``network``: G_S, for its reach and stride (``network_def``). One InputError line for
    a bad ``tiling`` or a window that does not fit."""
    if tiling == "blend":
        overlap = window_overlap(roi_size, overlap, overlap_px, network)
        return SlidingWindow(roi_size, sw_batch_size, overlap, mode=mode, progress=progress)
    if tiling != "halo":
        raise InputError(None, f"--sw_tiling {tiling!r}: must be one of {', '.join(TILINGS)}")
    if network is None:
        raise ValueError("sw_tiling halo needs the network (its reach and stride)")
    if any(isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) for m in network.modules()):
        logger.warning(
            "--sw_tiling halo with instance norms in G_S: each window's output depends on the whole window, so "
            "tiles can disagree at their borders (halo tiling is exact for --g_norm batch)"
        )
    multiple = getattr(network, "multiple", 4)
    return HaloInferer(roi_size, halo_width(overlap_px, network, multiple), multiple, sw_batch_size)


class _StackFocus:
    """What both sliding windows do for a focus-guided G_S (``--g_focus_guide true``; for any other network they
    run its ``windows`` as they are): find each stack's focal plane once, over the whole field
    (:func:`~scripts.nets.networks.focal_plane`), or take the one given (``focus``: a whole slide's, found before
    its tiles), and hand it to every window. Every window then borrows the same plane, so the tiling does not
    change the output (found per window, neighbouring windows could borrow different planes). The windows must
    span all planes (``--sw_roi_size`` starting with -1): one InputError line otherwise."""

    roi_size: tuple

    def windows(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, inputs: torch.Tensor, network, *args, focus=None, **kwargs) -> torch.Tensor:
        """network over ``inputs`` (B,C,Z,Y,X, or B,C,Y,X for 2D networks) window by window."""
        if not focus_guided(network):
            return self.windows(inputs, network, *args, **kwargs)
        depth = int(self.roi_size[-3]) if len(self.roi_size) >= 3 else 0
        if 0 < depth < inputs.shape[2]:
            raise InputError(
                None, f"--sw_roi_size {list(self.roi_size)}: G_S is focus-guided (--g_focus_guide true), so each "
                f"window must hold all {inputs.shape[2]} planes: start it with -1",
            )  # fmt: skip
        focus = focal_plane(inputs) if focus is None else torch.as_tensor(focus, device=inputs.device).reshape(-1)
        focus = focus.expand(inputs.shape[0])
        outputs = [
            self.windows(inputs[i : i + 1], network, *args, focus=focus[i : i + 1], **kwargs)
            for i in range(inputs.shape[0])
        ]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


class SlidingWindow(_StackFocus, SlidingWindowInferer):
    """MONAI's ``SlidingWindowInferer`` (windows blended), handing a focus-guided G_S its stack's focal plane
    (:class:`_StackFocus`). Everything else as MONAI's; the bundle's configs build it through :func:`sliding_window`."""

    def windows(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        """MONAI's sliding window over ``inputs``."""
        return SlidingWindowInferer.__call__(self, inputs, network, *args, **kwargs)


def _halo_windows(n: int, r: int, halo: int) -> list[tuple[int, int, int]]:
    """Along one axis of ``n`` pixels: (start, keep from, keep to) of each window of ``r`` (-1 or >= n: one
    window) at MONAI's positions for an overlap of ``2 * halo`` (every ``r - 2 * halo``, the last flush with
    the end), each kept from ``halo`` inside its edges (from the edge itself at the image's border)."""
    if r <= 0 or r >= n:
        return [(0, 0, n)]
    starts = [*range(0, n - r, r - 2 * halo), n - r]
    return [(s, s + halo if s else 0, s + r - halo if s + r < n else n) for s in starts]


class HaloInferer(_StackFocus, Inferer):
    """Exact tiling for a window-independent network (``--g_norm batch`` in eval mode, ``--sw_tiling halo``):
    windows of ``roi_size`` along y and x (over all planes) at MONAI's positions for an overlap of
    ``2 * halo``, each kept only from ``halo`` inside its edges (from the edge itself at the image's border),
    nothing blended. With ``halo`` at least the network's reach (:func:`~scripts.nets.networks.receptive_reach`)
    every output pixel is computed with all the input it depends on, so the result equals one window over the
    whole field. For that the windows must lie on the network's stride lattice (``multiple``, G_S's
    ``2 ** n_downsampling``) as the whole field's does: y and x are padded as G_S pads them (replicate, centred,
    to a multiple of ``multiple``), tiled, and cropped back; ``halo`` and the window are multiples of it.
    ``sw_batch_size`` windows go through the network at a time (all windows have one shape). A focus-guided G_S
    gets its stack's focal plane (:class:`_StackFocus`).
    """

    def __init__(self, roi_size, halo: int, multiple: int = 4, sw_batch_size: int = 1):
        super().__init__()
        self.roi_size, self.halo, self.multiple = tuple(int(r) for r in roi_size), int(halo), int(multiple)
        self.sw_batch_size = int(sw_batch_size)
        if any(r > 0 for r in self.roi_size[:-2]):
            raise InputError(
                None,
                f"--sw_tiling halo runs windows over all planes: --sw_roi_size {list(roi_size)} must start with -1",
            )
        windows = [r for r in self.roi_size[-2:] if r > 0]
        if self.halo < 0 or self.halo % multiple or any(r % multiple or r <= 2 * self.halo for r in windows):
            raise InputError(
                None, f"--sw_tiling halo: the halo ({halo} px) and the window's y, x {list(self.roi_size[-2:])} (-1: "
                f"all) must be multiples of {multiple}, the window larger than twice the halo (--sw_roi_size)",
            )  # fmt: skip
        #: MONAI's overlap for the same windows (what counts them, e.g. the napari plugin's progress)
        self.overlap = window_overlap(self.roi_size, 0.0, 2 * self.halo) if windows else 0.0

    def windows(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        """network over ``inputs`` (B,C,...,Y,X) window by window; B,C_out,...,Y,X."""
        sizes, m = inputs.shape[-2:], self.multiple
        targets = [round_up(n, m) for n in sizes]
        before = [(t - n) // 2 for t, n in zip(targets, sizes, strict=True)]
        # F.pad: (x before, x after, y before, y after, then the other axes: none); as Generator3D.forward pads
        pads = [before[1], targets[1] - sizes[1] - before[1], before[0], targets[0] - sizes[0] - before[0]]
        padded = F.pad(inputs, pads + [0, 0] * (inputs.dim() - 4), mode="replicate") if any(pads) else inputs
        axes = [_halo_windows(t, r, self.halo) for t, r in zip(targets, self.roi_size[-2:], strict=True)]
        windows = list(itertools.product(*axes))
        ry, rx = (t if r <= 0 or r >= t else r for t, r in zip(targets, self.roi_size[-2:], strict=True))
        out = None
        for i in range(0, len(windows), self.sw_batch_size):
            batch = windows[i : i + self.sw_batch_size]
            tiles = torch.cat([padded[..., y : y + ry, x : x + rx] for (y, _, _), (x, _, _) in batch])
            results = network(tiles, *args, **kwargs).split(inputs.shape[0])
            for ((y, y0, y1), (x, x0, x1)), result in zip(batch, results, strict=True):
                if out is None:
                    out = result.new_empty(result.shape[:2] + padded.shape[2:])
                out[..., y0:y1, x0:x1] = result[..., y0 - y : y1 - y, x0 - x : x1 - x]
        return out[..., before[0] : before[0] + sizes[0], before[1] : before[1] + sizes[1]]


def _state_dict(path: str | Path, device: str | torch.device = "cpu") -> Mapping[str, torch.Tensor]:
    """The plain state_dict in the weights file ``path`` (or a training checkpoint's ``g_s``); InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such weights file: train first, or pass --model_path")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(path, f"cannot read weights ({e})") from e
    if isinstance(state, Mapping) and "g_s" in state:
        state = state["g_s"]
    if not isinstance(state, Mapping):
        raise InputError(path, f"holds a {type(state).__name__}, not a state_dict of network weights")
    return state


def load_weights(network: torch.nn.Module, path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a plain state_dict (or a training checkpoint holding ``g_s``) into ``network``."""
    state = _state_dict(path, device)
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(path, f"weights do not fit the configured network ({str(e).splitlines()[0]})") from e
    return network.to(device).eval()


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state_dict's names and values: the same weights give the same digest, wherever they are."""
    h = hashlib.sha256()
    for name, value in state.items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


#: the key of the weights' digest (``weights_digest``) in a weights file's settings, and a registered version's tag
WEIGHTS_DIGEST = "weights_sha256"


def settings_path(model_path: str | Path) -> Path:
    """The settings beside a weights file: ``paired.pt`` -> ``paired.settings.json``."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.settings.json")


def write_settings(model_path: str | Path, settings: Mapping) -> Path:
    """Write ``settings`` (how the weights in ``model_path`` are applied: the registered model's settings.json,
    ``scripts.ops.registry``) beside the weights file, atomically, with the digest of those weights; returns its path.
    """
    digest = weights_digest(_state_dict(model_path))
    text = json.dumps({**settings, WEIGHTS_DIGEST: digest}, indent=2)
    return write_text_atomic(settings_path(model_path), text)


def read_settings(model_path: str | Path) -> dict:
    """The settings beside the weights file ``model_path`` (``write_settings``), or {} where there are none (weights
    written before them, or by a workflow that writes none). InputError naming the settings file when it cannot be
    read or was written for other weights than those now in ``model_path``."""
    path = settings_path(model_path)
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot read the settings of {Path(model_path).name} ({e})") from e
    if not isinstance(settings, dict):
        raise InputError(path, f"holds a {type(settings).__name__}, not the settings of {Path(model_path).name}")
    if settings.get(WEIGHTS_DIGEST) != weights_digest(_state_dict(model_path)):
        raise InputError(
            path,
            f"was written for other weights than those in {model_path}: keep each weights file with its own "
            "settings file (training writes both), or remove this one if these weights came without it",
        )
    return settings


class Accelerated(torch.nn.Module):
    """``network`` run faster, for inference: in ``precision`` ("float32", or "float16"/"bfloat16" autocast on
    the input's device: convolutions in that type, norms in float32), in channels-last 3D memory when
    ``channels_last`` (faster for cuDNN's 3D convolutions, no gain on CPU), and through ``torch.compile``
    (inductor, weights frozen as constants) when ``compile``. The output is float32 either way.

    Measured on a 2-core AMD EPYC (docs/benchmarks.md): compiling makes the float32 forward about 1.7 times
    faster, with the same output to 1e-5, after about 30 s of compiling once per process (it needs a C++
    compiler; without one, G_S runs uncompiled with a warning). bfloat16 is also faster on CPUs with
    AVX512-BF16 or AMX; it changes outputs by about 0.5 % of their range on average, up to 2 %.
    """

    def __init__(
        self, network: torch.nn.Module, precision: str = "float32", channels_last: bool = False, compile: bool = False
    ):
        super().__init__()
        if precision not in PRECISIONS:
            raise InputError(None, f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.network, self.precision = network, precision
        self.channels_last, self.compile = bool(channels_last), bool(compile)
        self._compiled: dict = {}  # not a submodule: neither in state_dict nor pickled (workers compile their own)
        if self.channels_last:
            network.to(memory_format=torch.channels_last_3d)

    _compile_lock = threading.RLock()

    def __getstate__(self):
        return {**self.__dict__, "_compiled": {}}

    def warm_up(self, shape, device: str | torch.device = "cpu") -> None:
        """Compile now, for inputs of ``shape`` (B, C, Z, Y, X), if ``compile`` is set: before tiles are read and
        threads start, so that compiling's memory is not added to theirs. Nothing otherwise."""
        if self.compile:
            with torch.no_grad():
                self(torch.zeros(shape, device=device))

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """network(x, **kwargs) in float32, computed as set (``kwargs``: e.g. a focus-guided G_S's ``focus``)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        dtype = getattr(torch, self.precision)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
            return self._forward(x, **kwargs).float()

    def _forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        if not self.compile:
            return self.network(x, **kwargs)
        # weights frozen as constants, so inductor fuses and prepacks them: 1.7x, against 1.1x without
        # (torch.compile's options={"freezing": True} is not applied; the global config is, while it is set)
        freezing = torch._inductor.config.patch(freezing=True)
        if "network" not in self._compiled:
            with self._compile_lock:  # threads (whole-slide tiles) wait for one compilation
                if not self.compile:
                    return self.network(x, **kwargs)
                if "network" not in self._compiled:
                    compiled = torch.compile(self.network)
                    try:
                        with freezing:
                            y = compiled(x, **kwargs)
                    except Exception as e:  # noqa: BLE001 - no C++ compiler, unsupported platform...
                        problem = f"{type(e).__name__}: {str(e).splitlines()[0]}"
                        logger.warning(f"torch.compile failed, G_S runs uncompiled ({problem})")
                        self.compile = False
                        return self.network(x, **kwargs)
                    self._compiled["network"] = compiled
                    return y
        with freezing:
            return self._compiled["network"](x, **kwargs)


def enhance(
    network: torch.nn.Module,
    stack: np.ndarray,
    inferer,
    normalise: RobustNormalised,
    device="cpu",
    focus=None,
    planes_as_channels: bool = False,
) -> np.ndarray:
    """G_S on one ZYX stack in its own units: ``normalise`` (the training's percentile mapping, keyed
    ``image``), ``inferer`` (e.g. the sliding window) and the inverse mapping; float32, same shape. ``focus``: the
    focal plane for a focus-guided G_S when ``stack`` is a tile of a larger one (a whole slide's); None: found
    by the inferer over ``stack``. ``planes_as_channels``: the stack's planes are the network's input channels
    (the paired G with ``input_planes``), and its one-plane output is returned as a YX image."""
    image = torch.as_tensor(np.asarray(stack, np.float32))
    data = normalise({"image": MetaTensor(image if planes_as_channels else image[None])})
    given = {} if focus is None else {"focus": focus}
    with torch.no_grad():  # the normalised input is let go as soon as G_S's output replaces it
        y = inferer(data["image"].as_tensor()[None].to(device), network, **given)[0].float().cpu()
        data["image"] = MetaTensor(y, applied_operations=data["image"].applied_operations)
    del y
    return np.asarray(normalise.inverse(data)["image"].as_tensor()[0].numpy(), dtype=np.float32)


class SaveStackd(MapTransform):
    """Write ``data[key]`` (CZYX, or CYX for a 2D image; back in input units) in the input's format, dtype,
    axes and voxel size."""

    def __init__(self, keys: str = "pred", output_dir: str = "output", postfix: str = "_enhanced"):
        super().__init__(keys)
        self.output_dir, self.postfix = output_dir, postfix

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = dict(d[key].meta)
            path = output_path(meta["filename_or_obj"], self.output_dir, self.postfix)
            array = d[key].detach().cpu().numpy()[0].astype(np.float32)
            if array.ndim == 2:
                plain = plain_meta(meta)
                spacing = plain.get("spacing")  # (z, y, x) of a z-stack of which one plane is written (input_planes)
                if Path(path).suffix.lower() in IMAGE_SUFFIXES:
                    write_image(path, cast_to(array, plain.get("dtype")), spacing and spacing[-2:])
                else:  # a z-stack format (npz, NIfTI): the plane as a stack of one
                    write_stack(path, array[None], meta)
            else:
                write_stack(path, array, meta)
            logger.info(f"wrote {path}")
        return d
