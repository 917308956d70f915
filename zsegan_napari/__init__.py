"""napari plugin of the ZSE-GAN bundle: a widget that enhances an image layer with G_S, and a reader for the stacks
inference writes, with their voxel size.

The plugin runs the bundle's own inference (``bundle/configs/inference.yaml``: network, weights, sliding window,
intensity mapping); it finds the bundle in ``ZSEGAN_BUNDLE`` or, by default, beside this package (a source checkout
installed with ``pip install -e ".[napari]"``). ``enhance`` and ``reader`` need no Qt; ``widget`` is the thin
magicgui part that napari's window shows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def bundle_dir() -> Path:
    """The bundle folder (``ZSEGAN_BUNDLE``, else ``bundle/`` beside this package), its ``scripts`` importable."""
    bundle = Path(os.environ.get("ZSEGAN_BUNDLE") or Path(__file__).resolve().parents[1] / "bundle").resolve()
    if not (bundle / "configs" / "inference.yaml").is_file():
        raise FileNotFoundError(f"{bundle}: not the ZSE-GAN bundle (no configs/inference.yaml): set ZSEGAN_BUNDLE")
    if str(bundle) not in sys.path:
        sys.path.insert(0, str(bundle))
    return bundle
