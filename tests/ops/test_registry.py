"""G_S in MLflow: the tracking-store check, the logged pyfunc model, registry aliases, loading back,
and end-to-end runs against a real ``mlflow server`` and an unreachable one."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer
from scripts.data.io import read_stack, write_stack
from scripts.data.transforms import RobustNormalised
from scripts.errors import InputError
from scripts.inference.sliding_window import HaloInferer, enhance, write_settings
from scripts.nets.architecture import default_generator
from scripts.nets.networks import Generator3D
from scripts.nets.paired import residual_unet
from scripts.ops.cli import prepare
from scripts.ops.handlers import save_state_dict_atomic
from scripts.ops.registry import (
    SETTINGS,
    WEIGHTS,
    WEIGHTS_TAG,
    ZStackEnhancer,
    check_tracking,
    load_generator,
    log_generator,
    register_generator,
    trained_settings,
)
from scripts.simulate.zstacks import simulate_dataset
from test_workflows import CONFIGS, ROOT, TINY_NET, _expect_clean_failure, bundle_run, train_args

pytestmark = pytest.mark.slow  # end-to-end runs: not in the quick lane (pytest -m 'not slow')

MAIN = "/venv/lib/python3.11/site-packages/monai/bundle/__main__.py"
SHORT = ["--max_epochs", "1", "--epoch_length", "2", "--val_interval", "1", "--checkpoint_interval", "2"]
SETTINGS_TINY = {
    "network_args": {"channels": 4, "n_residual_blocks": 1},
    "intensity_lower": 0.5, "intensity_upper": 99.5,
    "sw_roi_size": [-1, 32, 32], "sw_batch_size": 4, "sw_overlap": 0.25, "sw_mode": "gaussian",
}  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data")
    simulate_dataset(path, n_stacks=4, n_infocus=4, size=40, depth=17, seed=3, progress=False)
    return path


def free_port() -> int:
    """A loopback port nothing listens on (the OS picks one; it stays free for a while)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def tiny_generator(seed: int = 0) -> Generator3D:
    torch.manual_seed(seed)
    return Generator3D(channels=4, n_residual_blocks=1)


def same_weights(a: torch.nn.Module, path: Path) -> bool:
    saved = torch.load(path, weights_only=True)
    return all(torch.equal(v.cpu(), saved[k]) for k, v in a.state_dict().items())


@pytest.fixture
def no_tracking_env(monkeypatch):
    """No MLFLOW_TRACKING_URI from outside; whatever a test sets is undone after it."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(name, "-")  # records the value to restore, even when unset
        monkeypatch.delenv(name)


# ----------------------------------------------------------------------------- the tracking store


def test_local_store_needs_no_server_and_the_environment_wins(no_tracking_env, tmp_path, monkeypatch):
    local = sqlite_uri(tmp_path / "mlflow.db")
    assert check_tracking(local) == local
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(tmp_path / "other.db"))
    assert check_tracking(local) == sqlite_uri(tmp_path / "other.db")  # as MONAI's MLFlowHandler does


def test_unreachable_server_fails_fast_or_falls_back(no_tracking_env, tmp_path, caplog):
    server, local = f"http://127.0.0.1:{free_port()}", sqlite_uri(tmp_path / "mlflow.db")
    start = time.monotonic()
    with pytest.raises(InputError, match="cannot be reached") as raised:
        check_tracking(server, "fail", local)
    assert raised.value.path == server and "--tracking_fallback local" in str(raised.value)
    assert time.monotonic() - start < 10  # one try, no retry storm
    with caplog.at_level(logging.WARNING, logger="zsegan"):
        assert check_tracking(server, "local", local) == local
    assert os.environ["MLFLOW_TRACKING_URI"] == local  # every MLflow user of the process follows
    assert f"tracking in the local store {local}" in caplog.text
    with pytest.raises(InputError, match="tracking_fallback"):
        check_tracking(local, "retry", local)


def test_plain_tracking_mlflow_is_refused_for_training_only():
    train = [MAIN, "run", "training", "--config_file", str(CONFIGS / "train.yaml"), "--tracking", "mlflow"]
    with pytest.raises(InputError, match="mlflow_tracking.yaml"):
        prepare(argv=train)
    prepare(argv=[*train[:-1], str(CONFIGS / "mlflow_tracking.yaml")])  # the shipped settings file
    prepare(argv=[MAIN, "run", "inference", "--config_file", str(CONFIGS / "inference.yaml"), "--tracking", "mlflow"])


# ----------------------------------------------------------------------------- the logged model


def test_enhancer_maps_back_to_the_input_units(tmp_path):
    """With G_S replaced by the identity, normalisation, sliding window and inverse give the input back."""
    save_state_dict_atomic(tiny_generator(), tmp_path / WEIGHTS)
    (tmp_path / SETTINGS).write_text(json.dumps(SETTINGS_TINY))
    model = ZStackEnhancer()
    model.load_context(SimpleNamespace(artifacts={name: str(tmp_path / name) for name in (WEIGHTS, SETTINGS)}))
    stack = np.random.default_rng(0).uniform(200, 4000, (7, 45, 38)).astype(np.float32)
    enhanced = model.predict(None, stack)
    assert enhanced.shape == stack.shape and enhanced.dtype == np.float32
    model.network = torch.nn.Identity()
    np.testing.assert_allclose(model.predict(None, stack), stack, rtol=1e-5)


def test_the_enhancer_tiles_as_its_settings_say(tmp_path):
    """Issue 17: the logged settings carry sw_overlap_px and sw_tiling (a model logged before them blends, with the
    fractional overlap); a batch-norm G_S logged with halo tiling gives one window's output over the whole field."""
    torch.manual_seed(0)
    g_s = Generator3D(channels=4, n_residual_blocks=1, norm="batch")
    with torch.no_grad():
        g_s(torch.randn(1, 1, 8, 48, 48))  # running statistics
    save_state_dict_atomic(g_s, tmp_path / WEIGHTS)
    artifacts = SimpleNamespace(artifacts={name: str(tmp_path / name) for name in (WEIGHTS, SETTINGS)})
    settings = {**SETTINGS_TINY, "network_args": {"channels": 4, "n_residual_blocks": 1, "norm": "batch"}}
    (tmp_path / SETTINGS).write_text(json.dumps(settings))
    model = ZStackEnhancer()
    model.load_context(artifacts)
    assert isinstance(model.inferer, SlidingWindowInferer) and model.inferer.overlap == 0.25
    settings.update(sw_roi_size=[-1, 96, 96], sw_overlap_px=64, sw_tiling="halo", sw_batch_size=2)
    (tmp_path / SETTINGS).write_text(json.dumps(settings))
    model.load_context(artifacts)
    assert isinstance(model.inferer, HaloInferer) and model.inferer.halo == 32
    stack = np.random.default_rng(0).uniform(0, 40, (7, 141, 103)).astype(np.float32).cumsum(-1)  # odd y, x
    whole = enhance(model.network, stack, SimpleInferer(), RobustNormalised("image"))
    tiled = model.predict(None, stack)
    np.testing.assert_allclose(tiled, whole, rtol=1e-6)  # to float32 rounding


@pytest.fixture(scope="module")
def local_registry(tmp_path_factory):
    """A local store holding one logged tiny G_S (run "r"), and its ModelInfo."""
    folder = tmp_path_factory.mktemp("registry")
    uri = sqlite_uri(folder / "mlflow.db")
    save_state_dict_atomic(tiny_generator(), folder / "model.pt")
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("zsegan", (folder / "mlruns").as_uri()))
    info = log_generator(folder / "model.pt", SETTINGS_TINY, run.info.run_id, uri)
    return SimpleNamespace(folder=folder, uri=uri, client=client, info=info)


def test_the_logged_model_is_built_from_code_with_nothing_pickled(
    local_registry, no_tracking_env, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local_registry.uri)
    logged = Path(mlflow.artifacts.download_artifacts(local_registry.info.model_uri, dst_path=str(tmp_path)))
    names = {p.name for p in logged.rglob("*")}
    assert "zstack_enhancer.py" in names and not [n for n in names if n.endswith((".pkl", ".pickle"))]
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in (logged / "MLmodel").read_text()
    stack = np.random.default_rng(0).uniform(200, 4000, (7, 45, 38)).astype(np.float32)
    assert mlflow.pyfunc.load_model(str(logged)).predict(stack).shape == stack.shape


def test_alias_moves_only_to_a_better_version(local_registry, no_tracking_env):
    r = local_registry

    def register(score):
        version = register_generator(r.info.model_uri, "aliases", r.uri, "val_sharpness", score, "champion")
        return str(version.version), str(r.client.get_model_version_by_alias("aliases", "champion").version)

    assert register(0.5) == ("1", "1")  # the first version takes the alias
    assert register(0.4) == ("2", "1")  # worse: stays
    assert register(0.7) == ("3", "3")  # better: moves
    assert register(0.7) == ("4", "3")  # equal is not better
    assert register(None) == ("5", "3")  # no score: stays
    assert r.client.get_model_version("aliases", "3").tags["val_sharpness"] == "0.7"
    r.client.set_registered_model_alias("aliases", "champion", "5")
    assert register(0.1) == ("6", "6")  # a holder without a score loses to a scored version
    version = register_generator(r.info.model_uri, "aliases", r.uri, "val_sharpness", 0.9, None)
    assert str(r.client.get_model_version_by_alias("aliases", "champion").version) == "6" != str(version.version)


def test_scores_compare_exactly_and_the_same_weights_register_once(local_registry, no_tracking_env):
    r = local_registry

    def register(score, digest=None):
        tags = {WEIGHTS_TAG: digest} if digest else None
        version = register_generator(r.info.model_uri, "exact", r.uri, "val_sharpness", score, "champion", tags=tags)
        return str(version.version), str(r.client.get_model_version_by_alias("exact", "champion").version)

    assert register(0.5000004, "a") == ("1", "1")
    assert register(0.5000002, "b") == ("2", "1")  # worse below 6 digits: stays (rounded, it beat "0.5")
    assert register(0.5000004, "c") == ("3", "1")  # a tie stays with the holder
    assert register(0.9, "a") == ("1", "1")  # the same weights again (a finished training rerun): not registered
    assert len(r.client.search_model_versions("name='exact'")) == 3


def test_load_generator_by_alias_or_version_and_clear_errors(local_registry, no_tracking_env):
    r = local_registry
    register_generator(r.info.model_uri, "loads", r.uri, "val_sharpness", 0.5, "champion")
    for uri in ("models:/loads@champion", "models:/loads/1"):
        network = load_generator(tiny_generator(seed=1), model_uri=uri, tracking_uri=r.uri)
        assert same_weights(network, r.folder / "model.pt") and not network.training
    assert same_weights(load_generator(tiny_generator(1), r.folder / "model.pt"), r.folder / "model.pt")
    cases = {
        "models:/loads@nope": "no alias 'nope' (versions: [1]; aliases: champion -> 1)",
        "models:/loads/9": "no version 9",
        "models:/nope@champion": "no registered model 'nope'",
        "runs:/abc/model": "models:/<name>@<alias> or models:/<name>/<version>",
    }
    for uri, problem in cases.items():
        with pytest.raises(InputError, match="^" + uri) as raised:
            load_generator(tiny_generator(), model_uri=uri, tracking_uri=r.uri)
        assert problem in str(raised.value)
    with pytest.raises(InputError, match=r"^models:/loads/1: .*its settings say Generator3D\(.*, channels=4,"):
        load_generator(Generator3D(channels=8, n_residual_blocks=1), model_uri="models:/loads/1", tracking_uri=r.uri)
    missing = sqlite_uri(r.folder / "missing.db")
    with pytest.raises(InputError, match="no MLflow store"):
        load_generator(tiny_generator(), model_uri="models:/loads/1", tracking_uri=missing)
    assert not (r.folder / "missing.db").exists()
    with pytest.raises(InputError, match="cannot be reached"):
        load_generator(tiny_generator(), model_uri="models:/loads/1", tracking_uri=f"http://127.0.0.1:{free_port()}")


PAIRED_TINY = {
    "builder": "residual_unet", "network_args": {"spatial_dims": 2, "channels": [4, 8, 16, 32]},
    "intensity_lower": 0.5, "intensity_upper": 99.5, "system_ranges": {"A": [100.0, 6000.0], "B": [50.0, 900.0]},
    "sw_roi_size": [32, 32], "sw_batch_size": 1, "sw_overlap": 0.25, "sw_mode": "gaussian",
}  # fmt: skip


def test_the_enhancer_maps_an_input_by_its_systems_stored_range(tmp_path, caplog):
    """The paired G trained with system_normalisation, as an MLflow model: predict(image, params={"system": ...})
    maps the image by that system's stored range, a system without one by the image's own percentiles (one log
    line), and without a system it is one clear error; a G without ranges maps each image by its own, as before."""
    torch.manual_seed(0)
    save_state_dict_atomic(residual_unet(2, (4, 8, 16, 32)), tmp_path / WEIGHTS)
    (tmp_path / SETTINGS).write_text(json.dumps(PAIRED_TINY))
    model = ZStackEnhancer()
    model.load_context(SimpleNamespace(artifacts={name: str(tmp_path / name) for name in (WEIGHTS, SETTINGS)}))
    image = np.random.default_rng(0).uniform(800, 1300, (40, 48)).astype(np.float32)

    def mapped(intensity_range=None) -> np.ndarray:
        normalise = RobustNormalised("image", intensity_range=intensity_range)
        return enhance(model.network, image, model.inferer, normalise)

    np.testing.assert_allclose(model.predict(None, image, {"system": "A"}), mapped((100.0, 6000.0)), rtol=1e-6)
    assert np.abs(mapped((100.0, 6000.0)) - mapped()).max() > 100  # the range matters
    with caplog.at_level(logging.INFO, logger="zsegan"):
        np.testing.assert_allclose(model.predict(None, image, {"system": "C"}), mapped(), rtol=1e-6)
    assert "system C is not among the systems G was trained on (A, B)" in caplog.text
    with pytest.raises(InputError, match=r"params=\{'system': '<name>'\} \(G's systems: A, B"):
        model.predict(None, image)
    (tmp_path / SETTINGS).write_text(json.dumps({**PAIRED_TINY, "system_ranges": None}))
    model.load_context(SimpleNamespace(artifacts={name: str(tmp_path / name) for name in (WEIGHTS, SETTINGS)}))
    np.testing.assert_allclose(model.predict(None, image), mapped(), rtol=1e-6)


def test_a_registered_g_carries_its_system_ranges(local_registry, no_tracking_env, monkeypatch, tmp_path):
    """The round trip: logged with its settings, registered, found again by trained_settings (what
    paired_inference.yaml reads for --model_uri) and served by MLflow with the input's system as a parameter."""
    r = local_registry
    torch.manual_seed(0)
    save_state_dict_atomic(residual_unet(2, (4, 8, 16, 32)), tmp_path / "paired.pt")
    run = r.client.create_run(r.client.get_experiment_by_name("zsegan").experiment_id)
    info = log_generator(tmp_path / "paired.pt", PAIRED_TINY, run.info.run_id, r.uri)
    register_generator(info.model_uri, "paired_ranges", r.uri, "val_psnr", 20.0, "champion")
    settings = trained_settings(model_uri="models:/paired_ranges@champion", tracking_uri=r.uri)
    assert settings["system_ranges"] == PAIRED_TINY["system_ranges"]
    register_generator(r.info.model_uri, "no_ranges", r.uri, "val_sharpness", None)  # G_S: per stack, as before
    assert trained_settings(model_uri="models:/no_ranges/1", tracking_uri=r.uri).get("system_ranges") is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", r.uri)
    served = mlflow.pyfunc.load_model("models:/paired_ranges@champion")
    assert [p.name for p in served.metadata.signature.params.params] == ["system"]
    image = np.random.default_rng(0).uniform(800, 1300, (40, 48)).astype(np.float32)
    network = load_generator(residual_unet(2, (4, 8, 16, 32)), tmp_path / "paired.pt")
    expected = enhance(network, image, SlidingWindowInferer([32, 32], 1, 0.25, mode="gaussian"),
                       RobustNormalised("image", intensity_range=(50.0, 900.0)))  # fmt: skip
    np.testing.assert_allclose(served.predict(image, params={"system": "B"}), expected, rtol=1e-5)


# ----------------------------------------------------------------------------- end to end

FRESH_PROCESS = textwrap.dedent("""
    import sys, numpy as np, mlflow.pyfunc
    model = mlflow.pyfunc.load_model(sys.argv[1])
    import scripts
    spec = model.metadata.signature.inputs.inputs[0]
    print(scripts.__file__, spec.type, spec.shape)
    for name in sys.argv[2:]:
        np.save(name + ".out.npy", model.predict(np.load(name)))
    """)


def predict_in_a_fresh_process(model_uri: str, tracking_uri: str, *stacks: np.ndarray, cwd: Path) -> tuple[str, list]:
    """pyfunc predict of ``stacks`` in a new Python without the bundle on its path; (its stdout, outputs)."""
    names = []
    for i, stack in enumerate(stacks):
        np.save(cwd / f"stack{i}.npy", stack)
        names.append(str(cwd / f"stack{i}.npy"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MLFLOW_TRACKING_URI": tracking_uri}
    cmd = [sys.executable, "-c", FRESH_PROCESS, model_uri, *names]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, [np.load(name + ".out.npy") for name in names]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """``mlflow server`` on a free loopback port with its own SQLite store and artifact folder: (URI, folder)."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", sqlite_uri(folder / "server.db"), "--artifacts-destination", str(folder / "artifacts"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(folder / "server.log", "w") as log:
        server = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=log, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            log_tail = (folder / "server.log").read_text()[-2000:]
            assert server.poll() is None, f"mlflow server exited:\n{log_tail}"
            assert time.monotonic() < deadline, f"mlflow server not ready after 180 s:\n{log_tail}"
            time.sleep(0.5)
        yield uri, folder
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_training_on_a_tracking_server_registers_and_loads_back_by_alias(dataset, tracking_server, tmp_path):
    uri, folder = tracking_server
    tracking = ["--tracking_uri", uri, "--tracking", str(CONFIGS / "mlflow_tracking.yaml")]
    result = bundle_run("training", "train.yaml", *train_args(dataset, tmp_path, *SHORT, *tracking))
    assert result.returncode == 0, result.stderr[-3000:]

    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("zsegan").experiment_id])
    assert run.info.status == "FINISHED"
    for key in ("loss_G", "loss_G_S_adv", "loss_G_B_adv", "loss_cycle", "loss_D_S", "loss_D_B", "lr_G"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 2, key  # every iteration, once
    assert len(client.get_metric_history(run.info.run_id, "val_sharpness")) == 1
    version = client.get_model_version_by_alias("zsegan", "champion")
    assert str(version.version) == "1" and version.run_id == run.info.run_id
    assert float(version.tags["val_score"]) == pytest.approx(run.data.metrics["val_score"], rel=1e-5)
    assert list((folder / "artifacts").rglob(WEIGHTS)), "the server's artifact folder holds G_S"
    registered = load_generator(
        default_generator(channels=4, n_residual_blocks=1), model_uri="models:/zsegan@champion", tracking_uri=uri
    )
    assert same_weights(registered, tmp_path / "model.pt")

    rng = np.random.default_rng(1)
    stack = rng.uniform(100, 3000, (13, 37, 45)).astype(np.float32)
    write_stack(tmp_path / "in" / "a.tif", stack, {"dtype": "float32", "axes": "ZYX", "spacing": None, "unit": None})
    args = [
        "--input_path", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out"), "--sw_roi_size", "[-1, 32, 32]",
        "--sw_overlap_px", "16",
        "--model_uri", "models:/zsegan@champion", "--tracking_uri", uri, *TINY_NET,
    ]  # fmt: skip
    result = bundle_run("inference", "inference.yaml", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    by_config, _ = read_stack(tmp_path / "out" / "a_enhanced.tif")

    small = rng.uniform(0, 255, (6, 20, 24)).astype(np.float32)  # another size: the signature is dynamic
    printed, (by_pyfunc, small_out) = predict_in_a_fresh_process(
        "models:/zsegan@champion", uri, stack, small, cwd=tmp_path
    )
    code, kind, shape = printed.split(maxsplit=2)
    assert not Path(code).resolve().is_relative_to(ROOT), "the logged model must bring its own code"
    assert kind == "float32" and shape.strip() == "(-1, -1, -1)"
    assert small_out.shape == small.shape and by_pyfunc.dtype == np.float32
    np.testing.assert_allclose(by_pyfunc, by_config, rtol=1e-5)  # the same enhancement, two ways


def test_training_stops_before_its_first_iteration_when_the_server_is_unreachable(dataset, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    result = bundle_run("training", "train.yaml", *train_args(dataset, tmp_path, *SHORT, "--tracking_uri", uri))
    _expect_clean_failure(result, uri, "cannot be reached")
    assert "Epoch[" not in result.stdout + result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "model.pt").exists()


def test_offline_fallback_and_a_failed_registration_lose_no_weights(dataset, tmp_path):
    unreachable = f"http://127.0.0.1:{free_port()}"
    args = train_args(dataset, tmp_path, *SHORT, "--tracking_uri", unreachable, "--tracking_fallback", "local")
    local = sqlite_uri(tmp_path / "run" / "mlflow.db")

    first = bundle_run("training", "train.yaml", *args, "--registered_model_name", "bad/name")
    assert f"tracking in the local store {local} instead" in first.stdout + first.stderr
    checkpoint = tmp_path / "run" / "checkpoints" / "state_checkpoint_2.pt"
    _expect_clean_failure(first, "bad/name", str(tmp_path / "model.pt"), str(checkpoint), "same training command")
    assert (tmp_path / "model.pt").exists() and checkpoint.exists()

    second = bundle_run("training", "train.yaml", *args, "--registered_model_name", "offline")  # fixed, again
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {checkpoint}" in second.stdout + second.stderr
    client = mlflow.MlflowClient(local)
    (run,) = client.search_runs([client.get_experiment_by_name("zsegan").experiment_id])
    assert run.info.status == "FINISHED" and len(client.get_metric_history(run.info.run_id, "loss_G")) == 2
    assert str(client.get_model_version_by_alias("offline", "champion").version) == "1"
    registered = load_generator(
        default_generator(channels=4, n_residual_blocks=1), model_uri="models:/offline@champion", tracking_uri=local
    )
    assert same_weights(registered, tmp_path / "model.pt")


def test_evaluation_loads_registered_models_and_files_side_by_side(local_registry, no_tracking_env):
    from scripts.ops.registry import load_models

    r = local_registry
    register_generator(r.info.model_uri, "evaluated", r.uri, "val_sharpness", 0.5, "champion")
    models = load_models(
        tiny_generator(1),
        {"registered": "models:/evaluated@champion", "file": str(r.folder / "model.pt")},
        "cpu",
        r.uri,
    )
    assert list(models) == ["registered", "file"] and models["registered"] is not models["file"]
    assert all(same_weights(m, r.folder / "model.pt") for m in models.values())
    with pytest.raises(InputError, match="models:/evaluated@nope"):
        load_models(tiny_generator(1), {"G_S": "models:/evaluated@nope"}, "cpu", r.uri)


def test_an_empty_registered_model_name_logs_g_s_without_registering_it(dataset, tmp_path):
    """The README's way to skip registration: MONAI's command line drops `None` values, an empty one stays."""
    args = train_args(dataset, tmp_path, *SHORT, "--registered_model_name", "")
    result = bundle_run("training", "train.yaml", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the generator logged as an MLflow model" in result.stderr + result.stdout
    assert "registered the generator" not in result.stderr + result.stdout
    assert not mlflow.MlflowClient(sqlite_uri(tmp_path / "run" / "mlflow.db")).search_registered_models()


def test_a_finished_training_run_again_registers_no_duplicate(dataset, tmp_path):
    args = train_args(dataset, tmp_path, *SHORT, "--registered_model_name", "rerun")
    for _ in range(2):
        result = bundle_run("training", "train.yaml", *args)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "these weights are registered already, as model 'rerun' version 1" in result.stderr + result.stdout
    client = mlflow.MlflowClient(sqlite_uri(tmp_path / "run" / "mlflow.db"))
    assert [str(v.version) for v in client.search_model_versions("name='rerun'")] == ["1"]
    assert str(client.get_model_version_by_alias("rerun", "champion").version) == "1"


def test_weights_of_another_architecture_with_the_same_parameters_are_refused(tmp_path):
    """Instance norms without affine parameters hold no weights: a G trained without norms loads into one with them.
    The settings beside the weights say how it was trained, and load_generator refuses the mismatch."""
    args = {"spatial_dims": 2, "channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": None}
    trained = residual_unet(**args)
    path = tmp_path / "paired.pt"
    save_state_dict_atomic(trained, path)
    write_settings(path, {"builder": "residual_unet", "network_args": args})
    assert load_generator(residual_unet(**args), path) is not None  # as trained: loads
    with pytest.raises(InputError) as info:
        load_generator(residual_unet(**{**args, "norm": "instance"}), path)
    assert str(path) in str(info.value) and "another network than the config builds" in str(info.value)
    assert "norm=None" in str(info.value)


def test_weights_trained_before_top_conv_only_are_refused_by_a_config_that_builds_it(tmp_path):
    """Settings written before the key existed build G as it was then (the top normalised), which the config's linear
    top is not: one line naming the file, not a state dict error deep in torch."""
    args = {"spatial_dims": 2, "channels": [4, 8], "strides": [2], "num_res_units": 1}
    path = tmp_path / "paired.pt"
    save_state_dict_atomic(residual_unet(**args), path)
    write_settings(path, {"builder": "residual_unet", "network_args": args})
    with pytest.raises(InputError, match="another network than the config builds") as info:
        load_generator(residual_unet(**args, top_conv_only=True), path)
    assert "top_conv_only=False" in str(info.value)  # the default of the key the settings predate, shown
