"""The napari widget: the thin magicgui part over ``zsegan_napari.enhance`` (which is tested without Qt).

Pick an image layer and the weights (empty: the shipped model; a ``.pt`` file; or a registered model
``models:/<name>@<alias>`` with its tracking store), press Enhance: G_S runs in a worker thread with a progress bar
in napari's activity dock, Cancel stops it after the current window, and the result is added as a new layer.
"""

import threading
from pathlib import Path

from magicgui import magicgui
from magicgui.widgets import Container, PushButton
from napari.layers import Image
from napari.qt.threading import FunctionWorker, create_worker
from napari.types import LayerDataTuple
from napari.utils import progress

from zsegan_napari.enhance import enhanced_layer

#: no weights file chosen: the shipped model
NO_FILE = Path("")


def enhance_widget() -> Container:
    """The Enhance z-stack widget (napari calls it to make one)."""
    cancel = threading.Event()

    @magicgui(
        call_button="Enhance",
        weights={"label": "weights file (empty: shipped)", "mode": "r", "filter": "*.pt"},
        model_uri={"label": "or registered model", "tooltip": "models:/<name>@<alias> or models:/<name>/<version>"},
        tracking_uri={"label": "MLflow store", "tooltip": "empty: the bundle's runs/train/mlflow.db"},
    )
    def enhance(
        image: Image, weights: Path = NO_FILE, model_uri: str = "", tracking_uri: str = ""
    ) -> FunctionWorker[LayerDataTuple]:
        cancel.clear()
        model = model_uri.strip() or ("" if str(weights) in ("", ".") else str(weights))
        bar = progress(total=0, desc=f"enhancing {image.name}")

        def step(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        worker = create_worker(enhanced_layer, image, model, tracking_uri.strip() or None, step, cancel.is_set)
        worker.finished.connect(bar.close)
        return worker

    stop = PushButton(text="Cancel")
    stop.changed.connect(cancel.set)
    return Container(widgets=[enhance, stop])
