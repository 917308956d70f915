"""The napari plugin (zsegan_napari), headless: its npe2 manifest, the widget's logic on napari's ``ViewerModel``
(no Qt), the reader, and the Qt widget itself (offscreen Qt: PyQt5 and pytest-qt come with the ``dev`` extra): built,
run on a small stack, cancelled, given bad input, and found by napari's window (never shown). The widget's tests
are skipped, saying so, where no Qt binding is installed."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from monai.utils import path_to_sqlite_uri
from scripts.data.io import write_stack
from scripts.data.transforms import RobustNormalised
from scripts.errors import InputError
from scripts.inference.sliding_window import SlidingWindow, enhance, load_weights
from scripts.nets.architecture import DEFAULTS, GENERATOR_KEYS, default_generator, generator_args
from scripts.ops.registry import log_generator, register_generator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the Qt widget's tests: headless, no display needed
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the plugin's package, also where the project is not installed

from zsegan_napari import enhance as plugin  # noqa: E402
from zsegan_napari.reader import get_reader  # noqa: E402

SHIPPED = ROOT / "bundle" / "models" / "model.pt"
# small blended windows: several of them on a small stack (inference.yaml's halo tiling needs windows over 64 px)
SMALL = {"sw_roi_size": [-1, 32, 32], "sw_overlap": 0.25, "sw_tiling": "blend", "sw_overlap_px": None}


def stack(shape=(6, 48, 40), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(100, 4000, shape).astype(np.float32)


def test_the_npe2_manifest_is_valid_and_names_what_the_package_defines():
    npe2 = pytest.importorskip("npe2", reason="npe2 (pip install -e '.[napari]') validates the manifest")
    manifest = npe2.PluginManifest.from_file(ROOT / "zsegan_napari" / "napari.yaml")
    assert manifest.name == "zsegan" and manifest.contributions.widgets and manifest.contributions.readers
    for command in manifest.contributions.commands:  # by reading the code: the widget's module needs Qt to import
        module, name = command.python_name.split(":")
        tree = ast.parse((ROOT / Path(*module.split("."))).with_suffix(".py").read_text())
        defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        assert name in defined, command.python_name
    assert 'zsegan = "zsegan_napari:napari.yaml"' in (ROOT / "pyproject.toml").read_text()  # napari finds it


def test_enhance_stack_is_the_bundles_inference_with_progress_over_every_window():
    x, calls = stack(), []
    y = plugin.enhance_stack(x, progress=lambda done, total: calls.append((done, total)), **SMALL)
    network = load_weights(default_generator(), SHIPPED)
    inferer = SlidingWindow([-1, 32, 32], 1, 0.25, mode="gaussian")  # the stack's focal plane in every window
    expected = enhance(network, x, inferer, RobustNormalised("image", 0.5, 99.5))
    assert y.shape == x.shape and y.dtype == np.float32 and np.allclose(y, expected, atol=1e-4)
    total = plugin.window_count(x.shape, inferer)
    assert total == 4 and calls[-1] == (total, total) and [d for d, _ in calls] == list(range(1, total + 1))


def test_cancel_stops_at_the_next_window_and_bad_input_is_one_error_line(tmp_path):
    asked = []
    with pytest.raises(plugin.CancelledError, match="after 2 of 4 windows"):
        plugin.enhance_stack(stack(), cancelled=lambda: asked.append(1) or len(asked) > 2, **SMALL)
    with pytest.raises(InputError, match=r"^img: G_S needs a ZYX stack of at least 4 planes, not shape \(32, 32\)"):
        plugin.enhance_stack(np.ones((32, 32), np.float32), name="img")
    with pytest.raises(InputError, match="constant"):
        plugin.enhance_stack(np.ones((6, 32, 32), np.float32))
    (tmp_path / "bad.pt").write_text("not weights")
    with pytest.raises(InputError, match=r"bad.pt: cannot read weights \(Weights only load failed"):
        plugin.enhance_stack(stack(), model=str(tmp_path / "bad.pt"))
    with pytest.raises(InputError, match="no MLflow store"):
        plugin.enhance_stack(stack(), "models:/zsegan@champion", path_to_sqlite_uri(str(tmp_path / "none.db")))


def test_the_selected_layer_is_enhanced_into_a_new_layer_with_its_voxel_size(tmp_path):
    pytest.importorskip("napari", reason="napari (pip install -e '.[napari]') for its headless ViewerModel")
    from napari.components import ViewerModel

    viewer = ViewerModel()
    with pytest.raises(InputError, match="select one image layer"):
        plugin.enhance_selected(viewer)
    x = stack()
    viewer.add_image(x, name="cells", scale=(2.0, 0.5, 0.5), translate=(0, 10, 0), units="um")
    weights = shutil.copy(SHIPPED, tmp_path / "mine.pt")  # a weights file, as inference's --model_path
    new = plugin.enhance_selected(viewer, str(weights), **SMALL)
    assert [layer.name for layer in viewer.layers] == ["cells", "cells_enhanced"]
    assert (
        tuple(new.scale) == (2.0, 0.5, 0.5) and tuple(new.translate) == (0, 10, 0) and str(new.units[0]) == "micrometer"
    )
    assert new.metadata["zsegan_model"] == str(weights)
    assert np.allclose(new.data, plugin.enhance_stack(x, **SMALL), atol=1e-5)  # the file holds the shipped weights


def test_the_reader_opens_outputs_with_their_voxel_size(tmp_path):
    path = tmp_path / "cells_enhanced.tif"
    x = stack((5, 16, 16)).astype(np.uint16)
    write_stack(path, x, {"dtype": "uint16", "spacing": (1.5, 0.25, 0.25), "unit": "um"})
    assert get_reader(str(tmp_path / "notes.txt")) is None and get_reader(str(tmp_path / "missing.tif")) is None
    [(data, kwargs, kind)] = get_reader(str(path))(str(path))
    assert kind == "image" and np.array_equal(data, x) and kwargs["scale"] == (1.5, 0.25, 0.25)
    assert kwargs["units"] == ("um",) * 3 and kwargs["name"] == "cells_enhanced.tif"
    np.savez(tmp_path / "paper.npz", stack((16, 16, 5)))  # the paper's YXZ npz: no voxel size
    [(data, kwargs, _)] = get_reader(str(tmp_path / "paper.npz"))(str(tmp_path / "paper.npz"))
    assert data.shape == (5, 16, 16) and "scale" not in kwargs and "units" not in kwargs
    napari = pytest.importorskip("napari", reason="napari (pip install -e '.[napari]') for its headless ViewerModel")
    layer = napari.components.ViewerModel().add_layer(napari.layers.Layer.create(*get_reader(str(path))(str(path))[0]))
    assert tuple(layer.scale) == (1.5, 0.25, 0.25)


@pytest.mark.slow
def test_a_registered_model_enhances_as_its_weights_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = path_to_sqlite_uri(str(tmp_path / "mlflow.db"))
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("zsegan", (tmp_path / "mlruns").as_uri()))
    settings = {
        "network_args": generator_args(*(DEFAULTS[k] for k in GENERATOR_KEYS)),
        "intensity_lower": 0.5,
        "intensity_upper": 99.5,
    }
    settings.update(sw_roi_size=[-1, 32, 32], sw_batch_size=1, sw_overlap=0.25, sw_mode="gaussian")
    info = log_generator(SHIPPED, settings, run.info.run_id, uri)
    register_generator(info.model_uri, "zsegan", uri, "val_sharpness", 1.0, "champion")
    x = stack()
    y = plugin.enhance_stack(x, "models:/zsegan@champion", uri, **SMALL)
    assert np.allclose(y, plugin.enhance_stack(x, str(SHIPPED), **SMALL), atol=1e-5)


QT = next((qt for qt in ("PyQt5", "PyQt6", "PySide2", "PySide6") if importlib.util.find_spec(qt)), None)
needs_qt = pytest.mark.skipif(
    QT is None or importlib.util.find_spec("napari") is None or importlib.util.find_spec("pytestqt") is None,
    reason="no Qt binding, napari or pytest-qt (pip install -e '.[dev]'): the Qt widget is not built",
)


@pytest.fixture
def widget(qtbot):
    """The Enhance widget on a windowless viewer (napari's ViewerModel) holding a small selected stack."""
    from napari.components import ViewerModel

    from zsegan_napari.widget import EnhanceWidget

    viewer = ViewerModel()
    viewer.add_image(stack((9, 48, 48)), name="cells", scale=(2.0, 0.5, 0.5), units="um")
    widget = EnhanceWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.window.value = 32  # 4 windows on 48 x 48
    return widget


def notices() -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


@needs_qt
def test_the_widget_enhances_the_selected_layer_with_progress_and_its_voxel_size(widget, qtbot):
    assert widget.model() == "" and widget.window.value == 32 and widget.overlap.value == 0.25  # the config's
    with qtbot.waitSignal(widget.enhance.native.clicked):
        widget.enhance.native.click()
    qtbot.waitUntil(lambda: len(widget.viewer.layers) == 2 and widget.enhance.enabled, timeout=30_000)
    cells, new = widget.viewer.layers
    assert new.name == "cells_enhanced" and new.data.shape == (9, 48, 48) and new.data.dtype == np.float32
    assert tuple(new.scale) == (2.0, 0.5, 0.5) and str(new.units[0]) == "micrometer"
    assert new.metadata["zsegan_model"] == "shipped models/model.pt"
    assert np.allclose(new.data, plugin.enhance_stack(cells.data, **SMALL), atol=1e-5)  # the bundle's inference
    assert (widget.bar.n, widget.bar.total) == (4, 4) and not widget.cancel.enabled


@needs_qt
def test_cancel_stops_the_run_and_adds_no_layer(widget, qtbot):
    widget.window.value = 16  # 16 windows
    worker = widget.start()
    assert not widget.enhance.enabled and widget.cancel.enabled  # one run at a time
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        widget.cancel.native.click()  # before the first window: weights are still loading
    assert [layer.name for layer in widget.viewer.layers] == ["cells"]
    assert re.fullmatch(r"cells: enhancement cancelled after \d+ of 16 windows", notices()[-1]), notices()[-1]
    assert widget.bar.n < 16 and widget.enhance.enabled and not widget.cancel.enabled


@needs_qt
def test_the_widget_reports_bad_input_in_one_line(widget, qtbot, tmp_path):
    widget.viewer.layers.selection.active = None
    assert widget.start() is None and notices()[-1] == "select one image layer (a ZYX stack) to enhance"
    widget.viewer.layers.selection.active = widget.viewer.layers["cells"]
    (tmp_path / "bad.pt").write_text("not weights")
    widget.weights.value = tmp_path / "bad.pt"
    assert widget.model() == str(tmp_path / "bad.pt")
    with qtbot.waitSignal(widget.start().finished, timeout=30_000):
        pass
    assert notices()[-1].startswith(f"{tmp_path / 'bad.pt'}: cannot read weights (Weights only load failed")
    widget.model_uri.value = " models:/zsegan@champion "  # a registered model rather than the file
    widget.tracking_uri.value = path_to_sqlite_uri(str(tmp_path / "none.db"))
    assert widget.model() == "models:/zsegan@champion"
    with qtbot.waitSignal(widget.start().finished, timeout=30_000):
        pass
    assert "no MLflow store" in notices()[-1], notices()[-1]
    assert len(widget.viewer.layers) == 1 and widget.enhance.enabled


@needs_qt
def test_napari_finds_the_widget_and_hands_it_its_viewer(qtbot):
    import napari

    from zsegan_napari.widget import EnhanceWidget

    viewer = napari.Viewer(show=False)  # a window, never shown (offscreen Qt has no OpenGL for image layers)
    try:
        dock, widget = viewer.window.add_plugin_dock_widget("zsegan", "Enhance z-stack (ZSE-GAN)")
        viewer.title = "zsegan test"
        assert isinstance(widget, EnhanceWidget) and widget.viewer.title == "zsegan test"  # napari's proxy of it
        assert widget.start() is None and notices()[-1] == "select one image layer (a ZYX stack) to enhance"
        assert [w.text for w in widget if isinstance(w, type(widget.cancel))] == ["Enhance selected layer", "Cancel"]
    finally:
        viewer.close()
