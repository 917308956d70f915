"""The dataset convention and the train/validation split.

``<dataset_dir>/stacks/``  z-stacks (TIFF/OME-TIFF, the paper's .npz, NIfTI)
``<dataset_dir>/infocus/`` 2D in-focus images (TIFF, PNG), unpaired with the stacks
``<dataset_dir>/truth/``   optional sharp ground-truth volumes, same file names as the stacks

MicroscopyGAN's defect datasets (``scripts.simulate.defects``) hold ``clean/`` and ``defective/`` volumes.
"""

from __future__ import annotations

import random
from pathlib import Path

from scripts.data.io import IMAGE_SUFFIXES, STACK_SUFFIXES, list_files


def datalist(dataset_dir: str | Path, kind: str = "stacks") -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for the stacks (or ``kind="infocus"`` images, "truth", "clean" or "defective"
    volumes) of a dataset, sorted."""
    suffixes = {"infocus": IMAGE_SUFFIXES}.get(kind, STACK_SUFFIXES)
    if kind not in ("stacks", "infocus", "truth", "clean", "defective"):
        raise KeyError(kind)
    return [{"image": str(f)} for f in list_files(Path(dataset_dir) / kind, suffixes)]


def train_val_split(items: list, val_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Split ``items`` reproducibly: a seeded shuffle, at least one item on each side when possible."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = list(items)
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(order) * val_fraction)), len(order) - 1) if val_fraction > 0 else 0
    return sorted(order[n_val:], key=str), sorted(order[:n_val], key=str)
