"""configs/cingan_train.yaml through ``python -m monai.bundle run`` on tiny data and random VGG weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scripts.nets.networks import ResNetGenerator
from scripts.nets.vgg import save_random_vgg_weights
from scripts.simulate.defects import simulate_defect_dataset

pytestmark = pytest.mark.slow  # end-to-end runs: not in the quick lane

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "bundle" / "configs" / "cingan_train.yaml"
SYNTHESISE = ROOT / "bundle" / "configs" / "cingan_synthesise.yaml"
TINY = [
    "--g_channels", "4", "--g_residual_blocks", "1", "--c_channels", "4", "--c_layers", "2", "--crop_size", "16",
    "--max_epochs", "1", "--epoch_length", "3", "--n_critic", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("cingan")
    simulate_defect_dataset(path / "data", n_pairs=2, n_clean=2, n_test=1, size=24, depth=9, progress=False)
    return {
        "data": path / "data",
        "vgg16": save_random_vgg_weights("vgg16", path / "vgg16.pth", "relu3_3"),
        "vgg19": save_random_vgg_weights("vgg19", path / "vgg19.pth", "relu4_1"),
    }


def run(*args: str, workflow: str = "training", config: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", config or str(CONFIG), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_stage_1_trains_and_writes_the_generator(setup, tmp_path):
    out = tmp_path / "run"
    result = run(
        "--dataset_dir", str(setup["data"]), "--output_dir", str(out), "--generator_path", str(out / "g.pt"),
        "--vgg16_weights", str(setup["vgg16"]), "--vgg19_weights", str(setup["vgg19"]), *TINY,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    generator = ResNetGenerator(
        3, channels=4, n_residual_blocks=1, first_kernel_size=7, output="mean", n_conditions=3, long_skip=True
    )
    generator.load_state_dict(torch.load(out / "g.pt", weights_only=True))
    assert list((out / "checkpoints").glob("state_*.pt")) and (out / "config.yaml").is_file()
    both = str([str(CONFIG), str(SYNTHESISE)])
    tiny = ["--g_channels", "4", "--g_residual_blocks", "1"]
    args = ["--dataset_dir", str(setup["data"]), "--generator_path", str(out / "g.pt"), *tiny]
    result = run(*args, "--synthetic_dir", str(tmp_path / "synthetic"), workflow="synthesise", config=both)
    assert result.returncode == 0, result.stderr[-3000:]
    for task in ("denoising", "axial", "super_resolution"):
        assert len(list((tmp_path / "synthetic" / task / "defective").glob("*.tif"))) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vgg16_weights", "/nonexistent/vgg16.pth"], "error: /nonexistent/vgg16.pth: no such vgg16 weights file"),
        (["--tasks", "['deblur']"], "error: unknown defect task 'deblur'"),
        (["--dataset_dir", "/nonexistent/defects"], "error: /nonexistent/defects: no such dataset folder"),
        (["--g_long_skip", "false"], "error: --g_long_skip 'false': must be True or False"),
    ],
)
def test_bad_input_is_one_clear_line(setup, tmp_path, args, message):
    base = ["--dataset_dir", str(setup["data"]), "--output_dir", str(tmp_path / "run")]
    result = run(*base, "--vgg19_weights", str(setup["vgg19"]), *TINY, *args)  # the last --dataset_dir wins
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr
