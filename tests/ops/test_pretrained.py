"""Fine-tuning: ``--pretrained`` loads a G_S file, a training checkpoint (and its other networks on
request) or a registered model into the networks before training, unless the training resumes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scripts.errors import InputError
from scripts.nets.networks import Generator3D, PatchDiscriminator2D
from scripts.ops.pretrained import start_from
from test_workflows import CONFIGS, ROOT, bundle_run, train_args


def _networks(seed: int, channels: int = 4) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    return {
        "g_s": Generator3D(channels=channels, n_residual_blocks=1),
        "g_b": Generator3D(channels=channels, n_residual_blocks=1),
        "d_s": PatchDiscriminator2D(channels=8, n_layers=2),
        "d_b": PatchDiscriminator2D(channels=8, n_layers=2),
    }


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_generator_file_or_a_checkpoint_gives_its_weights(tmp_path):
    source, target = _networks(0), _networks(1)
    torch.save(source["g_s"].state_dict(), tmp_path / "g_s.pt")
    torch.save({name: net.state_dict() for name, net in source.items()}, tmp_path / "state_checkpoint_9.pt")

    assert start_from(None, target) == "from scratch" and not _same(source["g_s"], target["g_s"])
    assert "g_s" in start_from(tmp_path / "g_s.pt", target)
    assert _same(source["g_s"], target["g_s"]) and not _same(source["d_s"], target["d_s"])

    target = _networks(1)
    start_from(tmp_path / "state_checkpoint_9.pt", target)  # by default G_S only
    assert _same(source["g_s"], target["g_s"]) and not _same(source["d_s"], target["d_s"])
    done = start_from(tmp_path / "state_checkpoint_9.pt", target, parts=["g_s", "d_s", "d_b"])
    assert done.endswith("(g_s, d_s, d_b)")
    assert _same(source["d_s"], target["d_s"]) and _same(source["d_b"], target["d_b"])
    assert not _same(source["g_b"], target["g_b"])


def test_own_checkpoints_win_and_bad_weights_or_parts_are_clear_errors(tmp_path):
    source, target = _networks(0), _networks(1)
    torch.save(source["g_s"].state_dict(), tmp_path / "g_s.pt")
    own = tmp_path / "checkpoints"
    own.mkdir()
    torch.save({}, own / "state_checkpoint_4.pt")
    assert start_from(tmp_path / "g_s.pt", target, checkpoint_dir=own).startswith("resuming")
    assert not _same(source["g_s"], target["g_s"])

    wider = _networks(0, channels=8)
    torch.save({name: net.state_dict() for name, net in wider.items()}, tmp_path / "wide.pt")
    with pytest.raises(InputError, match="do not fit") as error:
        start_from(tmp_path / "wide.pt", target)
    assert "wide.pt" in str(error.value)
    wider_d_s = PatchDiscriminator2D(channels=16, n_layers=2).state_dict()
    torch.save({"g_s": source["g_s"].state_dict(), "d_s": wider_d_s}, tmp_path / "mixed.pt")
    with pytest.raises(InputError, match="d_s's weights do not fit"):
        start_from(tmp_path / "mixed.pt", target, parts=["g_s", "d_s"])
    with pytest.raises(InputError, match="no such weights file"):
        start_from(tmp_path / "missing.pt", target)
    with pytest.raises(InputError, match="pretrained_parts"):
        start_from(tmp_path / "g_s.pt", target, parts=["d_s"])


@pytest.mark.slow
def test_finetune_config_starts_from_the_given_weights(tmp_path):
    from scripts.simulate.zstacks import simulate_dataset

    data = tmp_path / "data"
    simulate_dataset(data, n_stacks=4, n_infocus=4, size=40, depth=17, seed=3, progress=False)
    short = ("--max_epochs", "1", "--epoch_length", "1", "--crop_size", "32")
    first = bundle_run("training", "train.yaml", *train_args(data, tmp_path / "a", *short))
    assert first.returncode == 0, first.stderr[-3000:]
    configs = str([str(CONFIGS / "train.yaml"), str(CONFIGS / "finetune.yaml")])

    def finetune(out: str, weights: Path) -> subprocess.CompletedProcess:
        args = train_args(data, tmp_path / out, *short, "--pretrained", str(weights))
        cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", configs, *args]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)

    second = finetune("b", tmp_path / "a" / "model.pt")
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"starting from {tmp_path / 'a' / 'model.pt'} (g_s)" in second.stdout + second.stderr
    torch.save(Generator3D(channels=8, n_residual_blocks=1).state_dict(), tmp_path / "wide.pt")
    wrong = finetune("c", tmp_path / "wide.pt")
    assert wrong.returncode == 2 and "do not fit" in wrong.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "c" / "model.pt").exists()
