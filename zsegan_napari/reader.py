"""napari reader of the stacks that inference writes (and reads): TIFF/OME-TIFF, the paper's npz, NIfTI, read by the
bundle's ``scripts.data.io`` as ZYX with their voxel size, which becomes the layer's scale (and units)."""

from __future__ import annotations

import math
from pathlib import Path

from zsegan_napari import bundle_dir


def layer_data(path: str) -> tuple:
    """``(ZYX array, layer kwargs, "image")`` of one stack file: scale from its voxel size (1 where unknown),
    micrometres when the file says so; its meta under ``metadata``."""
    bundle_dir()
    from scripts.data.io import read_stack

    array, meta = read_stack(path)
    kwargs: dict = {"name": Path(path).name, "metadata": meta}
    if meta.get("spacing") is not None:
        kwargs["scale"] = tuple(1.0 if not math.isfinite(s) or s <= 0 else float(s) for s in meta["spacing"])
    if meta.get("unit") == "um":
        kwargs["units"] = ("um",) * 3
    return array, kwargs, "image"


def read(path: str | list[str]) -> list[tuple]:
    """Every stack of ``path`` (one file or a list of them) as napari layer data."""
    return [layer_data(p) for p in ([path] if isinstance(path, str) else path)]


def get_reader(path: str | list[str]):
    """napari's reader hook: ``read`` for stack files (see ``scripts.data.io.STACK_SUFFIXES``), else None."""
    bundle_dir()
    from scripts.data.io import STACK_SUFFIXES

    paths = [path] if isinstance(path, str) else list(path)
    ours = paths and all(str(p).lower().endswith(STACK_SUFFIXES) and Path(p).is_file() for p in paths)
    return read if ours else None
