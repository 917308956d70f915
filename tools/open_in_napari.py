"""Open whole-slide outputs as napari does, without a window, and print what napari shows: a check that
napari takes our OME-Zarr (and OME-TIFF) with its voxel size, units and axis names.

    pip install napari napari-ome-zarr     # no Qt needed: napari's ViewerModel is the viewer without a window
    python tools/open_in_napari.py enhanced/slide_enhanced.ome.zarr [enhanced/slide_enhanced.ome.tif]

The first path must be an OME-Zarr: every layer's voxels are compared with its dataset "0".
"""

import sys

import napari
import numpy as np
import zarr
from napari.components import ViewerModel
from napari.plugins import _initialize_plugins

_initialize_plugins()  # as napari does when it starts
reference = zarr.open_array(f"{sys.argv[1]}/0", mode="r")[:]
for path in sys.argv[1:]:
    layers = ViewerModel().open(path, plugin="napari-ome-zarr" if path.rstrip("/").endswith(".zarr") else None)
    for layer in layers:
        data = layer.data[0] if layer.multiscale else layer.data
        print(
            f"napari {napari.__version__}: {path}: {type(layer).__name__} layer {layer.name!r}, shape {data.shape}, "
            f"dtype {data.dtype}, scale {tuple(float(s) for s in layer.scale)}, "
            f"units {tuple(str(u) for u in layer.units)}, axis labels {tuple(layer.axis_labels)}, "
            f"same voxels as the OME-Zarr: {np.array_equal(np.asarray(data), reference)}"
        )
