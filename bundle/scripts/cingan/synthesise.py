"""Stage 1's product: synthesised pairs, written as files a user can look at and stage 2 can train on.

The trained CIN-GAN generator G adds each defect type s to every unpaired clean volume x: the pair
(x, G(x, s)) goes to ``<output_dir>/<task>/clean/<name>`` and ``<output_dir>/<task>/defective/<name>``, the
layout of the real pairs (``scripts.simulate.defects``), so stage 2 can read real and synthesised pairs
alike. Volumes are ZYX uint8 in 0-255, as the clean volumes; the network sees them mapped to [-1, 1].
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from scripts.data.io import STACK_SUFFIXES, list_files, read_stack, write_stack
from scripts.errors import InputError
from scripts.simulate.defects import check_task

__all__ = ["load_generator", "synthesise_pairs"]

logger = logging.getLogger("zsegan")


def load_generator(generator: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """``generator`` with the state_dict in ``path`` loaded, in eval mode; one InputError if the file is
    missing or holds another architecture."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such generator weights file: train stage 1 first (configs/cingan_train.yaml)")
    try:
        generator.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as e:
        raise InputError(path, f"does not fit the configured generator ({str(e).splitlines()[0]})") from None
    return generator.eval()


@torch.no_grad()
def synthesise_pairs(
    generator: torch.nn.Module,
    clean_dir: str | os.PathLike,
    tasks: Sequence[str],
    output_dir: str | os.PathLike,
    device: torch.device | str = "cpu",
    roi_size: Sequence[int] | None = None,
    overlap: float = 0.25,
) -> dict[str, int]:
    """Write (x, G(x, s)) for every clean volume in ``clean_dir`` (a folder of ZYX volumes, 0-255) and every
    task s of ``tasks`` (in the order the generator was trained on). ``roi_size``: run G through a
    sliding window of this size (-1: the whole axis), else on whole volumes. Returns pairs written per task."""
    tasks = [check_task(t) for t in tasks]
    n_conditions = getattr(generator, "n_conditions", 0)
    if n_conditions != len(tasks):
        raise InputError(None, f"the generator knows {n_conditions} defect types but {len(tasks)} tasks were given")
    items = list_files(Path(clean_dir), STACK_SUFFIXES)  # InputError if missing or empty
    generator = generator.to(device).eval()
    infer = SlidingWindowInferer(roi_size, sw_batch_size=1, overlap=overlap, mode="gaussian") if roi_size else None
    out = Path(output_dir)
    for item in items:
        clean, meta = read_stack(item)
        x = torch.as_tensor(clean.astype(np.float32) / 127.5 - 1.0, device=device)[None, None]
        name = Path(item).name
        for s, task in enumerate(tasks):
            y = infer(x, generator, s) if infer else generator(x, s)
            defective = np.clip(np.rint((y[0, 0].cpu().numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8)
            write_stack(out / task / "clean" / name, clean, {**meta, "dtype": "uint8"})
            write_stack(out / task / "defective" / name, defective, {**meta, "dtype": "uint8"})
    logger.info("synthesised %d pairs per task for %s into %s", len(items), ", ".join(tasks), out)
    return {task: len(items) for task in tasks}
