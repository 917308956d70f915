"""End-to-end runs of the bundle's configs through ``python -m monai.bundle run``, on tiny simulated data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import tifffile
import torch
from scripts.data.io import read_stack, write_stack
from scripts.nets.architecture import default_generator
from scripts.simulate.zstacks import simulate_dataset

pytestmark = pytest.mark.slow  # end-to-end runs: not in the quick lane (pytest -m 'not slow')

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundle" / "configs"
# tiny networks and crops: the workflows are the same, only smaller
TINY_NET = ["--g_channels", "4", "--g_residual_blocks", "1"]
TINY_TRAIN = TINY_NET + [
    "--d_channels", "8", "--crop_size", "32", "--sw_roi_size", "[-1, 32, 32]", "--sw_overlap_px", "16",
    "--n_horizontal", "2", "--n_vertical", "2", "--log_interval", "1",
]  # fmt: skip


def bundle_run(workflow: str, config: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", str(CONFIGS / config), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def infer(inputs: Path, out: Path, trained: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["--input_path", str(inputs), "--output_dir", str(out), "--model_path", str(trained / "model.pt")]
    return bundle_run("inference", "inference.yaml", *args, *TINY_NET, *extra)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data")
    simulate_dataset(path, n_stacks=4, n_infocus=4, size=40, depth=17, seed=3, progress=False)
    return path


def train_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--dataset_dir", str(dataset), "--output_dir", str(out / "run"), "--model_path", str(out / "model.pt"),
        *TINY_TRAIN, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    result = bundle_run(
        "training",
        "train.yaml",
        *train_args(
            dataset,
            out,
            "--max_epochs",
            "2",
            "--epoch_length",
            "2",
            "--val_interval",
            "1",
            "--checkpoint_interval",
            "2",
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the last line says what was written where, and how long it took
    assert re.search(rf"trained 2 epochs into {re.escape(str(out))}\S* \(G_S: .*model.pt\) in \d+\.\d s", result.stdout)
    return out


def test_training_writes_every_artifact(trained):
    state = torch.load(trained / "model.pt", weights_only=True)
    default_generator(channels=4, n_residual_blocks=1).load_state_dict(state)  # a plain state_dict of G_S
    run_dir = trained / "run"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("state_*.pt")) == [
        "state_checkpoint_2.pt", "state_checkpoint_4.pt"
    ]  # fmt: skip
    assert sorted(p.name for p in (run_dir / "views").glob("*.png")) == ["epoch_0001.png", "epoch_0002.png"]
    assert sorted(p.name for p in (run_dir / "sharpness").iterdir()) == [
        "epoch_0001.csv", "epoch_0001.png", "epoch_0002.csv", "epoch_0002.png"
    ]  # fmt: skip
    assert "crop_size: 32" in (run_dir / "config.yaml").read_text()


def test_training_is_tracked_in_mlflow(trained):
    client = mlflow.MlflowClient(f"sqlite:///{trained / 'run' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("zsegan")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    for key in (
        "loss_G",
        "loss_D_S",
        "loss_D_B",
        "loss_cycle",
        "lr_G",
        "val_sharpness",
        "val_sharpness_vertical",
        "val_score",
        "val_ssim_coarse_worst",
        "val_ssim_focus",
        "val_cycle_probe",
    ):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run.info.run_id, "loss_G")) == 4  # every iteration at log_interval 1
    assert run.data.params["crop_size"] == "32" and run.data.params["p"] == "0.35"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model.pt", "views", "sharpness"} <= artifacts
    assert len(client.list_artifacts(run.info.run_id, "views")) == 2
    assert len(client.list_artifacts(run.info.run_id, "sharpness")) == 4  # a CSV and a plot per validation


def test_training_with_a_compiled_g_s_saves_plain_weights(dataset, trained, tmp_path):
    """--compile True runs G_S's training passes compiled; the weights saved are G_S's own (no compile wrapper in
    their keys) and load as the uncompiled run's do."""
    args = train_args(dataset, tmp_path, "--max_epochs", "1", "--epoch_length", "2", "--val_interval", "1")
    result = bundle_run("training", "train.yaml", *args, "--compile", "True", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    compiled = torch.load(tmp_path / "model.pt", weights_only=True)
    plain = torch.load(trained / "model.pt", weights_only=True)
    assert list(compiled) == list(plain) and all(compiled[k].shape == plain[k].shape for k in plain)
    result = infer(dataset / "stacks", tmp_path / "out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_interrupted_training_resumes(dataset, tmp_path):
    args = train_args(
        dataset,
        tmp_path,
        "--max_epochs",
        "2",
        "--epoch_length",
        "10",
        "--val_interval",
        "5",
        "--checkpoint_interval",
        "3",
    )
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIGS / "train.yaml"), *args]
    first = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 240
    while not (checkpoints / "state_checkpoint_3.pt").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # interrupt hard, as a crash or a lost machine would
    first.wait()
    saved = sorted(checkpoints.glob("state_*.pt"))
    assert saved and not (checkpoints / "state_checkpoint_20.pt").exists(), "the first run was not interrupted"
    assert not (tmp_path / "model.pt").exists()

    second = bundle_run("training", "train.yaml", *args)  # the same command again
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {saved[-1]}" in second.stdout + second.stderr
    state = torch.load(checkpoints / "state_checkpoint_20.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 20
    assert (tmp_path / "model.pt").exists()


def test_a_second_training_into_the_same_output_dir_is_refused(dataset, tmp_path):
    args = train_args(dataset, tmp_path, "--max_epochs", "50", "--epoch_length", "10", "--val_interval", "100")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIGS / "train.yaml"), *args]
    first = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        lock, deadline = tmp_path / "run" / ".zsegan.lock", time.time() + 120
        while not (lock.exists() and lock.read_text()) and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        second = bundle_run("training", "train.yaml", *args)
        assert first.poll() is None, "the first run ended before the second started"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert second.returncode == 2
    _expect_clean_failure(second, str(tmp_path / "run"), f"is in use by process {first.pid} on ")


def _killed_at(cmd: list[str], checkpoint: Path) -> None:
    """Run ``cmd`` until ``checkpoint`` is written, then kill it hard (a crash, a lost machine)."""
    run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not checkpoint.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def test_a_resumed_training_ends_bit_for_bit_as_an_uninterrupted_one(dataset, tmp_path):
    """Killed mid-epoch or at an epoch's end (after a validation), then run again: the same G_S, bit for bit."""
    short = ["--max_epochs", "4", "--val_interval", "2", "--checkpoint_interval", "2"]  # 3 iterations an epoch

    def command(out: Path) -> list[str]:
        config = str(CONFIGS / "train.yaml")
        return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config,
                *train_args(dataset, out, *short)]  # fmt: skip

    reference = subprocess.run(command(tmp_path / "ref"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    for at in (4, 6):  # iteration 4: the middle of epoch 2; 6: the end of epoch 2, validated
        out = tmp_path / f"killed_{at}"
        _killed_at(command(out), out / "run" / "checkpoints" / f"state_checkpoint_{at}.pt")
        assert not (out / "model.pt").exists(), "the run was not interrupted"
        again = subprocess.run(command(out), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "resuming from" in again.stdout + again.stderr, again.stderr[-3000:]
        resumed = torch.load(out / "model.pt", weights_only=True)
        assert all(torch.equal(resumed[k], v) for k, v in expected.items()), f"killed at {at}"


def test_inference_keeps_format_axes_dtype_and_voxel_size(trained, tmp_path):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    tiff_meta = {"format": "tiff", "axes": "ZYX", "dtype": "uint16", "spacing": (2.0, 0.5, 0.5), "unit": "um"}
    write_stack(inputs / "a.tif", rng.integers(0, 4000, (17, 37, 53)).astype(np.uint16), tiff_meta)
    npz_meta = {"format": "npz", "axes": "YXZ", "dtype": "uint8", "spacing": None, "unit": None}
    write_stack(inputs / "b.npz", rng.integers(0, 255, (40, 45, 50)).astype(np.uint8), npz_meta)  # 40 planes
    out = tmp_path / "out"
    result = infer(inputs, out, trained)
    assert result.returncode == 0, result.stderr[-3000:]
    a, a_meta = read_stack(out / "a_enhanced.tif")
    assert a.shape == (17, 37, 53) and a.dtype == np.uint16 and tuple(a_meta["spacing"]) == (2.0, 0.5, 0.5)
    b_file = np.load(out / "b_enhanced.npz")
    assert b_file["arr_0"].shape == (45, 50, 40) and b_file["arr_0"].dtype == np.uint8  # YXZ as the input
    assert sorted(p.name for p in out.iterdir()) == ["a_enhanced.tif", "b_enhanced.npz"]
    # quiet: one progress bar over both stacks (ignite's "[n/2]"), none per stack (tqdm's "n/total ["); a summary
    assert "enhanced: [2/2] 100%" in result.stderr and not re.search(r"\d+/\d+ \[", result.stderr), result.stderr
    assert re.search(rf"enhanced 2 stacks into {re.escape(str(out))} in \d+\.\d s", result.stdout), result.stdout


def _expect_clean_failure(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error, result.stderr[-3000:]
    for phrase in phrases:
        assert phrase in error[-1], error[-1]


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, list[str]]]:
    folder.mkdir()
    good = np.full((17, 32, 32), 100, np.uint8)
    good[:, 8:16, 8:16] = 20
    cases = {}
    cases["missing"] = (folder / "nope.tif", ["nope.tif"])
    (folder / "empty").mkdir()
    cases["empty folder"] = (folder / "empty", ["empty"])
    tifffile.imwrite(folder / "trunc.tif", good)
    data = (folder / "trunc.tif").read_bytes()
    (folder / "trunc.tif").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (folder / "trunc.tif", ["trunc.tif", "truncated"])
    tifffile.imwrite(folder / "flat.tif", good[0])
    cases["2D image"] = (folder / "flat.tif", ["flat.tif", "2D"])
    tifffile.imwrite(folder / "thin.tif", good[:2])
    cases["too few planes"] = (folder / "thin.tif", ["thin.tif", "planes"])
    nan = good.astype(np.float32)
    nan[3, 3, 3] = np.nan
    tifffile.imwrite(folder / "nan.tif", nan)
    cases["NaN"] = (folder / "nan.tif", ["nan.tif", "NaN"])
    tifffile.imwrite(folder / "rgb.tif", np.stack([good] * 3, -1), photometric="rgb")
    cases["RGB"] = (folder / "rgb.tif", ["rgb.tif", "RGB"])
    np.savez(folder / "complex.npz", arr_0=good.astype(np.complex64))
    cases["complex"] = (folder / "complex.npz", ["complex.npz", "complex"])
    np.savez(folder / "huge.npz", arr_0=good.astype(np.float64) * 1e37)  # overflows in float32
    cases["beyond float32"] = (folder / "huge.npz", ["huge.npz", "beyond float32's range"])
    return cases


def test_inference_rejects_bad_input_cleanly(trained, tmp_path):
    for name, (path, phrases) in _bad_inputs(tmp_path / "bad").items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        result = infer(path, out, trained, "--min_planes", "4")
        _expect_clean_failure(result, *phrases)
        assert not out.exists(), f"{name}: partial output"


def test_inference_checks_every_input_before_writing(trained, tmp_path):
    inputs = tmp_path / "in"
    meta = {"format": "tiff", "axes": "ZYX", "dtype": "uint8", "spacing": None, "unit": None}
    write_stack(inputs / "a_good.tif", np.random.default_rng(0).integers(0, 255, (17, 32, 32)).astype(np.uint8), meta)
    tifffile.imwrite(inputs / "b_bad.tif", np.zeros((32, 32), np.uint8))
    out = tmp_path / "out"
    result = infer(inputs, out, trained)
    _expect_clean_failure(result, "b_bad.tif")
    assert not out.exists()


def test_inference_checks_the_intensity_range_before_writing(trained, tmp_path):
    inputs = tmp_path / "in"
    meta = {"format": "tiff", "axes": "ZYX", "dtype": "uint8", "spacing": None, "unit": None}
    for name in ("a_good", "c_good"):
        write_stack(
            inputs / f"{name}.tif", np.random.default_rng(0).integers(0, 255, (17, 32, 32)).astype(np.uint8), meta
        )
    write_stack(inputs / "b_const.tif", np.full((17, 32, 32), 9, np.uint8), meta)
    out = tmp_path / "out"
    result = infer(inputs, out, trained)
    _expect_clean_failure(result, "b_const.tif", "constant intensity")
    assert not out.exists()


def test_inference_into_its_input_folder_does_not_enhance_its_outputs(trained, tmp_path):
    folder = tmp_path / "stacks"
    meta = {"format": "tiff", "axes": "ZYX", "dtype": "uint8", "spacing": None, "unit": None}
    write_stack(folder / "x.tif", np.random.default_rng(0).integers(0, 255, (17, 32, 32)).astype(np.uint8), meta)
    for _ in range(2):
        result = infer(folder, folder, trained)
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == ["x.tif", "x_enhanced.tif"]


def test_training_rejects_unknown_key_and_small_infocus_images(dataset, tmp_path):
    result = bundle_run("training", "train.yaml", *train_args(dataset, tmp_path, "--max_epoch", "3"))
    _expect_clean_failure(result, "--max_epoch", "max_epochs")

    result = bundle_run(
        "training",
        "train.yaml",
        *train_args(dataset, tmp_path, "--crop_size", "64", "--max_epochs", "1", "--epoch_length", "1"),
    )
    _expect_clean_failure(result, "smaller than")
    assert not (tmp_path / "model.pt").exists()


def test_training_refuses_a_dataset_dir_without_stacks(tmp_path):
    """Only the default dataset folder is simulated: a typo in --dataset_dir is an error, not simulated data."""
    for name in ("typo", "empty"):
        (tmp_path / "empty" / "infocus").mkdir(parents=True, exist_ok=True)
        result = bundle_run(
            "training", "train.yaml", *train_args(tmp_path / name, tmp_path / "out", "--max_epochs", "1")
        )
        _expect_clean_failure(result, name, "no such dataset folder" if name == "typo" else "holds no stacks")
    assert not (tmp_path / "typo").exists() and not any((tmp_path / "empty").rglob("*.tif"))


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--sw_overlap", "abc"], "--sw_overlap 'abc': must be a number in [0, 1)"),
        (["--max_epochs", "-1"], "--max_epochs -1: must be a positive integer"),
        (["--intensity_lower", "99.5", "--intensity_upper", "0.5"], "must be below --intensity_upper"),
    ],
)
def test_bad_values_get_one_error_line_and_leave_the_earlier_record(dataset, tmp_path, args, phrase):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("the earlier run's")
    result = bundle_run("training", "train.yaml", *train_args(dataset, tmp_path, *args))
    assert result.returncode == 2
    _expect_clean_failure(result, phrase)
    assert (tmp_path / "run" / "config.yaml").read_text() == "the earlier run's"


def test_training_runs_from_inside_the_bundle_folder(dataset, tmp_path):
    short = ["--max_epochs", "1", "--epoch_length", "1", "--val_interval", "1"]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.yaml"]
    cmd += train_args(dataset, tmp_path, *short)
    result = subprocess.run(cmd, cwd=ROOT / "bundle", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model.pt").exists() and (tmp_path / "run" / "views" / "epoch_0001.png").exists()
