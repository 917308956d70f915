"""The napari widget: the thin Qt part over ``zsegan_napari.enhance`` (whose logic is tested without Qt).

Select an image layer, pick the weights (empty: the shipped model; a ``.pt`` file; or a registered model
``models:/<name>@<alias>`` with its tracking store) and the sliding window (the inference config's by default),
press Enhance: G_S runs in a worker thread with a progress bar over the windows in napari's activity dock, Cancel
stops it after the current window, and the result is added to the viewer as a new layer with the input's voxel size.
napari hands the widget its viewer (``napari_viewer``); any ``ViewerModel`` does, a window is not needed.
"""

from __future__ import annotations

import threading
from pathlib import Path

from magicgui.widgets import Container, FileEdit, FloatSpinBox, LineEdit, PushButton, SpinBox
from napari.layers import Layer
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from superqt.utils import ensure_main_thread

from zsegan_napari.enhance import CancelledError, enhanced_layer, inference_config, parsed, selected_image

#: the widget's default window (y and x, px): it blends windows (MONAI's sliding window, its window and overlap
#: boxes), where ``inference`` tiles 256-px windows exactly by default (halo tiling, which needs windows over 64 px)
BLEND_WINDOW = 128


class EnhanceWidget(Container):
    """Enhance z-stack (ZSE-GAN): G_S on the viewer's selected image layer, in a worker thread, cancellable."""

    def __init__(self, napari_viewer) -> None:
        config = inference_config()
        overlap = parsed(config, "sw_overlap")
        super().__init__(
            widgets=[
                FileEdit(name="weights", label="weights file (empty: shipped)", mode="r", filter="*.pt"),
                LineEdit(
                    name="model_uri",
                    label="or registered model",
                    tooltip="models:/<name>@<alias> or models:/<name>/<version>",
                ),
                LineEdit(name="tracking_uri", label="MLflow store", tooltip="empty: the bundle's runs/train/mlflow.db"),
                SpinBox(
                    name="window", label="window (y, x px)", value=BLEND_WINDOW, min=8, max=8192, tooltip="all of Z"
                ),
                FloatSpinBox(name="overlap", label="window overlap", value=overlap, min=0.0, max=0.9, step=0.05),
                PushButton(name="enhance", text="Enhance selected layer"),
                PushButton(name="cancel", text="Cancel", enabled=False),
            ]
        )
        self.viewer = napari_viewer
        self.cancelled = threading.Event()
        self.bar: progress | None = None  # the last run's progress bar
        self.enhance.changed.connect(self.start)
        self.cancel.changed.connect(self.cancelled.set)

    def model(self) -> str:
        """The weights to use as ``enhance.inference_config`` takes them: a model URI, a file, or "" (shipped)."""
        weights = str(self.weights.value or "")
        return self.model_uri.value.strip() or ("" if weights in ("", ".") or Path(weights).is_dir() else weights)

    def start(self) -> FunctionWorker | None:
        """Enhance the selected image layer in a worker thread (returned; None where no image layer is selected)."""
        from scripts.errors import InputError  # the bundle's, importable once inference_config found it

        try:
            layer = selected_image(self.viewer)
        except InputError as e:
            show_error(str(e))
            return None
        self.cancelled.clear()
        self.enhance.enabled, self.cancel.enabled = False, True
        bar = self.bar = progress(total=0, desc=f"enhancing {layer.name}")

        @ensure_main_thread  # the worker reports; the bar is updated in the GUI thread
        def step(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        def finished() -> None:
            bar.close()
            self.enhance.enabled, self.cancel.enabled = True, False

        window = [-1, self.window.value, self.window.value]  # blended windows, as the window and overlap boxes say
        settings = {
            "sw_roi_size": window,
            "sw_overlap": self.overlap.value,
            "sw_tiling": "blend",
            "sw_overlap_px": None,
        }
        return create_worker(
            enhanced_layer,
            layer,
            self.model(),
            self.tracking_uri.value.strip() or None,
            step,
            self.cancelled.is_set,
            **settings,
            _connect={"returned": self.add, "errored": self.failed, "finished": finished},
        )

    def add(self, data: tuple) -> Layer:
        """Add the enhanced layer (data, kwargs, type) to the viewer."""
        return self.viewer.add_layer(Layer.create(*data))

    @staticmethod
    def failed(error: Exception) -> None:
        """A cancelled run or bad input (weights, model URI, stack) as one line; anything else raised to napari."""
        from scripts.errors import InputError

        if isinstance(error, CancelledError):
            show_info(str(error))
        elif isinstance(error, InputError):
            show_error(str(error))
        else:
            raise error
