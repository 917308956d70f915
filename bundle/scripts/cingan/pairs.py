"""MicroscopyGAN's stage 2 data: the few real pairs of a task, plus the pairs the CIN-GAN synthesised.

Stage 2 (the restorer) is trained by the paired workflow's ``scripts.paired.trainer.PairedGANTrainer``
(``configs/restore_train.yaml`` laid over ``configs/paired_train.yaml``); this module only says which pairs
it sees. Both kinds of pairs keep the layout of ``scripts.simulate.defects`` (volumes ZYX, the same name on
both sides):

``<dataset_dir>/<task>/train/{defective,clean}/``  the real pairs
``<synthetic_dir>/<task>/{defective,clean}/``      the synthesised pairs (``configs/cingan_synthesise.yaml``)

Each pair is checked by ``scripts.data.pairs.paired_datalist`` (a partner of the same name, the same size;
no registration check: the defects are on the clean grid). Items are ``{"image": defective, "label":
clean}``: the restorer maps the defective volume to the clean one. A share of the real pairs
(``val_fraction``) is held out by volume for validation during training.
"""

from __future__ import annotations

import logging
from pathlib import Path

from scripts.data.pairs import paired_datalist, split_by_image
from scripts.errors import InputError
from scripts.simulate.defects import check_task

__all__ = ["no_system_normalisation", "restoration_split", "validation_split"]

logger = logging.getLogger("zsegan")


def _defect_pairs(folder: Path) -> list[dict[str, str]]:
    return paired_datalist(folder, ndim=3, max_shift_px=None, inputs="defective", targets="clean")


def _first(items: list, n: int | None, what: str, folder: Path, besides: str = "") -> list:
    """The first ``n`` of ``items`` (by name; None: all), or one InputError if there are fewer."""
    if n is None:
        return items
    if n > len(items):
        raise InputError(folder, f"holds {len(items)} {what} pairs{besides}, fewer than the {n} asked for")
    return items[:n]


def no_system_normalisation(system_normalisation: bool) -> None:
    """The restorer's pairs are mapped by the fixed ``intensity_min``..``intensity_max``: the paired workflow's
    ``--system_normalisation True`` would do nothing here, so it is one InputError instead of a silent no-op."""
    if system_normalisation:
        raise InputError(
            None,
            "--system_normalisation True: the restorer maps every pair by the fixed intensity range "
            "(--intensity_min, --intensity_max), not by system; it is a key of the paired workflow only",
        )


def validation_split(items: list, val_fraction: float, seed: int, folder: Path) -> tuple[list, list]:
    """(train, validation) of the real pairs: the paired workflow's ``split_by_image`` (a seeded shuffle by
    volume, before any augmentation; no test part: the test pairs are ``<task>/test/``). A ``val_fraction`` > 0
    that validates on no pair, or leaves none to train on, is one InputError."""
    if val_fraction == 0:
        return items, []
    if round(len(items) * val_fraction) == 0:
        raise InputError(
            folder,
            f"--val_fraction {val_fraction} of its {len(items)} real pairs validates on none: raise it, or pass "
            "--val_fraction 0 to train on every real pair without validation",
        )
    train, val, _ = split_by_image(items, val_fraction, 0.0, seed)
    return train, val


def restoration_split(
    dataset_dir: str | Path,
    task: str,
    n_real: int | None = None,
    n_synthetic: int | None = None,
    synthetic_dir: str | Path | None = None,
    real_only: bool = False,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """(train, validation, []) pairs of the restorer for ``task``, in the shape of ``split_by_image``'s.

    Validation: ``val_fraction`` of the real pairs (``validation_split``, by volume, seeded), whatever
    ``n_real`` says, never trained on; synthesised pairs are never validated on (their defects are not the real
    ones). Training: the first ``n_real`` of the other real pairs (by name; None: all) and, unless ``real_only``,
    the first ``n_synthetic`` synthesised ones (None: all). A synthetic folder without pairs for the task is an
    InputError that says how to make them (or to train on real pairs only), as is asking for more pairs than
    there are, or for none at all. The third part is empty: the test pairs are ``<task>/test/``
    (``configs/restore_evaluate.yaml``)."""
    check_task(task)
    real_folder = Path(dataset_dir) / task / "train"
    real, val = validation_split(_defect_pairs(real_folder), val_fraction, seed, real_folder)
    besides = f" besides the {len(val)} validated on" if val else ""
    real = _first(real, n_real, "real", real_folder, besides) if n_real != 0 else []
    synthetic: list[dict[str, str]] = []
    if not real_only and n_synthetic != 0:
        if synthetic_dir is None:
            raise InputError(None, "no synthetic_dir given: name it, or train on real pairs only (--real_only True)")
        folder = Path(synthetic_dir) / task
        if not (folder / "defective").is_dir():
            raise InputError(
                folder,
                "holds no synthesised pairs: train stage 1 and write them first (configs/cingan_train.yaml, then "
                "cingan_synthesise.yaml), or train on the real pairs only (--real_only True)",
            )
        synthetic = _first(_defect_pairs(folder), n_synthetic, "synthesised", folder)
    if not real and not synthetic:
        raise InputError(None, f"no training pairs for {task}: n_real and n_synthetic are both 0")
    validated = f", validated on {len(val)} held-out real pairs" if val else ", no validation"
    logger.info(f"restorer for {task}: {len(real)} real and {len(synthetic)} synthesised pairs{validated}")
    return real + synthetic, val, []
