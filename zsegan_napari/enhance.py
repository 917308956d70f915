"""The widget's logic, without Qt: G_S on a napari image layer through the bundle's inference config.

``enhance_stack`` builds what ``inference.yaml`` builds (network with its weights, sliding window, intensity
mapping) and runs the bundle's ``sliding_window.enhance`` on one ZYX stack, reporting the windows done and stopping
when asked. ``enhanced_layer`` wraps it for an image layer (same scale, translation and units);
``enhance_selected`` adds the result to a viewer (napari's ``ViewerModel`` or its window); the widget runs the same
on ``selected_image`` in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from zsegan_napari import bundle_dir

#: ``progress(done, total)``: sliding windows run so far and in all
Progress = Callable[[int, int], Any]


class CancelledError(Exception):
    """The enhancement was cancelled before it finished."""


def inference_config(model: str = "", tracking_uri: str | None = None, **settings):
    """``inference.yaml`` parsed by MONAI with ``settings`` (any of its keys) and the weights of ``model``: "" the
    bundle's shipped ``models/model.pt``, ``models:/<name>@<alias>`` (or ``/<version>``) a registered model in
    ``tracking_uri`` (default: training's store), anything else a weights file."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir() / "configs" / "inference.yaml"))
    if model.startswith("models:/"):
        settings["model_uri"] = model
    elif model:
        settings["model_path"] = model
    if tracking_uri:
        settings["tracking_uri"] = tracking_uri
    parser.update(settings)
    return parser


def parsed(parser, key: str):
    """``parser``'s ``key``, built; bad input (weights, model URI...) raised as the InputError itself, not as MONAI's
    wrapping of it."""
    from scripts.errors import find_input_error

    try:
        return parser.get_parsed_content(key)
    except Exception as e:
        found = find_input_error(e)
        if found is None:
            raise
        raise found from None


def window_count(shape: tuple[int, ...], inferer) -> int:
    """How many windows MONAI's ``SlidingWindowInferer`` runs on a stack of ``shape`` (ZYX)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval
    from monai.utils import ensure_tuple_rep, fall_back_tuple

    roi = fall_back_tuple(inferer.roi_size, shape)
    padded = tuple(max(s, r) for s, r in zip(shape, roi, strict=True))  # smaller stacks are padded to the window
    return len(
        dense_patch_slices(
            padded, roi, _get_scan_interval(padded, roi, len(shape), ensure_tuple_rep(inferer.overlap, len(shape)))
        )
    )


def enhance_stack(
    stack: np.ndarray,
    model: str = "",
    tracking_uri: str | None = None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
    name: str = "stack",
    **settings,
) -> np.ndarray:
    """G_S's enhancement of ``stack`` (ZYX, in its own units) as ``bundle/configs/inference.yaml`` computes it, float32.

    ``model`` and ``settings`` as in ``inference_config``. ``progress(done, total)`` is called after each batch of
    windows; ``cancelled()`` is asked before each and raises ``CancelledError`` when true. InputError (naming ``name``)
    for a stack that is not ZYX, too thin, not finite or of (almost) constant intensity; or for bad weights.
    """
    from scripts.data.io import check_values
    from scripts.data.transforms import RobustNormalised, percentile_range
    from scripts.errors import InputError
    from scripts.inference.sliding_window import enhance
    from scripts.nets.networks import focus_guided

    parser = inference_config(model, tracking_uri, **settings)
    lower, upper, min_planes = (parsed(parser, k) for k in ("intensity_lower", "intensity_upper", "min_planes"))
    stack = np.asarray(stack)
    if stack.ndim != 3 or stack.shape[0] < min_planes:
        raise InputError(name, f"G_S needs a ZYX stack of at least {min_planes} planes, not shape {stack.shape}")
    check_values(name, stack)
    percentile_range(stack, lower, upper, name)
    network, inferer = parsed(parser, "network"), parsed(parser, "inferer")
    total, done = window_count(stack.shape, inferer), 0

    def watched(windows, **kwargs):
        nonlocal done
        if cancelled is not None and cancelled():
            raise CancelledError(f"{name}: enhancement cancelled after {done} of {total} windows")
        out = network(windows, **kwargs)
        done += windows.shape[0]
        if progress is not None:
            progress(done, total)
        return out

    watched.focus_guide = focus_guided(network)  # the sliding window then hands it the stack's focal plane
    normalise = RobustNormalised("image", lower, upper)
    return enhance(watched, stack, inferer, normalise, parsed(parser, "device"))


def enhanced_layer(layer, model: str = "", tracking_uri: str | None = None, progress=None, cancelled=None, **settings):
    """napari layer data (``(data, kwargs, "image")``) of G_S on the image ``layer``: named ``<name>_enhanced``,
    with the layer's scale (voxel size), translation and units, and the model in its metadata."""
    data = enhance_stack(np.asarray(layer.data), model, tracking_uri, progress, cancelled, layer.name, **settings)
    kwargs = {
        "name": f"{layer.name}_enhanced",
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "units": tuple(layer.units),
        "metadata": {**dict(layer.metadata), "zsegan_model": model or "shipped models/model.pt"},
    }
    return data, kwargs, "image"


def selected_image(viewer):
    """The viewer's selected (active) image layer; InputError where none is, or another kind of layer."""
    from napari.layers import Image
    from scripts.errors import InputError

    layer = viewer.layers.selection.active
    if not isinstance(layer, Image):
        raise InputError(None, "select one image layer (a ZYX stack) to enhance")
    return layer


def enhance_selected(
    viewer, model: str = "", tracking_uri: str | None = None, progress=None, cancelled=None, **settings
):
    """Enhance the viewer's selected image layer and add the result to it; returns the new layer."""
    from napari.layers import Layer

    layer = selected_image(viewer)
    return viewer.add_layer(Layer.create(*enhanced_layer(layer, model, tracking_uri, progress, cancelled, **settings)))
