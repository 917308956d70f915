"""Ignite handlers MONAI lacks: atomic resumable checkpoints, G_S export, validation pictures to MLflow, a run's
summary."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader, MLFlowHandler
from scripts.data.atomic import atomic
from scripts.errors import InputError
from scripts.evaluation.views import comparison_png, sharpness_plot
from scripts.inference.sliding_window import write_settings
from scripts.nets.networks import unwrap
from scripts.ops.metrics import sharpness_ratios
from scripts.zsegan.focus import sharpest_index

logger = logging.getLogger("zsegan")


def checkpoints(save_dir: str | Path, prefix: str = "state") -> list[Path]:
    """The checkpoints in ``save_dir``, from the lowest iteration to the highest."""
    found = []
    for path in Path(save_dir).glob(f"{prefix}_*.pt"):
        match = re.search(r"_(\d+)\.pt$", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(save_dir: str | Path, prefix: str = "state") -> Path | None:
    """The checkpoint of the highest iteration in ``save_dir``, or None."""
    found = checkpoints(save_dir, prefix)
    return found[-1] if found else None


def check_checkpoint(path: Path, save_dict: dict) -> set[str]:
    """InputError naming ``path`` when training cannot resume from it: unreadable (truncated), not a
    checkpoint of ``save_dict``'s objects, or networks of another architecture; says how to go on.
    Returns the names of what it holds."""
    earlier = [p for p in checkpoints(path.parent) if p != path]
    fix = f"delete it to resume from {earlier[-1].name}" if earlier else "delete it to start afresh"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        problem = f"cannot resume from it: unreadable (truncated, or not a checkpoint: {type(e).__name__})"
        raise InputError(path, f"{problem}: {fix}") from e
    missing = [k for k in save_dict if not isinstance(state, dict) or k not in state]
    if missing:
        raise InputError(path, f"is not a checkpoint of this training (no {', '.join(missing)}): {fix}")
    for name, obj in save_dict.items():
        if isinstance(obj, torch.nn.Module):
            expected = {k: tuple(v.shape) for k, v in unwrap(obj).state_dict().items()}
            if {k: tuple(v.shape) for k, v in state[name].items()} != expected:
                raise InputError(
                    path, f"holds a {name} of another architecture: {fix}, or train with the settings it was made with"
                )
    return set(state)


def _generators(obj, found: list, seen: set) -> list:
    """Every numpy RandomState inside ``obj`` (a dataset and its transforms, nested ones included), in a fixed
    order: the attributes walked as ``monai.data.utils.set_rnd`` walks them to seed the transforms."""
    if id(obj) in seen or isinstance(obj, (torch.Tensor, np.ndarray, str, bytes, dict)):
        return found
    seen.add(id(obj))
    if isinstance(obj, np.random.RandomState):
        found.append(obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _generators(item, found, seen)
    elif hasattr(obj, "__dict__"):
        for key, value in vars(obj).items():
            if not key.startswith("__"):
                _generators(value, found, seen)
    return found


class RandomStates:
    """What a run's next random numbers depend on, for a checkpoint that resumes bit for bit: torch's (CPU and
    CUDA), numpy's and Python's global generators, and for each of ``loaders`` its sampler's place
    (``scripts.data.datalist.ResumableSampler``) and the generators of its dataset's random transforms.
    Loading sets them all at once; the loaders must draw their own seeds from generators of their own
    (``DataLoader(generator=...)``), so that making their iterators anew on resuming draws nothing here."""

    def __init__(self, loaders=()):
        self.loaders = list(loaders)

    def state_dict(self) -> dict:
        def numpy_state(state):
            return (state[0], torch.from_numpy(state[1].astype(np.int64)), *state[2:])

        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": numpy_state(np.random.get_state()),
            "python": random.getstate(),
            "samplers": [getattr(loader.sampler, "state_dict", dict)() for loader in self.loaders],
            "transforms": [
                [numpy_state(g.get_state()) for g in _generators(loader.dataset, [], set())] for loader in self.loaders
            ],
        }

    def load_state_dict(self, state: dict) -> None:
        def numpy_state(saved):
            return (saved[0], saved[1].numpy().astype(np.uint32), *saved[2:])

        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        np.random.set_state(numpy_state(state["numpy"]))
        random.setstate(state["python"])
        for loader, sampler, generators in zip(self.loaders, state["samplers"], state["transforms"], strict=True):
            if sampler:
                loader.sampler.load_state_dict(sampler)
            for generator, saved in zip(_generators(loader.dataset, [], set()), generators, strict=True):
                generator.set_state(numpy_state(saved))


class ResumableCheckpoint:
    """Full-state checkpoints every ``interval`` iterations and at the end; resumes from the latest.

    ``save_dict`` names everything to save (networks, optimisers, schedulers, the trainer, whose state
    includes the image pools; a None value is a part switched off, not saved). Files are written atomically
    (temporary file, then rename), so an interruption never leaves a truncated checkpoint. When ``save_dir``
    already holds checkpoints at start, training resumes from the latest one, checked first
    (``check_checkpoint``). With ``loaders`` (their samplers ``ResumableSampler``s, ``num_workers=0``) the
    random states are saved too (``RandomStates``), so that on one process a resumed training ends bit for bit
    as an uninterrupted one.
    Under DDP (several processes), only rank 0 writes (ignite's ``DiskSaver``), networks without their
    DDP wrapper; every process resumes from the same file.
    """

    def __init__(
        self, save_dir: str, save_dict: dict, interval: int = 100, n_saved: int = 2, resume: bool = True, loaders=()
    ):
        self.save_dict = {name: obj for name, obj in save_dict.items() if obj is not None}
        self.save_dir, self.interval = str(save_dir), interval
        self.n_saved, self.resume, self.loaders = n_saved, resume, list(loaders)
        self.checkpoint: Checkpoint | None = None

    def attach(self, engine: Engine) -> None:
        """Save ``save_dict`` plus the engine itself (and the random states, ``RandomStates`` of ``loaders``, on
        one process); load the latest checkpoint when the engine starts."""
        to_save = {**self.save_dict, "trainer": engine}
        if self.loaders and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            to_save["random"] = RandomStates(self.loaders)  # under DDP each process has its own: not saved
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
            held = check_checkpoint(latest, self.save_dict)
            logger.info(f"resuming from {latest}")
            load_dict = {k: v for k, v in to_save.items() if k in held or k != "random"}  # "random": since issue 16
            load_dict["checkpointer"] = self.checkpoint
            device = getattr(engine.state, "device", None) or "cpu"  # MONAI workflows set it; plain engines may not
            CheckpointLoader(str(latest), load_dict, map_location=str(device)).attach(engine)
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
    """``torch.save`` a module's plain state_dict (on CPU; out of any DDP wrapper, so without a ``module.``
    prefix) beside ``path``, then rename into place."""
    with atomic(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in unwrap(module).state_dict().items()}, tmp)
    return Path(path)


class ExportGenerator:
    """At the end of training, write G_S's plain state_dict to ``path`` (the bundle's models/model.pt), and with
    ``settings`` (how the weights are applied: the registered model's, ``registry.RegisterGenerator.settings``) those
    beside it, with the weights' digest (``inference.sliding_window.write_settings``: ``paired.settings.json``)."""

    def __init__(self, network: torch.nn.Module, path: str, settings: Mapping | None = None):
        self.network, self.path, self.settings = network, path, settings

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        path = save_state_dict_atomic(self.network, self.path)
        if self.settings is None:
            logger.info(f"G_S weights written to {path}")
        else:
            logger.info(f"G_S weights written to {path}, its settings to {write_settings(path, self.settings)}")


class RunSummary:
    """At the end of a run, one line: how many ``unit``s were ``done`` (e.g. "enhanced"), into which folder, how long.

    An Ignite handler (the engine's iterations counted), or called by hand: ``finish(n)``; the clock starts when the
    engine starts, else when this is made."""

    def __init__(self, output_dir: str, done: str = "enhanced", unit: str = "stack"):
        self.output_dir, self.done, self.unit = output_dir, done, unit
        self._start = time.monotonic()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        self._start = time.monotonic()

    def __call__(self, engine: Engine) -> None:
        self.finish(engine.state.iteration)

    def finish(self, n: int) -> None:
        """Log the line for ``n`` units done."""
        took = time.monotonic() - self._start
        logger.info(f"{self.done} {n} {self.unit}{'s' if n != 1 else ''} into {self.output_dir} in {took:.1f} s")


class ValidationArtifacts:
    """After each validation: pictures of what G_S does, written and logged to MLflow.

    - ``views/epoch_NNNN.png``: orthogonal views of the first validation stack, input beside G_S(x)
      (xy at the top, the sharpest and the bottom slice; central xz and yz);
    - ``sharpness/epoch_NNNN.csv`` and ``.png``: the per-slice sharpness of the input and of G_S(x),
      relative to the input's sharpest slice (``metrics.sharpness_ratios``), averaged over the
      validation stacks (stacks of another depth than the first are left out).

    Files go under ``output_dir``; when ``mlflow_handler`` (MONAI's MLFlowHandler of the run) is
    given, they are logged to its MLflow run too.
    """

    def __init__(self, output_dir: str, mlflow_handler=None):
        self.output_dir, self.mlflow_handler = Path(output_dir), mlflow_handler
        self._first: dict | None = None
        self._ratios: list[tuple[np.ndarray, np.ndarray]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._keep)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._first, self._ratios = None, []

    def _keep(self, engine: Engine) -> None:
        output = engine.state.output
        for item in output if isinstance(output, list) else [output]:
            image, pred = (torch.as_tensor(item[k]).detach().cpu().float() for k in ("image", "pred"))
            if self._first is None:
                self._first = {"image": image[0].numpy(), "pred": pred[0].numpy()}
            self._ratios.append((sharpness_ratios(image, image).numpy(), sharpness_ratios(pred, image).numpy()))

    def _write(self, engine: Engine) -> None:
        if self._first is None:
            return
        name = f"epoch_{engine.state.epoch:04d}"
        stack = self._first["image"]
        sharpest = sharpest_index(stack)
        views = self.output_dir / "views" / f"{name}.png"
        comparison_png(views, {"input x": stack, "G_S(x)": self._first["pred"]}, sorted({0, sharpest, len(stack) - 1}))
        depth = len(self._ratios[0][0])
        same = [r for r in self._ratios if len(r[0]) == depth]
        x_ratio, y_ratio = (np.mean([r[i] for r in same], axis=0) for i in (0, 1))
        table = self.output_dir / "sharpness" / f"{name}.csv"
        table.parent.mkdir(parents=True, exist_ok=True)
        rows = np.column_stack([np.arange(depth), x_ratio, y_ratio])
        np.savetxt(table, rows, delimiter=",", fmt=["%d", "%.5f", "%.5f"], header="z,input_x,G_S_x", comments="")
        plot = table.with_suffix(".png")
        sharpness_plot(plot, x_ratio, y_ratio, f"per-slice sharpness, mean of {len(same)} validation stack(s), {name}")
        handler = self.mlflow_handler
        if handler is not None and handler.cur_run is not None:
            for path, folder in ((views, "views"), (table, "sharpness"), (plot, "sharpness")):
                handler.client.log_artifact(handler.cur_run.info.run_id, str(path), folder)
