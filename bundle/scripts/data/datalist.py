"""The dataset convention, the train/validation split, and a sampler that a checkpoint can resume exactly.

``<dataset_dir>/stacks/``  z-stacks (TIFF/OME-TIFF, the paper's .npz, NIfTI)
``<dataset_dir>/infocus/`` 2D in-focus images (TIFF, PNG), unpaired with the stacks
``<dataset_dir>/truth/``   optional sharp ground-truth volumes, same file names as the stacks

MicroscopyGAN's defect datasets (``scripts.simulate.defects``) hold ``clean/`` and ``defective/`` volumes.

A file's microscope system, where a dataset records one, is its name's prefix before the first ``_``
(``A_00000.tif``: system ``A``, as the fluorescence simulator names its pairs; ``system_label``).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from scripts.data.io import IMAGE_SUFFIXES, STACK_SUFFIXES, list_files
from torch.utils.data import Sampler


def datalist(dataset_dir: str | Path, kind: str = "stacks") -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for the stacks (or ``kind="infocus"`` images, "truth", "clean" or "defective"
    volumes) of a dataset, sorted."""
    suffixes = {"infocus": IMAGE_SUFFIXES}.get(kind, STACK_SUFFIXES)
    if kind not in ("stacks", "infocus", "truth", "clean", "defective"):
        raise KeyError(kind)
    return [{"image": str(f)} for f in list_files(Path(dataset_dir) / kind, suffixes)]


def system_label(path: str | Path) -> str | None:
    """The system a file belongs to: its name's prefix before the first ``_`` (``A_00000.tif`` -> ``"A"``), or
    None when the name has no such prefix."""
    prefix, sep, _ = Path(path).name.partition("_")
    return prefix if sep and prefix else None


def train_val_split(items: list, val_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Split ``items`` reproducibly: a seeded shuffle, at least one item on each side when possible."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = list(items)
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(order) * val_fraction)), len(order) - 1) if val_fraction > 0 else 0
    return sorted(order[n_val:], key=str), sorted(order[:n_val], key=str)


class ResumableSampler(Sampler):
    """Shuffles ``data_source`` anew at each pass, from ``seed`` and the pass's number alone (as PyTorch's
    DistributedSampler does from the epoch), and counts the indices it has given, so that a checkpoint
    (``state_dict``/``load_state_dict``) takes the order up exactly where it was: the next pass started after
    loading continues the pass under way. Exact with ``num_workers=0`` (no prefetching workers).
    """

    def __init__(self, data_source, seed: int = 0):
        self.size, self.seed = len(data_source), int(seed)
        self.passes, self.given, self._resuming = 0, 0, False  # passes started; indices of the last one given

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        if not self._resuming:
            self.passes, self.given = self.passes + 1, 0
        self._resuming = False
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.passes)).tolist()
        for index in order[self.given :]:
            self.given += 1
            yield index

    def state_dict(self) -> dict[str, int]:
        return {"passes": self.passes, "given": self.given}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.passes, self.given = int(state["passes"]), int(state["given"])
        self._resuming = self.passes > 0
