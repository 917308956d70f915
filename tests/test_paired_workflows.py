"""End-to-end runs of the paired workflow's configs (train, inference, evaluate) on tiny simulated pairs, and its
clean refusals of bad pairs (one line, exit 2, nothing written)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from scripts.data.io import read_image, read_stack, write_image, write_stack
from scripts.data.pairs import paired_datalist, split_by_image, system_intensity_ranges
from scripts.inference.sliding_window import read_settings
from scripts.nets.paired import residual_unet
from scripts.ops.handlers import latest_checkpoint
from scripts.ops.registry import trained_settings
from scripts.simulate.fluorescence import simulate_pairs
from test_workflows import CONFIGS, ROOT, _expect_clean_failure, _killed_at, bundle_run

pytestmark = pytest.mark.slow

TINY_NET = ["--u_channels", "[4, 8, 16, 32]", "--sw_roi_size", "[32, 32]"]
TINY_TRAIN = TINY_NET + ["--d_channels", "8", "--crop_size", "32", "--batch_size", "2", "--log_interval", "1"]
SYSTEMS = ["--train_systems", "['A_', 'B_']"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("paired")
    simulate_pairs(path, n_per_system=4, size=48, seed=0, progress=False)
    return path


def train(dataset: Path, out: Path, *extra: str):
    args = ["--dataset_dir", str(dataset), "--output_dir", str(out / "run"), "--model_path", str(out / "paired.pt")]
    return bundle_run("training", "paired_train.yaml", *args, *TINY_TRAIN, *SYSTEMS, *extra)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("paired_trained")
    result = train(dataset, out, "--max_epochs", "2", "--val_interval", "1", "--checkpoint_interval", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_training_writes_weights_checkpoints_and_tracks(trained):
    assert (trained / "paired.pt").is_file()
    assert list((trained / "run" / "checkpoints").glob("state_*.pt"))
    assert (trained / "run" / "mlflow.db").is_file() and (trained / "run" / "config.yaml").is_file()


def test_training_registers_g_and_it_loads_back_by_alias(trained, dataset, tmp_path):
    uri = f"sqlite:///{trained / 'run' / 'mlflow.db'}"
    # in a fresh process: mlflow.set_tracking_uri would leak into this one's environment (and its subprocesses)
    load = (
        "import sys, mlflow, numpy as np, tifffile; "
        "model = mlflow.pyfunc.load_model('models:/zsegan_paired@champion'); "
        "image = tifffile.imread(sys.argv[1]).astype(np.float32); "
        "print(model.predict(image).shape == image.shape)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MLFLOW_TRACKING_URI": uri}
    image = str(dataset / "widefield" / "C_00000.tif")
    result = subprocess.run([sys.executable, "-c", load, image], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.strip().endswith("True"), result.stderr[-3000:]  # a YX image in, the same shape out
    args = ["--input_path", image, "--output_dir", str(tmp_path / "out")]
    result = bundle_run(
        "inference", "paired_inference.yaml", *args, "--model_uri", "models:/zsegan_paired@champion",
        "--tracking_uri", uri, *TINY_NET,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "C_00000_confocal.tif").is_file()


@pytest.mark.parametrize(
    "switches",
    [["--augment_input", "False"], ["--augment_input", "True", "--system_normalisation", "True", "--ema_decay", "0.9"]],
)
def test_a_resumed_training_ends_bit_for_bit_as_an_uninterrupted_one(dataset, tmp_path, switches):
    """Killed in the middle of epoch 2 (after a validation), then run again with the same command: the same G,
    bit for bit. What is random, and how it is resumed: the order of the pairs (``ResumableSampler``, its place in
    the pass saved), the crops, flips and rotations, and with ``augment_input`` the nuisances of the input (the
    transforms' generators, saved), torch's, numpy's and Python's global generators (saved), the optimisers and
    schedulers (in the checkpoint), the average of G's weights (``ema_decay``); validation draws nothing (its loader
    has its own generator)."""
    short = ["--max_epochs", "3", "--val_interval", "1", "--checkpoint_interval", "3", *switches]  # 2 batches a pass

    def command(out: Path) -> list[str]:
        args = ["--dataset_dir", str(dataset), "--output_dir", str(out / "run"), "--model_path", str(out / "paired.pt")]
        config = str(CONFIGS / "paired_train.yaml")
        return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config,
                *args, *TINY_TRAIN, *SYSTEMS, *short]  # fmt: skip

    reference = subprocess.run(command(tmp_path / "ref"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = torch.load(tmp_path / "ref" / "paired.pt", weights_only=True)
    out = tmp_path / "killed"
    _killed_at(command(out), out / "run" / "checkpoints" / "state_checkpoint_3.pt")
    assert not (out / "paired.pt").exists(), "the run was not interrupted"
    again = subprocess.run(command(out), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resuming from" in again.stdout + again.stderr, again.stderr[-3000:]
    resumed = torch.load(out / "paired.pt", weights_only=True)
    assert resumed.keys() == expected.keys()
    for key, value in expected.items():  # one process on the CPU: exact (a tolerance would hide a lost state)
        assert torch.equal(resumed[key], value), key


def test_with_ema_decay_the_exported_g_is_the_average_of_its_weights(dataset, tmp_path):
    result = train(dataset, tmp_path, "--max_epochs", "2", "--val_interval", "1", "--ema_decay", "0.9")
    assert result.returncode == 0, result.stderr[-3000:]
    exported = torch.load(tmp_path / "paired.pt", weights_only=True)
    state = torch.load(latest_checkpoint(tmp_path / "run" / "checkpoints"), weights_only=True)
    average = {k.removeprefix("module."): v for k, v in state["generator_average"].items() if k != "n_averaged"}
    assert exported.keys() == average.keys() == state["generator"].keys()
    assert all(torch.equal(exported[k], average[k]) for k in exported)
    assert any(not torch.equal(exported[k], state["generator"][k]) for k in exported)  # not G's last weights


def test_augmentation_changes_only_the_input_and_is_the_same_from_the_same_seed(dataset):
    """train#preprocessing with augment_input: every nuisance drawn (prob 1), the target as without augmentation,
    the input not; the same seed gives the same pair, another seed another."""
    from monai.bundle import ConfigParser

    def first_pair(augment: bool, seed: int) -> dict:
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "paired_train.yaml"))
        always = {"prob": 1.0}
        parser.update({"dataset_dir": str(dataset), "crop_size": 32, "train_systems": ["A_", "B_"],
                       "augment_input": augment, **{f"aug_{n}#prob": always["prob"] for n in
                                                    ("shift", "blur", "haze", "gain", "offset", "noise")}})  # fmt: skip
        transform = parser.get_parsed_content("train#preprocessing")
        transform.set_random_state(seed)
        return transform(parser.get_parsed_content("split")[0][0])

    plain, augmented = first_pair(False, 0), first_pair(True, 0)
    assert torch.equal(plain["label"], augmented["label"])  # the same crop, flips, rotation: the target unchanged
    assert not torch.equal(plain["image"], augmented["image"])
    assert torch.equal(first_pair(True, 0)["image"], augmented["image"])
    assert not torch.equal(first_pair(True, 1)["image"], augmented["image"])


@pytest.mark.parametrize(
    "override, phrase",
    [
        (["--aug_gain", "{'prob': 2, 'range': [0, 0.1]}"], "--aug_gain {'prob': 2, 'range': [0, 0.1]}: must be"),
        (["--aug_blur#range", "[1.0, 0.5]"], "--aug_blur"),
        (["--augment_input", "yes"], "--augment_input 'yes': must be True or False"),
    ],
)
def test_a_bad_augmentation_value_is_one_clear_line_and_no_output(dataset, tmp_path, override, phrase):
    result = train(dataset, tmp_path / "out", "--max_epochs", "1", *override)
    _expect_clean_failure(result, phrase)
    assert result.returncode == 2 and not (tmp_path / "out").exists()


def test_system_normalisation_refuses_files_without_a_system_label(dataset, tmp_path):
    unlabelled = tmp_path / "unlabelled"
    for side in ("widefield", "confocal"):
        (unlabelled / side).mkdir(parents=True)
        for f in sorted((dataset / side).glob("*.tif")):
            shutil.copy(f, unlabelled / side / f.name.replace("_", ""))  # A_00000.tif -> A00000.tif
    args = ["--dataset_dir", str(unlabelled), "--output_dir", str(tmp_path / "out" / "run")]
    result = bundle_run("training", "paired_train.yaml", *args, *TINY_TRAIN, "--system_normalisation", "True")
    _expect_clean_failure(result, "A00000.tif: has no system label")
    assert result.returncode == 2 and not (tmp_path / "out").exists()


def test_a_g_trained_per_system_takes_its_ranges_to_inference(dataset, trained, tmp_path):
    """--system_normalisation True: the training split's ranges go with G, beside the weights file and in the
    registered model, and paired_inference.yaml applies G with them from either (an unseen system, C, by its own
    inputs, said in one line), as paired_evaluate.yaml does (which refuses an L1-only generator trained without them);
    an input without a system label is one clear line, and nothing is written."""
    result = train(dataset, tmp_path, "--max_epochs", "1", "--val_interval", "1", "--system_normalisation", "True")
    assert result.returncode == 0, result.stderr[-3000:]
    train_split = split_by_image(paired_datalist(dataset), 0.1, 0.2, 0, ["A_", "B_"])[0]
    expected = {system: list(r) for system, r in system_intensity_ranges(train_split).items()}
    assert list(expected) == ["A", "B"]
    assert read_settings(tmp_path / "paired.pt")["system_ranges"] == expected
    uri = f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    registered = trained_settings(model_uri="models:/zsegan_paired@champion", tracking_uri=uri)
    assert registered["system_ranges"] == expected
    outputs = {}
    for source in (["--model_path", str(tmp_path / "paired.pt")],
                   ["--model_uri", "models:/zsegan_paired@champion", "--tracking_uri", uri]):  # fmt: skip
        out = tmp_path / source[0][2:]
        args = ["--input_path", str(dataset / "widefield"), "--output_dir", str(out), *source, *TINY_NET]
        result = bundle_run("inference", "paired_inference.yaml", *args)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "system C is not among the systems G was trained on (A, B)" in result.stdout + result.stderr
        outputs[source[0]] = {f.name: read_image(f)[0] for f in sorted(out.iterdir())}
    assert len(outputs["--model_path"]) == 12 and outputs["--model_path"].keys() == outputs["--model_uri"].keys()
    args = ["--dataset_dir", str(dataset), "--rl_iterations", "0", "--model_path", str(tmp_path / "paired.pt")]
    result = bundle_run(
        "evaluate", "paired_evaluate.yaml", *args, "--output_dir", str(tmp_path / "ev"), *TINY_NET, *SYSTEMS
    )
    assert result.returncode == 0, result.stderr[-3000:]  # the evaluation too maps inputs by the ranges stored with G
    assert "inputs mapped by their systems' intensity ranges, as G was trained" in result.stdout + result.stderr
    assert "system C is not among the systems G was trained on (A, B)" in result.stdout + result.stderr
    other = ["--l1_model_path", str(trained / "paired.pt"), "--output_dir", str(tmp_path / "refused_l1")]
    result = bundle_run("evaluate", "paired_evaluate.yaml", *args, *other, *TINY_NET, *SYSTEMS)
    _expect_clean_failure(result, "paired.pt: was trained with other per-system intensity ranges than")
    assert result.returncode == 2 and not (tmp_path / "refused_l1").exists()
    for name, image in outputs["--model_path"].items():
        np.testing.assert_array_equal(image, outputs["--model_uri"][name], err_msg=name)
    (tmp_path / "unlabelled").mkdir()
    shutil.copy(dataset / "widefield" / "A_00000.tif", tmp_path / "unlabelled" / "A_00000.tif")
    shutil.copy(dataset / "widefield" / "A_00001.tif", tmp_path / "unlabelled" / "cell.tif")
    args = ["--input_path", str(tmp_path / "unlabelled"), "--output_dir", str(tmp_path / "refused")]
    result = bundle_run(
        "inference", "paired_inference.yaml", *args, "--model_path", str(tmp_path / "paired.pt"), *TINY_NET
    )
    _expect_clean_failure(result, "cell.tif: has no system label", "G's systems: A, B")
    assert result.returncode == 2 and not (tmp_path / "refused").exists()


def test_inference_keeps_size_dtype_and_pixel_size(trained, dataset, tmp_path):
    args = [
        "--input_path",
        str(dataset / "widefield"),
        "--output_dir",
        str(tmp_path),
        "--model_path",
        str(trained / "paired.pt"),
    ]
    result = bundle_run("inference", "paired_inference.yaml", *args, *TINY_NET)
    assert result.returncode == 0, result.stderr[-3000:]
    out, meta = read_image(tmp_path / "C_00001_confocal.tif")
    original, original_meta = read_image(dataset / "widefield" / "C_00001.tif")
    assert out.shape == original.shape and out.dtype == original.dtype
    assert meta["spacing"] == pytest.approx(original_meta["spacing"])


def test_evaluation_reports_every_method_on_the_test_pairs(trained, dataset, tmp_path):
    args = [
        "--dataset_dir", str(dataset), "--output_dir", str(tmp_path), "--model_path", str(trained / "paired.pt"),
        "--l1_model_path", str(trained / "paired.pt"), "--rl_iterations", "3",
    ]  # fmt: skip
    result = bundle_run("evaluate", "paired_evaluate.yaml", *args, *TINY_NET, *SYSTEMS)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"input", "gan", "l1", "richardson_lucy", "confocal"}
    assert {r["view"] for r in rows} >= {"all", "C"}  # the unseen system is tested
    assert (tmp_path / "views" / "test_pairs.png").is_file()


def _break(folder: Path, how: str) -> None:
    name = "A_00001.tif"
    if how == "missing partner":
        (folder / "confocal" / name).unlink()
    elif how == "size mismatch":
        write_image(folder / "confocal" / name, np.zeros((48, 40), np.uint16))
    elif how == "misregistration":
        write_image(folder / "widefield" / name, np.roll(read_image(folder / "widefield" / name)[0], 8, axis=0))
    else:
        write_stack(folder / "widefield" / name, np.ones((3, 48, 48), np.uint16), {"dtype": "uint16"})


@pytest.mark.parametrize(
    "how, phrase",
    [
        ("missing partner", "has no partner"),
        ("size mismatch", "differ in size"),
        ("misregistration", "misregistered"),
        ("wrong dimensionality", "expected a 2D image"),
    ],
)
def test_a_bad_pair_is_one_clear_line_and_no_output(dataset, tmp_path, how, phrase):
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    _break(bad, how)
    out = tmp_path / "out"
    result = train(bad, out, "--max_epochs", "1")
    _expect_clean_failure(result, "A_00001.tif", phrase)
    assert result.returncode == 2
    assert not out.exists()


def test_torchscript_export_gives_the_generators_output(trained, tmp_path):
    cmd = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(tmp_path / "paired.ts"),
        "--ckpt_file", str(trained / "paired.pt"), "--meta_file", "configs/metadata.json",
        "--config_file", "configs/paired_inference.yaml", "--u_channels", "[4, 8, 16, 32]",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1] / "bundle", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    g = residual_unet(2, (4, 8, 16, 32), top_conv_only=True)  # as the config (and training) builds it
    g.load_state_dict(torch.load(trained / "paired.pt", weights_only=True))
    x = torch.rand(1, 1, 40, 56) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(tmp_path / "paired.ts")(x), g.eval()(x), atol=1e-5)


def test_z_stack_pairs_train_and_infer_in_3d(tmp_path):
    rng = np.random.default_rng(0)
    meta = {"dtype": "uint16", "spacing": (1.0, 0.5, 0.5), "unit": "um"}
    for i in range(4):
        confocal = ndimage.gaussian_filter(rng.random((8, 32, 32)), 1) * 1000
        widefield = ndimage.gaussian_filter(confocal, 2) + rng.normal(0, 5, confocal.shape) + 100
        write_stack(tmp_path / "data" / "widefield" / f"s{i}.tif", widefield, meta)
        write_stack(tmp_path / "data" / "confocal" / f"s{i}.tif", confocal, meta)
    three_d = ["--spatial_dims", "3", "--u_channels", "[4, 8, 16, 32]", "--sw_roi_size", "[-1, 16, 16]"]
    args = [
        "--dataset_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "run"),
        "--model_path", str(tmp_path / "paired3d.pt"), "--d_channels", "8", "--crop_size", "16", "--batch_size", "1",
        "--max_epochs", "1", "--val_fraction", "0.25", "--test_fraction", "0.25",
    ]  # fmt: skip
    result = bundle_run("training", "paired_train.yaml", *args, *three_d)
    assert result.returncode == 0, result.stderr[-3000:]
    args = ["--input_path", str(tmp_path / "data" / "widefield"), "--output_dir", str(tmp_path / "out")]
    result = bundle_run(
        "inference", "paired_inference.yaml", *args, "--model_path", str(tmp_path / "paired3d.pt"), *three_d
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out, out_meta = read_stack(tmp_path / "out" / "s0_confocal.tif")
    assert out.shape == (8, 32, 32) and out.dtype == np.uint16 and out_meta["spacing"] == pytest.approx((1.0, 0.5, 0.5))


def test_wide_field_z_stacks_in_train_evaluate_and_infer_to_the_middle_planes_image(tmp_path):
    """--input_planes 3: G takes wide-field z-stacks of 3 planes as channels and gives the confocal image of the middle
    plane; training checks and registers it (its settings carry the planes), the evaluation scores the middle plane as
    the input, inference (from the file and from the registry) writes 2D images with the stack's pixel size, and a
    stack of other planes, or an even number of planes, is one clear line with nothing written."""
    data = tmp_path / "data"
    simulate_pairs(data, n_per_system=4, size=48, seed=0, progress=False, planes=3)
    result = train(data, tmp_path, "--max_epochs", "1", "--val_interval", "1", "--input_planes", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_settings(tmp_path / "paired.pt")["network_args"]["in_channels"] == 3
    args = [
        "--dataset_dir",
        str(data),
        "--model_path",
        str(tmp_path / "paired.pt"),
        "--output_dir",
        str(tmp_path / "ev"),
    ]
    result = bundle_run("evaluate", "paired_evaluate.yaml", *args, *TINY_NET, *SYSTEMS)  # planes: as G was trained
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "ev" / "metrics.csv").open()))
    first = {r["method"]: r for r in rows if r["image"] == rows[0]["image"]}
    assert {"input", "gan", "richardson_lucy", "confocal"} <= set(first)
    stack, confocal = (
        read_stack(data / "widefield" / first["input"]["image"])[0],
        read_image(data / "confocal" / first["input"]["image"])[0],
    )
    from scripts.evaluation.paired import compare, unit_range

    expected = compare(unit_range(stack[1]), unit_range(confocal))["psnr"]
    assert float(first["input"]["psnr"]) == pytest.approx(expected, rel=1e-6)  # the input row: the middle plane
    uri = f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    outputs = []
    for source in (["--model_path", str(tmp_path / "paired.pt")],
                   ["--model_uri", "models:/zsegan_paired@champion", "--tracking_uri", uri]):  # fmt: skip
        out = tmp_path / source[0][2:]
        args = ["--input_path", str(data / "widefield" / "C_00000.tif"), "--output_dir", str(out), *source, *TINY_NET]
        result = bundle_run("inference", "paired_inference.yaml", *args)
        assert result.returncode == 0, result.stderr[-3000:]
        image, meta = read_image(out / "C_00000_confocal.tif")
        assert image.shape == (48, 48) and meta["spacing"] == pytest.approx((0.32, 0.32))
        outputs.append(image)
    np.testing.assert_array_equal(*outputs)
    args = ["--input_path", str(data / "confocal"), "--output_dir", str(tmp_path / "refused")]
    result = bundle_run("inference", "paired_inference.yaml", *args, "--model_path", str(tmp_path / "paired.pt"))
    _expect_clean_failure(result, "A_00000.tif: is a 2D image")  # G takes z-stacks of 3 planes
    assert result.returncode == 2 and not (tmp_path / "refused").exists()
    result = train(data, tmp_path / "even", "--max_epochs", "1", "--input_planes", "4")
    _expect_clean_failure(result, "--input_planes 4: must be 1 or an odd number of planes")
    assert result.returncode == 2 and not (tmp_path / "even").exists()
