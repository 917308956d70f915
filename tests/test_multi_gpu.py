"""multi_gpu_train.yaml end to end: 2 processes under torchrun, gloo backend on CPU, tiny networks and data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from scripts.nets.architecture import default_generator
from scripts.simulate.zstacks import simulate_dataset
from scripts.zsegan.trainer import _cycle
from torch.utils.data import DataLoader, DistributedSampler

pytestmark = pytest.mark.slow  # end-to-end runs: not in the quick lane (pytest -m 'not slow')

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundle" / "configs"
TINY_TRAIN = [
    "--g_channels", "4", "--g_residual_blocks", "1", "--d_channels", "8", "--crop_size", "32",
    "--sw_roi_size", "[-1, 32, 32]", "--sw_overlap_px", "16", "--n_horizontal", "2", "--n_vertical", "2", "--log_interval", "1",
    "--epoch_length", "2", "--val_interval", "1", "--checkpoint_interval", "2",
]  # fmt: skip
# test-only config: at the end, every process saves its own four networks, to compare the processes' weights
PROBE = """\
networks: {g_s: "@network", g_b: "@g_b", d_s: "@d_s", d_b: "@d_b"}
finalize:
  - "$torch.save({k: @scripts.nets.networks.unwrap(v).state_dict() for k, v in @networks.items()},
    @output_dir + '/networks_rank' + str(dist.get_rank()) + '.pt')"
  - "$dist.is_initialized() and dist.destroy_process_group()"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out: Path, dataset: Path, max_epochs: int) -> subprocess.CompletedProcess:
    probe = out / "probe.yaml"
    probe.write_text(PROBE)
    files = [str(CONFIGS / "train.yaml"), str(CONFIGS / "multi_gpu_train.yaml"), str(probe)]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "monai.bundle", "run", "training", "--config_file", str(files),
        "--dataset_dir", str(dataset), "--output_dir", str(out / "run"), "--model_path", str(out / "model.pt"),
        "--max_epochs", str(max_epochs), *TINY_TRAIN,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def rank_networks(out: Path) -> list[dict]:
    """Per process, {"g_s": state_dict, "g_b": ..., "d_s": ..., "d_b": ...} at the end of its run."""
    return [torch.load(out / "run" / f"networks_rank{rank}.pt", weights_only=True) for rank in (0, 1)]


def assert_equal_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def assert_same_networks(first: dict, second: dict) -> None:
    for name in ("g_s", "g_b", "d_s", "d_b"):
        assert_equal_weights(first[name], second[name])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    dataset = tmp_path_factory.mktemp("data")
    simulate_dataset(dataset, n_stacks=4, n_infocus=4, size=40, depth=17, seed=3, progress=False)
    out = tmp_path_factory.mktemp("multi_gpu")
    result = torchrun(out, dataset, max_epochs=2)
    assert result.returncode == 0, result.stderr[-3000:]
    return dataset, out, result


def test_rank_0_alone_saves_plain_weights(trained):
    _, out, result = trained
    checkpoints = out / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("state_*.pt")) == ["state_checkpoint_2.pt", "state_checkpoint_4.pt"]
    assert (result.stdout + result.stderr).count("G_S weights written to") == 1  # by rank 0 only
    exported = torch.load(out / "model.pt", weights_only=True)
    default_generator(channels=4, n_residual_blocks=1).load_state_dict(exported)  # no DDP "module." prefix
    final = torch.load(checkpoints / "state_checkpoint_4.pt", weights_only=True)
    assert_equal_weights(final["g_s"], exported)
    for name in ("g_b", "d_s", "d_b"):
        assert not any(k.startswith("module.") for k in final[name]), name
    assert final["trainer"]["iteration"] == 4  # 2 epochs of 2 iterations


def test_processes_end_with_the_same_networks(trained):
    _, out, _ = trained
    # each process starts from its own seed (seed + rank): only DDP's broadcast and averaged gradients make them agree
    first, second = rank_networks(out)
    assert_same_networks(first, second)
    assert_equal_weights(first["g_s"], torch.load(out / "model.pt", weights_only=True))


def test_rank_0_alone_tracks_and_registers(trained):
    _, out, _ = trained
    client = mlflow.MlflowClient(f"sqlite:///{out / 'run' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("zsegan")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "loss_G")) == 4  # one process logs, every iteration
    assert len(client.get_metric_history(run.info.run_id, "val_sharpness")) == 2  # validated after each epoch
    assert [int(v.version) for v in client.search_model_versions("name='zsegan'")] == [1]


def test_both_processes_resume(trained):
    dataset, out, _ = trained
    result = torchrun(out, dataset, max_epochs=3)  # the same run, one epoch further
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = out / "run" / "checkpoints"
    assert (result.stdout + result.stderr).count(f"resuming from {checkpoints / 'state_checkpoint_4.pt'}") == 2
    state = torch.load(checkpoints / "state_checkpoint_6.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 6
    first, second = rank_networks(out)
    assert_same_networks(first, second)  # a process that had not resumed would hold other weights


def test_in_focus_loader_reshuffles_its_share_every_pass():
    def sampler():
        return DistributedSampler(list(range(8)), num_replicas=2, rank=1, shuffle=True, seed=0)

    loader = DataLoader(list(range(8)), batch_size=4, sampler=sampler())
    batches = _cycle(loader)
    passes = [next(batches).tolist() for _ in range(3)]  # one batch per pass: this process's 4 of 8 images
    expected = []
    for n_pass in range(3):
        reference = sampler()
        reference.set_epoch(n_pass)
        expected.append(list(reference))
    assert passes == expected
    assert passes[0] != passes[1]  # not the same order every pass
