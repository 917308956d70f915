"""G_S in MLflow: the tracking-store check, G_S as an MLflow model, the model registry, loading back.

- ``check_tracking``: before training starts, the tracking store must answer (one short request, no
  retries), or training falls back to the local store when ``tracking_fallback`` is ``local``.
- ``ZStackEnhancer``: G_S as an MLflow ``pyfunc`` model of the whole enhancement: a ZYX float32 stack
  in its own intensity units in, the enhanced stack (same shape, same units) out. It normalises the
  stack (``transforms.RobustNormalised``), runs G_S by MONAI's sliding window and maps the result back.
  Its artifacts are G_S's state_dict and its settings (JSON); its code is the bundle's ``scripts``
  package, so it loads anywhere MLflow, torch and MONAI are installed, without the bundle. It is logged as
  MLflow's "models from code" (``MODEL_CODE`` builds it when loaded): nothing is pickled.
- ``RegisterGenerator``: after training, logs that model in the training's MLflow run, registers it as
  a new version of ``registered_model_name`` (tagged with its validation score) and moves
  ``model_alias`` to the new version only if its score beats the holder's.
- ``load_generator``: G_S (or the paired G, or a restorer) from a weights file or from a registered model,
  ``models:/<name>@<alias>`` or ``models:/<name>/<version>``, for inference and evaluation; a version of another
  kind (its logged ``builder``) or, for a restorer, of another task (its training run's ``task``) is refused.
  ``load_models``: several, by name (evaluate.yaml's ``models``, restore_evaluate.yaml's ``model_paths``).
  ``trained_settings``: the settings it was trained to be applied with (the registered version's settings.json,
  or the file training wrote beside the weights: the paired G's per-system intensity ranges).

The tracking store is ``MLFLOW_TRACKING_URI`` when that is set, else the config's ``tracking_uri``:
the precedence of MONAI's ``MLFlowHandler``, so that every MLflow user of a process agrees.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

import mlflow
import mlflow.pyfunc
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec
from scripts.data.transforms import RobustNormalised
from scripts.errors import InputError
from scripts.inference.sliding_window import (
    WEIGHTS_DIGEST,
    enhance,
    load_weights,
    read_settings,
    sliding_window,
    weights_digest,
)
from scripts.nets.networks import Generator3D, ResNetGenerator, unwrap
from scripts.nets.paired import PairedGenerator, residual_unet

logger = logging.getLogger("zsegan")

WEIGHTS, SETTINGS = "generator.pt", "settings.json"  # the logged model's artifacts
MODEL_NAME = "model"  # the logged model's name in its run
WEIGHTS_TAG = WEIGHTS_DIGEST  # a registered version's tag: the digest of the generator's state_dict
# the logged model is "models from code" (MLflow): this file, run when the model is loaded, builds it from the
# logged copy of ``scripts``; its weights and settings are artifacts. Nothing is pickled.
MODEL_CODE = (
    "zstack_enhancer.py",
    '"""G_S as an MLflow pyfunc model (scripts.ops.registry.ZStackEnhancer), built from code."""\n\n'
    "import mlflow.models\n\nfrom scripts.ops.registry import ZStackEnhancer\n\n"
    "mlflow.models.set_model(ZStackEnhancer())\n",
)
#: what rebuilds a logged generator from its ``network_args`` (settings.json's ``builder``): G_S's class, the
#: default, the paired workflow's G, or the multi-defect restorer (restore_train.yaml)
BUILDERS = {"Generator3D": Generator3D, "residual_unet": residual_unet, "ResNetGenerator": ResNetGenerator}
#: each builder's generator: its class (exactly: G_S's Generator3D is a ResNetGenerator too) and what it is, in
#: messages. A registered version loads only into a network_def of its builder's class.
KINDS = {
    "Generator3D": (Generator3D, "ZSE-GAN's G_S"),
    "residual_unet": (PairedGenerator, "the paired workflow's G"),
    "ResNetGenerator": (ResNetGenerator, "a multi-defect restorer"),
}


def builder_of(settings: Mapping) -> str:
    """The builder that ``settings`` name (settings.json's ``builder``); "Generator3D" (G_S) for settings written
    before the paired workflow, which name none."""
    return settings.get("builder", "Generator3D")


def build(settings: Mapping) -> torch.nn.Module:
    """The generator that ``settings`` (``builder``, ``network_args``) describe, untrained."""
    return BUILDERS[builder_of(settings)](**settings["network_args"])


def network_as_trained(settings: Mapping | None, network_def: torch.nn.Module) -> torch.nn.Module:
    """The untrained generator that ``settings`` describe when they describe one of ``network_def``'s kind (the paired
    evaluation's L1-only baseline: built as it was trained, whatever the config's network keys say of G), else
    ``network_def`` itself (no settings, or another kind, which :func:`check_architecture` then refuses)."""
    if not settings or not settings.get("network_args"):
        return network_def
    builder = builder_of(settings)
    if builder not in KINDS or type(unwrap(network_def)) is not KINDS[builder][0]:
        return network_def
    return build(settings)


def spatial_dims(settings: Mapping) -> int:
    """3 for G_S (ZYX stacks), the paired G's ``spatial_dims`` (2: YX images)."""
    return int(settings["network_args"].get("spatial_dims", 3))


def input_planes(settings: Mapping) -> int:
    """The planes of the z-stacks a paired G takes as channels (``--input_planes``); 1: inputs shaped as outputs (and
    for settings without ``network_args``: weights written before them)."""
    return int(settings.get("network_args", {}).get("in_channels", 1))


def signature(ndim: int = 3, system: bool = False, in_ndim: int | None = None) -> ModelSignature:
    """Float32 in and out, ``ndim`` axes of any size (ZYX stacks or YX images; the input ``in_ndim`` when it differs:
    a z-stack in, an image out); with ``system``, the parameter ``system`` (a string, the input's microscope system)
    of a G trained with ``system_normalisation``."""
    spec = TensorSpec(np.dtype(np.float32), (-1,) * ndim)
    given = TensorSpec(np.dtype(np.float32), (-1,) * (in_ndim or ndim))
    params = ParamSchema([ParamSpec("system", "string", None)]) if system else None
    return ModelSignature(inputs=Schema([given]), outputs=Schema([spec]), params=params)


def input_example(ndim: int = 3, planes: int = 4) -> np.ndarray:
    """A small float32 ramp of ``ndim`` axes (``planes`` planes of 16 x 16, or 16 x 16) that the logged model is
    shown."""
    shape = (planes, 16, 16)[-ndim:]
    return np.linspace(0.0, 1.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)


# what importing scripts.ops.registry needs (the logged model's environment)
REQUIREMENTS = ("mlflow", "torch", "monai", "numpy", "nibabel", "tifffile", "pillow")
MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))")
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


# ----------------------------------------------------------------------------- the tracking store


def tracking_uri_in_use(tracking_uri: str | None) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``tracking_uri`` (the precedence of MONAI's MLFlowHandler)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri
    if not uri:
        raise InputError(None, "no MLflow tracking store: set --tracking_uri or MLFLOW_TRACKING_URI")
    return str(uri)


@contextmanager
def _tracking(uri: str, timeout: int | None = None) -> Iterator[mlflow.MlflowClient]:
    """A client of ``uri``, with MLflow's fluent API on ``uri`` too, for the block (restored after).

    With ``timeout`` (seconds), HTTP requests in the block are tried once and wait at most that long.
    """
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_HTTP_REQUEST_TIMEOUT", *QUICK_HTTP)
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri})
    if timeout is not None:
        os.environ.update({**QUICK_HTTP, "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout))})
    fluent = mlflow.get_tracking_uri(), mlflow.get_registry_uri()  # differ from uri if set by mlflow.set_*_uri
    for setter, previous in zip((mlflow.set_tracking_uri, mlflow.set_registry_uri), fluent, strict=False):
        if previous != uri:
            setter(uri)
    try:
        yield mlflow.MlflowClient(uri, uri)
    finally:
        for setter, previous in zip((mlflow.set_tracking_uri, mlflow.set_registry_uri), fluent, strict=False):
            if previous != uri:
                setter(previous)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def unreachable(uri: str, timeout: int = 5) -> str | None:
    """None when the tracking server at ``uri`` answers, else why not. Local stores (SQLite) always answer."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with _tracking(uri, timeout) as client:
            client.search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any failure means the store cannot be used
        text = str(e)
        if "timed out" in text.lower():
            return f"no answer within {timeout} s"
        errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)  # e.g. "[Errno 111] Connection refused"
        return errno[0] if errno else _first_line(e)
    return None


def check_tracking(tracking_uri: str | None, fallback: str = "fail", local_uri: str | None = None) -> str:
    """The tracking store training will use, checked before training starts; returns its URI.

    When the server cannot be reached, raise InputError naming it (``fallback="fail"``), or with
    ``fallback="local"`` say so and track in ``local_uri`` instead: ``MLFLOW_TRACKING_URI`` is set to
    it for this process, which every MLflow handler (MONAI's too) follows.
    """
    if fallback not in ("fail", "local"):
        raise InputError(None, f"--tracking_fallback must be 'fail' or 'local', got {fallback!r}")
    uri = tracking_uri_in_use(tracking_uri)
    problem = unreachable(uri)
    if problem is None:
        logger.info(f"MLflow tracking store: {uri}")
        return uri
    if fallback == "fail" or not local_uri:
        raise InputError(
            uri,
            f"the MLflow tracking server cannot be reached ({problem}). Start it or correct --tracking_uri "
            "(or MLFLOW_TRACKING_URI); or pass --tracking_fallback local to track in the local store instead",
        )
    logger.warning(
        f"the MLflow tracking server {uri} cannot be reached ({problem}): tracking in the local store "
        f"{local_uri} instead (tracking_fallback: local)"
    )
    os.environ["MLFLOW_TRACKING_URI"] = local_uri
    return local_uri


# ----------------------------------------------------------------------------- the logged model


class ZStackEnhancer(mlflow.pyfunc.PythonModel):
    """G_S as an MLflow pyfunc model: ``predict(stack)`` enhances a z-stack, any size, in its own units (or the
    paired workflow's G, ``builder`` "residual_unet": ``predict(image)`` for a YX image, or a ZYX stack in 3D).

    Artifacts: ``generator.pt`` (the plain state_dict) and ``settings.json``: ``builder`` (a key of
    :data:`BUILDERS`, "Generator3D" when absent), ``network_args`` (its arguments),
    ``intensity_lower``/``intensity_upper`` (percentiles mapped to -1/1 per stack; or ``intensity_range``, fixed
    intensities (lo, hi) mapped to -1/1 for every stack, the multi-defect restorer's), ``system_ranges`` (the paired
    G's trained with ``system_normalisation``: {system: (lo, hi)} of its training inputs; null or absent otherwise)
    and the sliding window's ``sw_roi_size``, ``sw_batch_size``, ``sw_overlap``, ``sw_overlap_px``, ``sw_mode``,
    ``sw_tiling`` (as in inference.yaml: ``inference.sliding_window.sliding_window`` builds it; ``sw_overlap_px`` and
    ``sw_tiling``, absent from models logged before them, are then null and blend). Runs on CUDA when available.

    A G with ``system_ranges`` is given the input's system with it, ``predict(image, params={"system": "A"})``, and
    maps the input by that system's range, as it was trained; a system without one, by the input's own percentiles
    (the range paired inference computes for a system G was not trained on, from the inputs it is given).
    """

    def load_context(self, context) -> None:
        settings = json.loads(Path(context.artifacts[SETTINGS]).read_text())
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.network = load_weights(build(settings), context.artifacts[WEIGHTS], self.device)
        self.planes = input_planes(settings)
        lower, upper, fixed = settings["intensity_lower"], settings["intensity_upper"], settings.get("intensity_range")
        self.normalise = RobustNormalised("image", lower, upper, intensity_range=fixed)
        ranges = settings.get("system_ranges") or {}
        self.system_ranges = {str(k): (float(v[0]), float(v[1])) for k, v in ranges.items()}
        self.inferer = sliding_window(
            settings.get("sw_tiling", "blend"),  # models logged before sw_tiling and sw_overlap_px: blend, fractional
            settings["sw_roi_size"],
            settings["sw_batch_size"],
            settings["sw_overlap"],
            settings.get("sw_overlap_px"),
            settings["sw_mode"],
            self.network,
        )

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        """``model_input``: a ZYX float32 numpy stack; returns G_S's enhanced stack, same shape and units (a paired G
        with ``input_planes``: a ZYX stack of that many planes in, the middle plane's YX image out).
        ``params``: ``{"system": ...}``, the input's microscope system, for a G trained with system_normalisation."""
        normalise = self._normalise((params or {}).get("system"))
        planes = self.planes > 1
        if planes and (np.ndim(model_input) != 3 or np.shape(model_input)[0] != self.planes):
            raise InputError(None, f"G takes z-stacks of {self.planes} planes (ZYX), got shape {np.shape(model_input)}")
        return enhance(self.network, model_input, self.inferer, normalise, self.device, planes_as_channels=planes)

    def _normalise(self, system: str | None) -> RobustNormalised:
        """The input's mapping: the settings' (no ``system_ranges``), else ``system``'s range or its own percentiles."""
        if not self.system_ranges:
            return self.normalise
        known = ", ".join(sorted(self.system_ranges))
        if not system:
            raise InputError(
                None,
                "G was trained with system_normalisation: pass the input's microscope system, params={'system': "
                f"'<name>'}} (G's systems: {known}; another is mapped by the input's own percentiles)",
            )
        if system in self.system_ranges:
            return RobustNormalised("image", intensity_range=self.system_ranges[system])
        logger.info(
            f"system {system} is not among the systems G was trained on ({known}): mapped by its own percentiles"
        )
        return self.normalise


def requirements() -> list[str]:
    """Pinned pip requirements of the logged model: the installed versions of ``REQUIREMENTS``."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def log_generator(model_path: str | Path, settings: Mapping, run_id: str, tracking_uri: str):
    """Log ``model_path`` (G_S's state_dict) as a ``ZStackEnhancer`` model named "model" in run ``run_id``.

    The model is MLflow's "models from code": its code is a copy of the bundle's ``scripts`` package (its .py
    files) and ``MODEL_CODE``, which builds it; nothing is pickled. Returns MLflow's ModelInfo.
    """
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "scripts"
        package = Path(__file__).resolve().parents[1]
        for source in package.rglob("*.py"):
            (code / source.relative_to(package)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, code / source.relative_to(package))
        (Path(tmp) / SETTINGS).write_text(json.dumps(dict(settings), indent=2))
        shutil.copy2(model_path, Path(tmp) / WEIGHTS)  # artifacts keep their file names
        (Path(tmp) / MODEL_CODE[0]).write_text(MODEL_CODE[1])
        systems = sorted(settings.get("system_ranges") or {})
        ndim, planes = spatial_dims(settings), input_planes(settings)
        example = input_example(3 if planes > 1 else ndim, planes if planes > 1 else 4)
        with _tracking(tracking_uri), mlflow.start_run(run_id=run_id):
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(Path(tmp) / MODEL_CODE[0]),  # models from code: nothing pickled
                artifacts={name: str(Path(tmp) / name) for name in (WEIGHTS, SETTINGS)},
                code_paths=[str(code)],
                signature=signature(ndim, system=bool(systems), in_ndim=3 if planes > 1 else ndim),
                # and the type hint: no MLflow warnings; a G trained per system is shown its first system's
                input_example=(example, {"system": systems[0]}) if systems else example,
                pip_requirements=requirements(),
            )


def _alias_holder(client: mlflow.MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(e).lower():
            return None
        raise


def register_generator(
    model_uri: str,
    name: str,
    tracking_uri: str,
    score_name: str,
    score: float | None,
    alias: str | None = None,
    better=lambda current, best: current > best,
    tags: Mapping[str, str] | None = None,
):
    """Register ``model_uri`` as a new version of ``name``, tagged ``{score_name: score}`` (exact: ``repr``);
    move ``alias`` to it when there is no holder yet, or when ``better(score, holder's score)`` (a tie stays
    with the holder). Returns the new ModelVersion; with a ``weights_sha256`` tag (``WEIGHTS_TAG``) that a
    version of ``name`` already has, that version, registered once (a finished training run again)."""
    tags = {**(tags or {}), **({} if score is None else {score_name: repr(float(score))})}
    with _tracking(tracking_uri) as client:
        digest = tags.get(WEIGHTS_TAG)
        if digest is not None:
            same = [v for v in client.search_model_versions(f"name={name!r}") if v.tags.get(WEIGHTS_TAG) == digest]
            if same:
                logger.info(f"these weights are registered already, as model {name!r} version {same[0].version}")
                return same[0]
        new = mlflow.register_model(model_uri, name, tags=tags)
        scored = f"{score_name} {score:.6g}" if score is not None else f"no {score_name}"
        logger.info(f"registered the generator as model {name!r} version {new.version} ({scored}) in {tracking_uri}")
        if not alias:
            return new
        holder = _alias_holder(client, name, alias)
        held = None if holder is None else holder.tags.get(score_name)
        if holder is None:
            move, why = True, f"alias {alias!r} had no holder"
        elif score is None:
            move, why = False, f"version {new.version} has no {score_name} to compare"
        elif held is None:
            move, why = True, f"the holder, version {holder.version}, has no {score_name}"
        else:
            move = bool(better(score, float(held)))
            relation = "beats" if move else "does not beat"
            why = f"{score_name} {score!r} {relation} version {holder.version}'s {float(held)!r}"
        if move:
            client.set_registered_model_alias(name, alias, new.version)
            logger.info(f"alias {alias!r} of model {name!r} moved to version {new.version}: {why}")
        else:
            logger.info(f"alias {alias!r} of model {name!r} stays on version {holder.version}: {why}")
        return new


class RegisterGenerator:
    """The last step of training: G_S to MLflow as a model, registered, the alias moved if it is better.

    Called with the trainer after ``trainer.run()``: by then ``model_path`` (``handlers.ExportGenerator``)
    and the final checkpoint are written, so a failure here loses no weights. It

    1. takes the validation score of the final weights: the validator's key metric (``val_sharpness``,
       higher is better; compared with the validator's own ``metric_cmp_fn``) from the validation
       after the last epoch, running that validation now if the last epoch was not validated;
    2. logs ``model_path`` as a ``ZStackEnhancer`` model in the training's MLflow run (the run of
       ``mlflow_handler``, whose handler must not close it on completion: this step closes it);
    3. registers it as a new version of ``registered_model_name`` (None: log only) with the score and the
       weights' digest as version tags (weights registered already are not registered again), and moves
       ``model_alias`` (None: none) to it if the score beats the holder's (exactly; a tie stays).

    If logging or registering fails, the run is marked FAILED and InputError says where the weights are
    and how to finish: running the same training command again resumes from the final checkpoint,
    trains no further, and does this step again.

    Args:
        network_args: the generator's arguments (as in ``network_def``): ``networks.Generator3D``'s for G_S.
        inference: the logged model's ``intensity_lower``, ``intensity_upper``, ``sw_roi_size``,
            ``sw_batch_size``, ``sw_overlap``, ``sw_overlap_px``, ``sw_mode`` and ``sw_tiling`` (as inference.yaml);
            the paired G's ``system_ranges`` ({system: (lo, hi)} with system_normalisation, else null).
            ``settings`` (these with ``builder`` and ``network_args``) is what ``handlers.ExportGenerator`` writes
            beside the weights file too.
        model_path: G_S's weights file written by training (models/model.pt).
        mlflow_handler: the trainer's MONAI MLFlowHandler (its run gets the model).
        tracking_uri: the config's tracking store (``MLFLOW_TRACKING_URI`` wins when set).
        validator: the validation evaluator, for the score; None: no score.
        registered_model_name: the registered model's name; None: the model is logged, not registered.
        model_alias: the alias that follows the best validated version; None: no alias.
        checkpoint_dir: where the final checkpoint is (named in messages).
        builder: what rebuilds the generator from ``network_args``, a key of :data:`BUILDERS`
            ("residual_unet" for the paired workflow's G, "ResNetGenerator" for the multi-defect restorer).
        network: the network ``model_path`` was exported from, checked against the logged model (default: the
            trainer's ``g_s`` or ``generator``; the paired workflow passes the average of G's weights when it keeps
            one).
    """

    def __init__(
        self,
        network_args: Mapping,
        inference: Mapping,
        model_path: str,
        mlflow_handler,
        tracking_uri: str | None = None,
        validator=None,
        registered_model_name: str | None = "zsegan",
        model_alias: str | None = "champion",
        checkpoint_dir: str | None = None,
        builder: str = "Generator3D",
        network: torch.nn.Module | None = None,
    ):
        if builder not in BUILDERS:
            raise ValueError(f"builder must be one of {list(BUILDERS)}, got {builder!r}")
        self.settings = {"builder": builder, "network_args": dict(network_args), **dict(inference)}
        self.model_path, self.mlflow_handler, self.tracking_uri = Path(model_path), mlflow_handler, tracking_uri
        self.validator, self.checkpoint_dir = validator, checkpoint_dir
        self.registered_model_name, self.model_alias = registered_model_name, model_alias
        self.network = network

    def score(self, trainer) -> tuple[str, float | None]:
        """(key metric name, its value for the final weights), validating now if needed."""
        validator = self.validator
        if validator is None:
            return "val_sharpness", None
        if validator.state.epoch != trainer.state.epoch:
            logger.info(f"validating the final weights (epoch {trainer.state.epoch}) for the registry")
            validator.run(trainer.state.epoch)
        name = validator.state.key_metric_name
        value = validator.state.metrics.get(name)
        return name, None if value is None else float(value)

    def __call__(self, trainer):
        """Log, register, move the alias; close the MLflow run. Returns the new ModelVersion (or None)."""
        run = self.mlflow_handler.cur_run
        if run is None:
            raise RuntimeError("the trainer's MLflow handler has no run: it must not close its run on completion")
        run_id, uri = run.info.run_id, tracking_uri_in_use(self.tracking_uri)
        score_name, score = self.score(trainer)
        try:
            self._check_settings(trainer)
            info = log_generator(self.model_path, self.settings, run_id, uri)
            logger.info(f"the generator logged as an MLflow model: {info.model_uri} (run {run_id})")
            new = None
            if self.registered_model_name:
                better = getattr(self.validator, "metric_cmp_fn", lambda current, best: current > best)
                weights = torch.load(self.model_path, map_location="cpu", weights_only=True)
                tags = {"epoch": str(trainer.state.epoch), WEIGHTS_TAG: weights_digest(weights)}
                new = register_generator(
                    info.model_uri, self.registered_model_name, uri, score_name, score, self.model_alias, better, tags
                )
        except Exception as e:
            self._fail(run_id, uri, e)
        self.mlflow_handler.close()
        return new

    def _check_settings(self, trainer) -> None:
        """The logged model must compute what the network ``model_path`` was exported from computes: same weights,
        same outputs."""
        network = self.network
        if network is None:
            # no "or": a compiled G_S has no truth value
            network = getattr(trainer, "g_s", getattr(trainer, "generator", None))
        if network is None:
            return
        network = unwrap(network)  # on one process: a DDP forward would wait for the other processes
        device = next(network.parameters()).device
        rebuilt = load_weights(build(self.settings), self.model_path, device)
        shape = (1, 1, 8, 16, 16) if spatial_dims(self.settings) == 3 else (1, input_planes(self.settings), 16, 16)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
        with torch.no_grad():
            same = torch.allclose(network.eval()(x), rebuilt(x), atol=1e-4)
        if not same:
            raise ValueError("train#register#network_args do not describe network_def: keep them equal")

    def _fail(self, run_id: str, uri: str, error: Exception) -> NoReturn:
        from scripts.ops.handlers import latest_checkpoint  # here only: the logged model must not need plotting

        checkpoint = latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        safe = f"{self.model_path}" + (f" and the final checkpoint {checkpoint}" if checkpoint else "")
        try:
            with _tracking(uri, timeout=5) as client:
                client.set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001 - the store may be the problem; the message below matters more
            pass
        registered = f" and registered as {self.registered_model_name!r}" if self.registered_model_name else ""
        cause = _first_line(error).rstrip(".")
        raise InputError(
            None,
            f"training finished but the generator was not logged to MLflow ({uri}){registered}: {cause}. "
            f"Its weights are safe in {safe}. Fix the cause, then run the same training command again: "
            "it resumes from the final checkpoint, trains no further, and logs and registers the generator",
        ) from error


# ----------------------------------------------------------------------------- loading back


def _model_version(client: mlflow.MlflowClient, model_uri: str, tracking_uri: str):
    """The ModelVersion that ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` names."""
    match = MODEL_URI.fullmatch(model_uri.strip())
    if match is None:
        raise InputError(model_uri, "not a registered model: use models:/<name>@<alias> or models:/<name>/<version>")
    name, alias, number = match["name"], match["alias"], match["version"]
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        known = sorted(m.name for m in client.search_registered_models(max_results=20))
        raise InputError(
            model_uri, f"no registered model {name!r} in {tracking_uri} (registered: {', '.join(known) or 'none'})"
        ) from e
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException as e:
        aliases = client.get_registered_model(name).aliases
        query = f"name='{name}'"  # noqa: B907 (an MLflow filter string)
        versions = sorted(int(v.version) for v in client.search_model_versions(query))
        what = f"no alias {alias!r}" if alias else f"no version {number}"
        aliases_text = ", ".join(f"{a} -> {v}" for a, v in aliases.items()) or "none"
        raise InputError(model_uri, f"model {name!r} has {what} (versions: {versions}; aliases: {aliases_text})") from e


def _check_kind(network_def: torch.nn.Module, settings: Mapping | None, model_uri: str, version) -> None:
    """Refuse a version whose logged ``builder`` (settings.json) makes another kind of generator than
    ``network_def``. Nothing to check when the version logged no settings or ``network_def`` is of no known kind."""
    wanted = next((builder for builder, (cls, _) in KINDS.items() if type(network_def) is cls), None)
    builder = None if settings is None else builder_of(settings)
    if wanted is None or builder is None or builder == wanted:
        return
    what = KINDS[builder][1] if builder in KINDS else f"a {builder!r} generator"
    raise InputError(
        model_uri, f"version {version} is {what} (builder {builder}), not {KINDS[wanted][1]} ({wanted}) as expected"
    )


def check_architecture(network_def: torch.nn.Module, settings: Mapping | None, source: str | Path) -> None:
    """Refuse weights whose settings (``builder``, ``network_args``) describe another network than ``network_def``:
    weights load into any network with the same parameters, so a G trained without norms (or with instance norms,
    which hold none) would otherwise run with the config's norms in silence. Nothing to check without settings."""
    if not settings or not settings.get("network_args") or builder_of(settings) not in BUILDERS:
        return
    if repr(build(settings)) != repr(unwrap(network_def)):
        builder = builder_of(settings)
        trained = inspect.signature(BUILDERS[builder]).bind(**settings["network_args"])
        trained.apply_defaults()  # a key written before it existed: its default then, which the message must show
        raise InputError(
            source, "was trained as another network than the config builds: its settings say "
            f"{builder}({', '.join(f'{k}={v!r}' for k, v in trained.arguments.items())}); "
            "set the config's network keys to those (a null one in a YAML file added to --config_file)",
        )  # fmt: skip


def _check_task(client: mlflow.MlflowClient, found, task: str | None, model_uri: str) -> None:
    """Refuse a version whose training run records (its ``task`` param) another task than ``task``. Nothing to
    check without ``task``, or when the run records none (registered from Python, or the run deleted)."""
    if task is None:
        return
    try:
        trained = client.get_run(found.run_id).data.params.get("task") if found.run_id else None
    except MlflowException:
        trained = None
    if trained is None:
        logger.info(f"{model_uri}: its training run records no task; taken as a restorer for {task}")
    elif trained != str(task):
        raise InputError(
            model_uri,
            f"version {found.version} is a restorer for {trained} (its training run's --task), not for {task}",
        )


def _logged_settings(model_uri: str, found, folder: str) -> dict | None:
    """The settings.json version ``found`` logged with its weights, or None (a version logged otherwise)."""
    try:
        return json.loads(Path(_artifact(model_uri, found, SETTINGS, folder, SETTINGS)).read_text())
    except (InputError, ValueError):  # no readable settings: nothing recorded about its kind
        return None


@contextmanager
def _registered_version(model_uri: str, tracking_uri: str | None):
    """(the store's URI, the ModelVersion ``model_uri`` names), the store on for the block. InputError naming the URI
    for a store that is missing or cannot be reached, a bad URI, an unknown model, alias or version."""
    uri = tracking_uri_in_use(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise InputError(
            model_uri,
            f"no MLflow store at {uri}: train first, or set --tracking_uri (evaluations: --model_tracking_uri) "
            "to the model's store",
        )
    problem = unreachable(uri)
    if problem is not None:
        raise InputError(model_uri, f"the MLflow tracking server {uri} cannot be reached ({problem})")
    with _tracking(uri) as client:
        yield uri, _model_version(client, model_uri, uri)


def _artifact(model_uri: str, found, name: str, folder: str, what: str) -> str:
    """The logged model's artifact ``name`` of version ``found``, downloaded into ``folder``; InputError naming
    ``model_uri`` when the version holds none (``what`` it should be)."""
    try:
        return mlflow.artifacts.download_artifacts(
            f"models:/{found.name}/{found.version}/artifacts/{name}", dst_path=folder
        )
    except Exception as e:  # noqa: BLE001 - a version without it is bad input
        raise InputError(model_uri, f"version {found.version} holds no {what} ({_first_line(e)})") from e


def load_generator(
    network_def: torch.nn.Module,
    model_path: str | Path | None = None,
    model_uri: str | None = None,
    tracking_uri: str | None = None,
    device: str | torch.device = "cpu",
    task: str | None = None,
) -> torch.nn.Module:
    """A generator (G_S, the paired G, a restorer) with its weights, from ``model_uri`` when given, else from
    the file ``model_path``.

    ``model_uri``: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``, looked up in the
    tracking store (``MLFLOW_TRACKING_URI`` when set, else ``tracking_uri``). The version's weights are
    loaded into ``network_def``, which must have its architecture (as for a weights file). A bad URI,
    an unknown model, alias or version, or an unreachable server raise InputError naming the URI; so do a
    version of another kind than ``network_def`` (its logged ``builder``: G_S, the paired G, a restorer) and,
    with ``task`` (a restorer's defect task), a version whose training run records another ``task``. Weights whose
    settings (beside the file, or logged with the version) describe another architecture than ``network_def`` are
    refused too (:func:`check_architecture`).
    """
    if not model_uri:
        if model_path is None:
            raise InputError(None, "no weights: set --model_path or --model_uri")
        check_architecture(network_def, read_settings(model_path), model_path)  # before a state dict's error
        return load_weights(network_def, model_path, device)
    with _registered_version(model_uri, tracking_uri) as (uri, found), tempfile.TemporaryDirectory() as tmp:
        logged = _logged_settings(model_uri, found, tmp)
        _check_kind(network_def, logged, model_uri, found.version)
        _check_task(mlflow.MlflowClient(uri), found, task, model_uri)
        check_architecture(network_def, logged, model_uri)
        weights = _artifact(model_uri, found, WEIGHTS, tmp, "generator weights")
        try:
            network = load_weights(network_def, weights, device)
        except InputError as e:
            raise InputError(model_uri, f"version {found.version}: {e.problem}") from e
    logger.info(f"weights from {model_uri} (model {found.name!r} version {found.version}, {uri})")
    return network


def trained_settings(
    model_path: str | Path | None = None, model_uri: str | None = None, tracking_uri: str | None = None
) -> dict:
    """How the generator that ``load_generator`` loads was trained to be applied: the settings of the registered
    version ``model_uri`` (its settings.json, as ``ZStackEnhancer`` reads them), else those training wrote beside the
    weights file ``model_path`` (``inference.sliding_window.read_settings``); {} where there are none (weights written
    before them). For the paired G: ``system_ranges``, its training inputs' ranges per system, or null."""
    if not model_uri:
        return {} if model_path is None else read_settings(model_path)
    with _registered_version(model_uri, tracking_uri) as (_, found), tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(_artifact(model_uri, found, SETTINGS, tmp, SETTINGS)).read_text())


def load_models(
    network_def: torch.nn.Module,
    sources: Mapping[str, str],
    device,
    tracking_uri: str | None = None,
    key: str | None = None,
    task: str | None = None,
) -> dict:
    """name → a generator like ``network_def`` from a weights file, a training checkpoint, or a registered MLflow
    model (``models:/…``, looked up in ``tracking_uri``; ``task``: as for :func:`load_generator`). ``key``: the
    config key of ``sources``, named with the name in errors (``--model_paths 'cgan': models:/…: …``)."""
    if sources is not None and not isinstance(sources, Mapping):
        raise InputError(key, f"must map names to weights files or models:/ URIs, got {sources!r}")
    models = {}
    for name, source in (sources or {}).items():
        source = str(source)
        uri, path = (source, None) if source.startswith("models:/") else (None, source)
        try:
            models[name] = load_generator(copy.deepcopy(network_def), path, uri, tracking_uri, device, task)
        except InputError as e:
            if key is None:
                raise
            raise InputError(f"{key} {name!r}", str(e)) from e
    return models
