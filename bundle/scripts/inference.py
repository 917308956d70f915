"""Inference around MONAI's sliding-window evaluator: input checks, weights, and writing outputs."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from scripts.errors import InputError
from scripts.io import STACK_SUFFIXES, list_files, read_stack, write_stack
from scripts.transforms import RobustNormalised

logger = logging.getLogger("zsegan")


def _suffix(path: Path) -> str:
    return next((s for s in sorted(STACK_SUFFIXES, key=len, reverse=True) if path.name.lower().endswith(s)), "")


def output_path(input_path: str | Path, output_dir: str | Path, postfix: str = "_enhanced") -> Path:
    """``<output_dir>/<name><postfix><suffix>``: same format as the input, never the input itself."""
    input_path = Path(input_path)
    suffix = _suffix(input_path)
    out = Path(output_dir) / f"{input_path.name[: len(input_path.name) - len(suffix)]}{postfix}{suffix}"
    if out.resolve() == input_path.resolve():
        raise InputError(out, "output would overwrite the input: choose another output_dir or postfix")
    return out


def inference_datalist(input_path: str | Path, min_planes: int = 1) -> list[dict[str, str]]:
    """Every stack of a file or folder, each read and checked before any output is written."""
    files = list_files(input_path, STACK_SUFFIXES)
    for i, f in enumerate(files, 1):
        read_stack(f, min_planes=min_planes)
        logger.info(f"checked input {i}/{len(files)}: {f}")
    return [{"image": str(f)} for f in files]


def load_weights(network: torch.nn.Module, path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a plain state_dict (or a training checkpoint holding ``g_s``) into ``network``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such weights file: train first, or pass --model_path")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(path, f"cannot read weights ({e})") from e
    if isinstance(state, Mapping) and "g_s" in state:
        state = state["g_s"]
    if not isinstance(state, Mapping):
        raise InputError(path, f"holds a {type(state).__name__}, not a state_dict of network weights")
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(path, f"weights do not fit the configured network ({str(e).splitlines()[0]})") from e
    return network.to(device).eval()


def enhance(
    network: torch.nn.Module, stack: np.ndarray, inferer, normalise: RobustNormalised, device="cpu"
) -> np.ndarray:
    """G_S on one ZYX stack in its own units: ``normalise`` (the training's percentile mapping, keyed
    ``image``), ``inferer`` (e.g. the sliding window) and the inverse mapping; float32, same shape."""
    data = normalise({"image": MetaTensor(torch.as_tensor(np.asarray(stack, np.float32))[None])})
    with torch.no_grad():
        y = inferer(data["image"].as_tensor()[None].to(device), network)[0].float().cpu()
    data["image"] = MetaTensor(y, applied_operations=data["image"].applied_operations)
    return normalise.inverse(data)["image"].as_tensor()[0].numpy().astype(np.float32)


class SaveStackd(MapTransform):
    """Write ``data[key]`` (CZYX, back in input units) in the input's format, dtype, axes and voxel size."""

    def __init__(self, keys: str = "pred", output_dir: str = "output", postfix: str = "_enhanced"):
        super().__init__(keys)
        self.output_dir, self.postfix = output_dir, postfix

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = dict(d[key].meta)
            path = output_path(meta["filename_or_obj"], self.output_dir, self.postfix)
            array = d[key].detach().cpu().numpy()[0].astype(np.float32)
            write_stack(path, array, meta)
            logger.info(f"wrote {path}")
        return d
