"""Fine-tuning: start a training from earlier weights (``--pretrained``) instead of from scratch.

ZSE-GAN learns without ground truth, so training on one's own stacks is the normal use; starting from
the shipped G_S (or any earlier one) gets there in a fraction of the time. ``pretrained`` names

- a G_S weights file (a plain state_dict, as ``models/model.pt``),
- a training checkpoint (``checkpoints/state_checkpoint_N.pt``): G_S, and the other networks named in
  ``parts`` (``g_b``, ``d_s``, ``d_b``) where it holds them,
- or a registered model, ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.

Weights that do not fit the configured networks are one clear error naming the file and the network.
A training that already has checkpoints of its own resumes from them instead (``ResumableCheckpoint``
loads them when the trainer starts, over these weights), so rerunning an interrupted fine-tuning
continues it rather than starting it again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from scripts.errors import InputError
from scripts.nets.networks import unwrap
from scripts.ops.handlers import latest_checkpoint
from scripts.ops.registry import load_generator

__all__ = ["PARTS", "start_from"]

logger = logging.getLogger(__name__)

PARTS = ("g_s", "g_b", "d_s", "d_b")  # the networks a training checkpoint holds


def _load_part(network: torch.nn.Module, state, path: Path, name: str) -> None:
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(path, f"{name}'s weights do not fit the configured network ({str(e).splitlines()[0]})") from e


def start_from(
    pretrained: str | Path | None,
    networks: Mapping[str, torch.nn.Module],
    parts: Sequence[str] = ("g_s",),
    checkpoint_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    device: str | torch.device = "cpu",
) -> str:
    """Load ``pretrained`` into ``networks`` (``{"g_s": G_S, "g_b": ..., ...}``); returns what was done.

    ``parts``: which networks to take from a training checkpoint (G_S always; a G_S file or a
    registered model holds only G_S). Nothing is loaded when ``pretrained`` is empty, or when
    ``checkpoint_dir`` holds this training's own checkpoints (it resumes from those).
    """
    if not pretrained:
        return "from scratch"
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or "g_s" not in parts:
        raise InputError(None, f"--pretrained_parts must include g_s and name only {list(PARTS)}, got {list(parts)}")
    if checkpoint_dir is not None and latest_checkpoint(checkpoint_dir) is not None:
        done = f"resuming this training's own checkpoints in {checkpoint_dir}; --pretrained {pretrained} not used"
        logger.info(done)
        return done
    networks = {name: unwrap(network) for name, network in networks.items()}  # DDP: every process loads
    source = str(pretrained)
    if source.startswith("models:/"):
        load_generator(networks["g_s"], model_uri=source, tracking_uri=tracking_uri, device=device)
        loaded = ["g_s"]
    else:
        path = Path(source)
        load_generator(networks["g_s"], model_path=path, device=device)  # a G_S file, or a checkpoint's g_s
        loaded = ["g_s"]
        others = [name for name in parts if name != "g_s"]
        state = torch.load(path, map_location=device, weights_only=True) if others else {}  # read again only if asked
        for name in others:
            if isinstance(state, Mapping) and name in state:
                _load_part(networks[name], state[name], path, name)
                loaded.append(name)
    done = f"starting from {source} ({', '.join(loaded)})"
    logger.info(done)
    return done
