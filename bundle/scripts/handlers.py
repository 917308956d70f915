"""Ignite handlers MONAI lacks: atomic resumable checkpoints, G_S export, orthogonal views to MLflow."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader, MLFlowHandler

from scripts.focus import focus_measure
from scripts.views import comparison_png

logger = logging.getLogger("zsegan")


def latest_checkpoint(save_dir: str | Path, prefix: str = "state") -> Path | None:
    """The checkpoint of the highest iteration in ``save_dir``, or None."""
    found = []
    for path in Path(save_dir).glob(f"{prefix}_*.pt"):
        match = re.search(r"_(\d+)\.pt$", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class ResumableCheckpoint:
    """Full-state checkpoints every ``interval`` iterations and at the end; resumes from the latest.

    ``save_dict`` names everything to save (networks, optimisers, schedulers, the trainer, whose state
    includes the image pools). Files are written atomically (temporary file, then rename), so an
    interruption never leaves a truncated checkpoint. When ``save_dir`` already holds checkpoints at
    start, training resumes from the latest one.
    """

    def __init__(self, save_dir: str, save_dict: dict, interval: int = 100, n_saved: int = 2, resume: bool = True):
        self.save_dir, self.save_dict, self.interval = str(save_dir), dict(save_dict), interval
        self.n_saved, self.resume = n_saved, resume
        self.checkpoint: Checkpoint | None = None

    def attach(self, engine: Engine) -> None:
        """Save ``save_dict`` plus the engine itself; load the latest checkpoint when the engine starts."""
        to_save = {**self.save_dict, "trainer": engine}
        self.checkpoint = Checkpoint(
            to_save,
            DiskSaver(self.save_dir, atomic=True, require_empty=False),
            filename_prefix="state",
            n_saved=self.n_saved,
            global_step_transform=lambda engine, _: engine.state.iteration,
            include_self=True,
        )
        latest = latest_checkpoint(self.save_dir) if self.resume else None
        if latest is not None:
            logger.info(f"resuming from {latest}")
            load_dict = {**to_save, "checkpointer": self.checkpoint}
            CheckpointLoader(str(latest), load_dict, map_location=str(engine.state.device)).attach(engine)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval) | Events.COMPLETED, self._save)

    def _save(self, engine: Engine) -> None:
        if self.checkpoint.last_checkpoint is None or not str(self.checkpoint.last_checkpoint).endswith(
            f"_{engine.state.iteration}.pt"
        ):
            self.checkpoint(engine)


class ResumableMLFlowHandler(MLFlowHandler):
    """MONAI's MLFlowHandler, for runs that may be resumed with changed settings.

    A resumed training continues its MLflow run, where a parameter cannot change value (MLflow
    refuses). Parameters already logged are kept as first logged; the executed config logged as an
    artifact at the end (``config.yaml``) records the settings of the latest start.
    """

    def _log_params(self, params: dict) -> None:
        params = dict(params)
        self._delete_exist_param_in_dict(params)
        if params:
            super()._log_params(params)


def save_state_dict_atomic(module: torch.nn.Module, path: str | Path) -> Path:
    """``torch.save`` a module's plain state_dict (on CPU) beside ``path``, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class ExportGenerator:
    """At the end of training, write G_S's plain state_dict to ``path`` (the bundle's models/model.pt)."""

    def __init__(self, network: torch.nn.Module, path: str):
        self.network, self.path = network, path

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        logger.info(f"G_S weights written to {save_state_dict_atomic(self.network, self.path)}")


class OrthogonalViews:
    """After each validation, a PNG of the first validation stack: input beside G_S(x), orthogonal views.

    Written to ``<output_dir>/views/epoch_NNNN.png`` and, when ``mlflow_handler`` (MONAI's
    MLFlowHandler of the run) is given, logged to its MLflow run under ``views/``.
    """

    def __init__(self, output_dir: str, mlflow_handler=None):
        self.output_dir, self.mlflow_handler = Path(output_dir) / "views", mlflow_handler
        self._first = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), self._keep)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _keep(self, engine: Engine) -> None:
        output = engine.state.output
        item = output[0] if isinstance(output, list) else output
        self._first = {k: torch.as_tensor(item[k]).detach().cpu()[0].float().numpy() for k in ("image", "pred")}

    def _write(self, engine: Engine) -> None:
        if self._first is None:
            return
        stack = self._first["image"]
        sharpest = int(focus_measure(torch.from_numpy(stack)).argmax())
        depths = sorted({0, sharpest, stack.shape[0] - 1})
        path = self.output_dir / f"epoch_{engine.state.epoch:04d}.png"
        comparison_png(path, {"input x": stack, "G_S(x)": self._first["pred"]}, depths)
        handler = self.mlflow_handler
        if handler is not None and handler.cur_run is not None:
            handler.client.log_artifact(handler.cur_run.info.run_id, str(path), "views")
