"""Stage 2's configs: restore_train (laid over paired_train), restore_inference (over paired_inference) and
restore_evaluate agree on the restorer and follow MicroscopyGAN's recipe; restore_evaluate takes registered restorers
(models:/...) beside weights files and refuses unknown ones and ones of another kind or task; end-to-end runs on tiny
data with random VGG weights (marked slow): training validates on held-out real pairs and registers the restorer in
MLflow, the registered model restores volumes; and the one-line refusals of bad input."""

from __future__ import annotations

import ast
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from scripts.data.io import read_stack
from scripts.errors import InputError, find_input_error
from scripts.nets.networks import Generator3D, ResNetGenerator
from scripts.nets.vgg import save_random_vgg_weights
from scripts.ops.handlers import save_state_dict_atomic
from scripts.ops.registry import log_generator, register_generator
from scripts.simulate.defects import simulate_defect_dataset
from test_workflows import _expect_clean_failure

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "bundle" / "configs"
TRAIN = str([str(CONFIGS / "paired_train.yaml"), str(CONFIGS / "restore_train.yaml")])
INFERENCE = str([str(CONFIGS / "paired_inference.yaml"), str(CONFIGS / "restore_inference.yaml")])
EVALUATE = str(CONFIGS / "restore_evaluate.yaml")
SHARED = ["g_channels", "g_first_kernel", "g_downsamplings", "g_residual_blocks", "g_output", "g_long_skip", "network_def",
          "intensity_min", "intensity_max", "sw_roi_size", "task"]  # fmt: skip
TRAIN_INFERENCE = ["run_name"]  # restore_inference finds restore_train's weights and MLflow store by it
TINY_NET = ["--g_channels", "2", "--g_residual_blocks", "1", "--sw_roi_size", "[-1, 16, 16]"]
TINY_TRAIN = TINY_NET + ["--d_channels", "4", "--crop_size", "16", "--max_epochs", "1", "--epoch_length", "2"]


def bundle_run(workflow: str, config_file: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", config_file, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def parsed(files: list[str], *keys: str, **overrides) -> list:
    parser = ConfigParser(ConfigParser.load_config_files(files))
    parser.update(overrides)
    return [parser.get_parsed_content(key) for key in keys]


def test_the_restore_configs_share_the_restorer():
    train = ConfigParser.load_config_files([str(CONFIGS / n) for n in ("paired_train.yaml", "restore_train.yaml")])
    inference = ConfigParser.load_config_files(
        [str(CONFIGS / n) for n in ("paired_inference.yaml", "restore_inference.yaml")]
    )
    evaluate = ConfigParser.load_config_file(CONFIGS / "restore_evaluate.yaml")
    for key in SHARED:
        assert train[key] == inference[key] == evaluate[key], key
    for key in TRAIN_INFERENCE:
        assert train[key] == inference[key], key
    assert (train["restorer"], inference["restorer"]) == ("cgan", "l1")  # MicroscopyGAN's trained; the shipped one run
    assert inference["dataset_dir"] == train["simulated_dir"] == evaluate["simulated_dir"]
    layouts = [
        {k: tuple(v.shape) for k, v in ConfigParser(c).get_parsed_content("network_def").state_dict().items()}
        for c in (train, inference, evaluate)
    ]
    assert layouts[0] == layouts[1] == layouts[2]


def test_restore_train_is_microscopygans_restorer_and_l1_the_care_like_one():
    files = [str(CONFIGS / "paired_train.yaml"), str(CONFIGS / "restore_train.yaml")]
    keys = ("lambda_content", "lambda_adversarial", "adversarial_loss", "lambda_l1", "lr", "beta1", "beta2")
    assert parsed(files, *keys) == [1.0, 0.1, "bce", 0.0, 1e-4, 0.9, 0.999]
    assert parsed(files, *keys[:4], restorer="l1") == [0.0, 0.0, "bce", 1.0]
    assert parsed(files, "max_epochs", "epoch_length", "g_residual_blocks", "lr_decay_start") == [30, 100, 9, 1.0]
    (model_path,) = parsed(files, "model_path", restorer="l1", task="axial")
    assert model_path.endswith("/models/restore_axial_l1.pt")


@pytest.mark.parametrize("key", ["g_long_skip", "real_only"])
def test_restore_switches_must_be_booleans_not_the_string_false(key):
    """`--g_long_skip false` arrives as the string "false", which the generator would take as true: refused with
    one line naming the key (as `--real_only false`, which would silently drop the synthesised pairs)."""
    from scripts.ops.cli import check_values

    parser = ConfigParser(
        ConfigParser.load_config_files([str(CONFIGS / "paired_train.yaml"), str(CONFIGS / "restore_train.yaml")])
    )
    parser.update({key: "false"})
    with pytest.raises(InputError, match=rf"^--{key} 'false': must be True or False$"):
        check_values(parser)
    parser.update({key: False})
    check_values(parser)


@pytest.mark.parametrize("task", ["denoising", "axial", "super_resolution"])
def test_the_shipped_l1_restorers_restore_an_unseen_volume(task, tmp_path):
    """bundle/models/restore_<task>_l1.pt, trained by restore_train.yaml's defaults (--restorer l1 --real_only True)
    on the default defect data: restore_inference.yaml's defaults run it on a volume simulated from another seed,
    and its output is closer to the clean volume than the defective input and than cubic interpolation are
    (docs/multidefect.md's measures)."""
    from scripts.evaluation.restoration import restoration_scores
    from scripts.simulate.defects import add_defect

    simulate_defect_dataset(tmp_path / "data", tasks=[task], n_pairs=1, n_clean=1, n_test=1, seed=7, progress=False)
    test = tmp_path / "data" / task / "test"
    parser = ConfigParser(ConfigParser.load_config_files(ast.literal_eval(INFERENCE)))
    parser.update({"task": task, "input_path": str(test / "defective"), "output_dir": str(tmp_path / "out")})
    assert parser.get_parsed_content("model_path").endswith(f"/models/restore_{task}_l1.pt")
    parser.get_parsed_content("inference")
    (output,) = (tmp_path / "out").iterdir()
    clean, defective = (read_stack(test / side / "sim_00000.tif")[0] for side in ("clean", "defective"))
    before, after = (restoration_scores(v, clean) for v in (defective, read_stack(output)[0]))
    gain = {"denoising": 4.0, "axial": 4.0, "super_resolution": 0.5}[task]
    assert after["psnr"] > before["psnr"] + gain and after["ssim"] > before["ssim"], (before, after)
    if task != "denoising":
        cubic = restoration_scores(add_defect(clean, task, np.random.default_rng(0), order=3), clean)
        assert after["psnr"] > cubic["psnr"] and after["ssim"] > cubic["ssim"], (cubic, after)


def test_restore_evaluate_looks_registered_restorers_up_where_restore_inference_does():
    files = [str(CONFIGS / "paired_inference.yaml"), str(CONFIGS / "restore_inference.yaml")]
    (inference,) = parsed(files, "tracking_uri", task="axial", restorer="cgan")
    (evaluate,) = parsed([EVALUATE], "model_tracking_uri", task="axial")
    assert inference == evaluate and evaluate.endswith("/runs/restore_axial/mlflow.db")  # the cgan restorer's store
    (inference,) = parsed(files, "tracking_uri", task="axial")  # the shipped L1 restorer's, inference's default
    assert inference.endswith("/runs/restore_axial_l1/mlflow.db")


# ------------------------------------------------------------------ registered restorers in restore_evaluate.yaml

TINY_RESTORER = {"spatial_dims": 3, "channels": 2, "n_residual_blocks": 1, "first_kernel_size": 7, "output": "residual",
                 "long_skip": True}  # fmt: skip
TINY_EVALUATE = {"g_channels": 2, "g_residual_blocks": 1, "sw_roi_size": [-1, 16, 16], "sw_batch_size": 1}


@pytest.fixture
def own_tracking_env(monkeypatch):
    """No MLFLOW_TRACKING_URI from outside (it would win over the config's stores)."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def restorer_data(tmp_path_factory) -> dict:
    """A tiny defect dataset (axial, 2 test pairs) and a tiny restorer's weights (not the identity)."""
    folder = tmp_path_factory.mktemp("restorer")
    simulate_defect_dataset(
        folder / "data", tasks=["axial"], n_pairs=1, n_clean=1, n_test=2, size=24, depth=9, progress=False
    )
    torch.manual_seed(0)
    restorer = ResNetGenerator(**TINY_RESTORER)
    with torch.no_grad():
        for p in restorer.parameters():  # the residual generator starts as the identity: make it restore something
            p.normal_(0.0, 0.1)
    return {"folder": folder, "data": folder / "data", "weights": save_state_dict_atomic(restorer, folder / "r.pt")}


@pytest.fixture(scope="module")
def registry(restorer_data) -> dict:
    """``restorer_data`` and a SQLite MLflow store (about 10 s to make: the tests using it are slow) holding, as
    restore_train.yaml and train.yaml leave them: the tiny restorer, trained for axial, registered as
    zsegan_restore_axial (alias champion, version 1); the same weights as version 1 of zsegan_restore_denoising,
    from a run whose task is denoising; and a tiny G_S registered as zsegan."""
    folder = restorer_data["folder"]
    save_state_dict_atomic(Generator3D(channels=2, n_residual_blocks=1), folder / "g_s.pt")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, uri)
    experiment = client.create_experiment("zsegan_restore", (folder / "mlruns").as_uri())
    # restore_train.yaml's registration settings: paired_train.yaml's inference keys and the fixed intensity_range
    inference = {"intensity_lower": 0.5, "intensity_upper": 99.5, "intensity_range": [0, 255], "sw_overlap": 0.25,
                 "sw_roi_size": [-1, 16, 16], "sw_batch_size": 1, "sw_mode": "gaussian"}  # fmt: skip
    runs = {}
    for task in ("axial", "denoising"):  # a training run records its config's scalars as params (ops.cli.prepare)
        runs[task] = client.create_run(experiment).info.run_id
        client.log_param(runs[task], "task", task)
    settings = {"builder": "ResNetGenerator", "network_args": TINY_RESTORER, **inference}
    logged = log_generator(restorer_data["weights"], settings, runs["axial"], uri)
    register_generator(logged.model_uri, "zsegan_restore_axial", uri, "val_psnr", 20.0, "champion")
    client.create_registered_model("zsegan_restore_denoising")
    source = client.get_logged_model(logged.model_id).artifact_location  # the axial restorer's, in the denoising run
    client.create_model_version("zsegan_restore_denoising", source, runs["denoising"])
    g_s = {"network_args": {"channels": 2, "n_residual_blocks": 1}, **inference}  # train.yaml's builder: Generator3D
    g_s_logged = log_generator(folder / "g_s.pt", g_s, client.create_run(experiment).info.run_id, uri)
    register_generator(g_s_logged.model_uri, "zsegan", uri, "val_sharpness", 0.5, "champion")
    return {**restorer_data, "uri": uri}


def evaluate_in_process(data: dict, output_dir: Path, model_paths, **overrides) -> None:
    """restore_evaluate.yaml's ``evaluate`` on the tiny data (not logged to MLflow), registered restorers looked up
    in ``data["uri"]``."""
    parser = ConfigParser(ConfigParser.load_config_file(EVALUATE))
    parser.update({"task": "axial", "dataset_dir": str(data["data"]), "output_dir": str(output_dir),
                   "model_paths": model_paths, "model_tracking_uri": data.get("uri"), "tracking_uri": None,
                   "device": "cpu", **TINY_EVALUATE, **overrides})  # fmt: skip
    parser.get_parsed_content("evaluate")


def refusal(data: dict, output_dir: Path, model_paths, **overrides) -> str:
    """The one line (InputError) with which the evaluation stops; nothing may be written."""
    with pytest.raises(Exception) as raised:  # MONAI's parser wraps what its expressions raise
        evaluate_in_process(data, output_dir, model_paths, **overrides)
    error = find_input_error(raised.value)
    assert error is not None, raised.value
    assert "\n" not in str(error) and not output_dir.exists()
    return str(error)


@pytest.mark.slow
def test_a_registered_restorer_evaluates_as_its_weights_file_does(registry, own_tracking_env, tmp_path):
    sources = {"file": str(registry["weights"]), "alias": "models:/zsegan_restore_axial@champion",
               "version": "models:/zsegan_restore_axial/1"}  # fmt: skip
    evaluate_in_process(registry, tmp_path / "out", sources)
    with open(tmp_path / "out" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    by_method = {m: [{k: v for k, v in r.items() if k != "method"} for r in rows if r["method"] == m] for m in
                 ("input", "cubic", *sources)}  # fmt: skip
    assert len(by_method["file"]) == 2  # the 2 test pairs
    assert by_method["alias"] == by_method["file"] == by_method["version"]  # every measure, every volume, exactly
    assert by_method["file"] != by_method["input"]  # the restorer changes the volumes: the equality above means it
    assert all(np.isfinite(float(r["psnr"])) for r in by_method["file"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "source, problem",
    [
        ("models:/zsegan_restore_axial@best", "model 'zsegan_restore_axial' has no alias 'best' (versions: [1]; "
                                              "aliases: champion -> 1)"),
        ("models:/zsegan_restore_axial/7", "has no version 7"),
        ("models:/zsegan_restore_sr@champion", "no registered model 'zsegan_restore_sr' in sqlite:///"),
        ("models:/zsegan@champion", "version 1 is ZSE-GAN's G_S (builder Generator3D), not a multi-defect restorer"),
        ("models:/zsegan_restore_denoising/1", "version 1 is a restorer for denoising (its training run's --task), "
                                               "not for axial"),
    ],
)  # fmt: skip
def test_a_registered_restorer_that_does_not_resolve_or_fit_stops_before_anything_is_written(
    registry, own_tracking_env, tmp_path, source, problem
):
    error = refusal(registry, tmp_path / "out", {"l1": str(registry["weights"]), "cgan": source})
    assert error.startswith(f"--model_paths 'cgan': {source}: ") and problem in error, error


def test_restore_evaluate_names_the_restorer_that_cannot_be_had(restorer_data, own_tracking_env, tmp_path):
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    registered = {"cgan": "models:/zsegan_restore_axial@champion"}
    error = refusal(restorer_data, tmp_path / "out", registered, model_tracking_uri=missing)
    assert error == (
        f"--model_paths 'cgan': models:/zsegan_restore_axial@champion: no MLflow store at {missing}: train first, "
        "or set --tracking_uri (evaluations: --model_tracking_uri) to the model's store"
    )
    assert not (tmp_path / "none.db").exists()  # looked for, not made
    error = refusal(restorer_data, tmp_path / "out", {"l1": str(tmp_path / "l1.pt")})
    assert error.startswith(f"--model_paths 'l1': {tmp_path / 'l1.pt'}: no such weights file")
    error = refusal(restorer_data, tmp_path / "out", [str(restorer_data["weights"])])
    assert error.startswith("--model_paths: must map names to weights files or models:/ URIs, got [")


@pytest.mark.slow
def test_restore_evaluate_refuses_an_unknown_registered_restorer_in_one_line(registry, tmp_path):
    out = tmp_path / "out"
    args = [
        "--task",
        "axial",
        "--dataset_dir",
        str(registry["data"]),
        "--output_dir",
        str(out),
        "--model_tracking_uri",
        registry["uri"],
        "--model_paths",
        "{'cgan': 'models:/zsegan_restore_axial@best'}",
    ]
    result = bundle_run("evaluate", EVALUATE, *args, *TINY_NET)  # fmt: skip
    _expect_clean_failure(
        result, "--model_paths 'cgan': models:/zsegan_restore_axial@best: ", "has no alias 'best'", "champion -> 1"
    )
    assert len([line for line in result.stderr.splitlines() if line.startswith("error: ")]) == 1
    assert not out.exists()


# ------------------------------------------------------------------ end-to-end runs (slow)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("restore")
    data = path / "data"
    # 3 real pairs: the default val_fraction 0.2 holds 1 out for validation, 2 are trained on
    simulate_defect_dataset(data, tasks=["axial"], n_pairs=3, n_clean=1, n_test=2, size=24, depth=9, progress=False)
    for side in ("clean", "defective"):  # stands in for cingan_synthesise's output (the same layout)
        shutil.copytree(data / "axial" / "train" / side, data / "synthetic" / "axial" / side)
    return {"data": data, "vgg16": save_random_vgg_weights("vgg16", path / "vgg16.pth", "relu3_3")}


def train(setup: dict, out: Path, *extra: str):
    """restore_train on the tiny data (2 real pairs trained on, 1 validated on: ``--n_real 2`` unless ``extra``
    says otherwise)."""
    args = ["--dataset_dir", str(setup["data"]), "--output_dir", str(out), "--model_path", str(out / "model.pt")]
    real = [] if "--n_real" in extra else ["--n_real", "2"]
    return bundle_run("training", TRAIN, "--task", "axial", *args, *real, *TINY_TRAIN, *extra)


@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("restorers")
    cgan = train(
        setup, out / "cgan", "--vgg16_weights", str(setup["vgg16"]), "--log_interval", "1", "--val_interval", "1"
    )
    assert cgan.returncode == 0, cgan.stderr[-3000:]
    l1 = train(setup, out / "l1", "--restorer", "l1", "--real_only", "True")
    assert l1.returncode == 0, l1.stderr[-3000:]
    return {
        "cgan": out / "cgan",
        "l1": out / "l1",
        "cgan_log": cgan.stdout + cgan.stderr,
        "l1_log": l1.stdout + l1.stderr,
    }


@pytest.mark.slow
def test_the_restorers_train_on_the_pairs_asked_for_and_log_the_vgg_weights(trained):
    assert (
        "restorer for axial: 2 real and 3 synthesised pairs, validated on 1 held-out real pairs" in trained["cgan_log"]
    )
    assert "restorer for axial: 2 real and 0 synthesised pairs, validated on 1 held-out real pairs" in trained["l1_log"]
    assert "loss_G_content" in trained["cgan_log"]
    for name in ("cgan", "l1"):
        generator = ResNetGenerator(**{**TINY_RESTORER, "channels": 2})
        generator.load_state_dict(torch.load(trained[name] / "model.pt", weights_only=True))
        assert list((trained[name] / "checkpoints").glob("state_*.pt"))
    client = mlflow.MlflowClient(f"sqlite:///{trained['cgan'] / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("zsegan_restore").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["vgg16_weights_used"].startswith("other sha256:")  # random features, never "imagenet"


@pytest.mark.slow
def test_the_restorers_validate_and_are_registered_each_under_its_own_name(trained):
    for name, registered in (("cgan", "zsegan_restore_axial"), ("l1", "zsegan_restore_axial_l1")):
        client = mlflow.MlflowClient(*[f"sqlite:///{trained[name] / 'mlflow.db'}"] * 2)
        (run,) = client.search_runs([client.get_experiment_by_name("zsegan_restore").experiment_id])
        metrics = run.data.metrics
        assert {"val_psnr", "val_ssim", "val_input_psnr", "val_input_ssim", "val_mse"} <= set(metrics), name
        assert 0 < metrics["val_ssim"] <= 1 and np.isfinite(metrics["val_psnr"])
        champion = client.get_model_version_by_alias(registered, "champion")
        assert champion.run_id == run.info.run_id and float(champion.tags["val_psnr"]) == metrics["val_psnr"]
        assert run.info.status == "FINISHED"  # closed by the registration, after logging the model


@pytest.mark.slow
def test_the_registered_restorer_loads_and_restores_a_volume_as_its_weights_file_does(setup, trained, tmp_path):
    inputs = setup["data"] / "axial" / "test" / "defective"
    store = f"sqlite:///{trained['cgan'] / 'mlflow.db'}"
    outputs = {}
    for source, args in {
        "file": ["--model_path", str(trained["cgan"] / "model.pt")],
        "registry": ["--model_uri", "models:/zsegan_restore_axial@champion", "--tracking_uri", store],
    }.items():
        out = tmp_path / source
        result = bundle_run("inference", INFERENCE, "--task", "axial", "--input_path", str(inputs), "--output_dir",
                            str(out), *args, *TINY_NET)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[source] = read_stack(out / "sim_00000_restored.tif")[0]
    assert np.array_equal(outputs["file"], outputs["registry"])
    # the MLflow model itself, in a fresh process without the bundle on its path (its logged code builds it): a
    # volume in its units (0-255) in, the restored volume out, through the fixed intensity mapping
    load = (
        "import sys, mlflow, numpy as np, tifffile; "
        "model = mlflow.pyfunc.load_model('models:/zsegan_restore_axial@champion'); "
        "volume = tifffile.imread(sys.argv[1]).astype(np.float32); restored = model.predict(volume); "
        "expected = tifffile.imread(sys.argv[2]).astype(np.float32); "
        "print(restored.shape == volume.shape, np.abs(restored.clip(0, 255).round() - expected).max())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MLFLOW_TRACKING_URI": store}
    volume, expected = str(inputs / "sim_00000.tif"), str(tmp_path / "file" / "sim_00000_restored.tif")
    result = subprocess.run([sys.executable, "-c", load, volume, expected], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    same_shape, difference = result.stdout.split()[-2:] if result.stdout.strip() else ("", "")
    assert same_shape == "True" and float(difference) <= 1, result.stderr[-3000:]  # 1: rounding of the uint8 output


@pytest.mark.slow
def test_inference_and_evaluation_of_the_trained_restorers(setup, trained, tmp_path):
    inputs = setup["data"] / "axial" / "test" / "defective"
    args = ["--task", "axial", "--input_path", str(inputs), "--output_dir", str(tmp_path / "restored")]
    result = bundle_run("inference", INFERENCE, *args, "--model_path", str(trained["cgan"] / "model.pt"), *TINY_NET)
    assert result.returncode == 0, result.stderr[-3000:]
    for f in sorted(inputs.iterdir()):
        restored, meta = read_stack(tmp_path / "restored" / f"{f.stem}_restored.tif")
        assert restored.shape == read_stack(f)[0].shape and restored.dtype == np.uint8
    paths = {name: str(trained[name] / "model.pt") for name in ("cgan", "l1")}
    out = tmp_path / "evaluate"
    args = [
        "--task",
        "axial",
        "--dataset_dir",
        str(setup["data"]),
        "--output_dir",
        str(out),
        "--model_paths",
        str(paths),
    ]
    result = bundle_run("evaluate", EVALUATE, *args, *TINY_NET)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [s["method"] for s in summary] == ["input", "cubic", "cgan", "l1"] and {s["n"] for s in summary} == {"2"}
    assert (out / "views" / "axial.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, phrases",
    [
        (["--task", "deblur"], ["--task 'deblur'", "one of denoising, axial, super_resolution"]),
        (["--restorer", "gan"], ["--restorer 'gan'", "one of cgan, l1"]),
        (["--synthetic_dir", "/nonexistent/synthetic"], ["holds no synthesised pairs", "--real_only True"]),
        (["--dataset_dir", "/nonexistent/defects"], ["/nonexistent/defects: no such dataset folder"]),
        (["--n_real", "5", "--real_only", "True"], ["holds 2 real pairs besides the 1 validated on, fewer than the 5"]),
        (["--val_fraction", "0.1"], ["--val_fraction 0.1 of its 3 real pairs validates on none", "--val_fraction 0"]),
        (["--val_fraction", "1.5"], ["--val_fraction 1.5: must be a number in [0, 1)"]),
        (["--system_normalisation", "True"], ["--system_normalisation True", "a key of the paired workflow only"]),
    ],
)
def test_bad_training_input_is_one_clear_line_and_no_output(setup, tmp_path, extra, phrases):
    out = tmp_path / "run"
    _expect_clean_failure(train(setup, out, *extra), *phrases)
    assert not out.exists()


@pytest.mark.slow
def test_evaluation_without_the_weights_is_one_clear_line(setup, tmp_path):
    args = ["--dataset_dir", str(setup["data"]), "--output_dir", str(tmp_path / "out"), "--task", "axial"]
    result = bundle_run("evaluate", EVALUATE, *args, "--model_paths", "{'cgan': '/nonexistent/r.pt'}")
    _expect_clean_failure(result, "/nonexistent/r.pt", "no such weights file")
    assert not (tmp_path / "out").exists()
