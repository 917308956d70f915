"""The bundle as the MONAI model zoo takes it: metadata, network checks, exports, workflow properties, the archive.

Commands run as a user would run them (from the bundle folder, or from an unpacked copy of the archive that has
no other file of the repository); the rest calls the same ``monai.bundle`` functions in-process.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import monai
import monai.apps.utils
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, load, onnx_export, verify_metadata, verify_net_in_out
from monai.data import load_net_with_metadata
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from scripts.data.io import read_stack
from scripts.errors import InputError
from scripts.nets.architecture import default_generator
from scripts.nets.networks import Generator3D
from scripts.ops.pack import CONTENT, pack
from scripts.simulate.zstacks import simulate_dataset

pytestmark = pytest.mark.slow  # end-to-end runs: not in the quick lane (pytest -m 'not slow')

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
META = BUNDLE / "configs" / "metadata.json"
INFERENCE = BUNDLE / "configs" / "inference.yaml"
SCHEMA = Path(__file__).parent / "data" / "meta_schema.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"  # of the copy in tests/data: an edited schema fails loudly
# the ONNX export documented in docs/README.md: an example input with no size 1 (torch.export fixes sizes 0 and 1)
ONNX_INPUT_SHAPE = [2, 1, 16, 64, 64]
ONNX_DYNAMIC = {0: "batch", 2: "z", 3: "y", 4: "x"}
ONNX_CONVERTER = {
    "input_names": ["image"], "output_names": ["pred"], "dynamic_axes": {"image": ONNX_DYNAMIC, "pred": ONNX_DYNAMIC}
}  # fmt: skip
TINY_TRAIN = [
    "--g_channels", "4", "--g_residual_blocks", "1", "--d_channels", "8", "--crop_size", "32",
    "--sw_roi_size", "[-1, 32, 32]", "--n_horizontal", "2", "--n_vertical", "2", "--max_epochs", "1",
    "--epoch_length", "2",
]  # fmt: skip


def metadata() -> dict:
    return json.loads(META.read_text())


def monai_bundle(command: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <command> <args>`` run in ``cwd``, as a user would."""
    cmd = [sys.executable, "-m", "monai.bundle", command, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def outside_the_repository() -> dict:
    """The environment with no PYTHONPATH: a subprocess finds ``scripts`` only through its working folder."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def g_s() -> Generator3D:
    """G_S with the shipped weights, in eval mode."""
    network = default_generator().eval()
    network.load_state_dict(torch.load(BUNDLE / "models" / "model.pt", weights_only=True))
    return network


def g_s_output(network: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return network(x).numpy()


# ---------------------------------------------------------------- metadata


def test_metadata_is_valid_against_the_bundle_schema_offline(monkeypatch, tmp_path):
    def no_download(*args, **kwargs):
        raise AssertionError("verify_metadata tried to download the schema")

    monkeypatch.setattr(monai.apps.utils, "_download_with_progress", no_download)
    verify_metadata(meta_file=str(META), filepath=str(SCHEMA), hash_val=SCHEMA_MD5, hash_type="md5")

    incomplete = {k: v for k, v in metadata().items() if k != "network_data_format"}  # required by the schema
    (tmp_path / "metadata.json").write_text(json.dumps(incomplete))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA), hash_val=SCHEMA_MD5)


def test_metadata_describes_all_four_networks():
    meta = metadata()
    assert set(meta["network_data_format"]["inputs"]) == {"image"}
    assert set(meta["network_data_format"]["outputs"]) == {"pred"}
    for network in ("g_b", "d_s", "d_b"):
        assert {"inputs", "outputs"} <= set(meta[f"{network}_data_format"]), network
    assert meta["d_s_data_format"]["inputs"]["image"]["spatial_shape"] == ["*", "*"]  # 2D sections


def test_metadata_claims_only_packages_and_versions_that_are_true():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    meta = metadata()
    # MONAI's own requirements (torch, numpy) have their own fields; its extras we use are required packages
    base = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    expected = (set(requirements) - set(base)) | {canonicalize_name(e) for e in requirements["monai"].extras}
    listed = {canonicalize_name(name): version for name, version in meta["required_packages_version"].items()}
    assert set(listed) == expected
    for name, version in {**listed, **base}.items():
        installed = Version(Version(importlib.metadata.version(name)).base_version)  # 2.13.0+cpu -> 2.13.0
        assert Version(version) <= installed, f"{name} {version} is newer than the installed {installed}"
        if name in requirements:
            assert requirements[name].specifier.contains(version), f"{name} {version} outside pyproject's range"


def test_metadata_scores_are_the_documented_ones():
    results = (ROOT / "docs" / "results.md").read_text()
    for name, score in metadata()["eval_metrics"].items():
        assert f"{score}" in results, name


# ---------------------------------------------------------------- network checks and exports


def test_verify_net_in_out_passes_for_any_stack_size():
    common = {"net_id": "network_def", "meta_file": str(META), "config_file": str(INFERENCE), "device": "cpu"}
    verify_net_in_out(**common)  # "*" sizes become 1 voxel: the zoo's default check
    verify_net_in_out(**common, any=13)
    with pytest.raises(ValueError, match="channel"):
        verify_net_in_out(**common, **{"_meta_#network_data_format#outputs#pred#num_channels": 2})


def test_torchscript_export_gives_the_pytorch_output(tmp_path, g_s):
    ts_path = tmp_path / "model.ts"
    result = monai_bundle(
        "ckpt_export", "network_def", "--filepath", str(ts_path), "--ckpt_file", "models/model.pt",
        "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.yaml", cwd=BUNDLE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    scripted, meta, extra = load_net_with_metadata(ts_path, more_extra_files=["inference.json"])
    assert meta["version"] == metadata()["version"] and "network_def" in json.loads(extra["inference.json"])
    torch.manual_seed(0)
    for shape in [(1, 1, 16, 64, 64), (2, 1, 21, 48, 80)]:
        x = torch.rand(shape) * 2 - 1
        np.testing.assert_allclose(g_s_output(scripted, x), g_s_output(g_s, x), rtol=0, atol=1e-5)


def test_onnx_export_gives_the_pytorch_output_for_other_stack_sizes(tmp_path, g_s):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "model.onnx"
    onnx_export(
        net_id="network_def", filepath=str(path), ckpt_file=str(BUNDLE / "models" / "model.pt"), meta_file=str(META),
        config_file=str(INFERENCE), input_shape=ONNX_INPUT_SHAPE, converter_kwargs=ONNX_CONVERTER,
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert image.name == "image" and image.shape == ["batch", 1, "z", "y", "x"]
    assert [o.name for o in session.get_outputs()] == ["pred"]
    torch.manual_seed(0)
    # neither is the export's example size; 21x48x80 is padded to 24x48x80 inside G_S, 3x8x8 to 4x8x8
    for shape in [(1, 1, 16, 64, 64), (2, 1, 21, 48, 80), (1, 1, 3, 8, 8)]:
        x = torch.rand(shape) * 2 - 1
        (pred,) = session.run(None, {"image": x.numpy()})
        np.testing.assert_allclose(pred, g_s_output(g_s, x), rtol=0, atol=1e-4)


# ---------------------------------------------------------------- workflow properties


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zoo_data")
    simulate_dataset(path, n_stacks=4, n_infocus=4, size=40, depth=17, seed=3, progress=False)
    return path


@pytest.mark.parametrize("config, workflow_type", [("train.yaml", "train"), ("inference.yaml", "infer")])
def test_configs_have_every_property_monai_workflows_require(config, workflow_type, tiny_dataset, tmp_path):
    overrides = {"dataset_dir": str(tiny_dataset), "output_dir": str(tmp_path / "out")}
    if workflow_type == "train":  # building the trainer builds every network: tiny ones
        overrides.update(g_channels=4, g_residual_blocks=1, d_channels=8, crop_size=32)
        overrides["model_path"] = str(tmp_path / "g_s.pt")
    workflow = ConfigWorkflow(config_file=str(BUNDLE / "configs" / config), workflow_type=workflow_type, **overrides)
    workflow.initialize()
    assert workflow.check_properties() == []


# ---------------------------------------------------------------- the archive, alone


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """The archive made by the documented command, run in the bundle folder."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "scripts.ops.pack", "--output_dir", str(out)], cwd=BUNDLE, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


@pytest.fixture(scope="module")
def downloaded(archive, tmp_path_factory) -> Path:
    """The archive unpacked by ``python -m monai.bundle download`` from a file:// URL, outside the repository."""
    bundle_dir = tmp_path_factory.mktemp("bundles")
    result = monai_bundle(
        "download", "--name", "zsegan", "--url", archive.as_uri(), "--bundle_dir", str(bundle_dir),
        cwd=bundle_dir, env=outside_the_repository(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return bundle_dir / "zsegan"


def test_pack_writes_the_zoo_archive(archive, tmp_path):
    assert archive.name == f"zsegan_v{metadata()['version']}.zip"
    names = zipfile.ZipFile(archive).namelist()
    assert {n.split("/")[0] for n in names} == {"zsegan"}
    assert {n.split("/")[1] for n in names} == set(CONTENT)
    assert {"zsegan/configs/metadata.json", "zsegan/models/model.pt", "zsegan/LICENSE"} <= set(names)
    assert "zsegan/scripts/ops/pack.py" in names and "zsegan/docs/README.md" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/." in n]
    # bundle/data (the simulated set) and bundle/runs may exist in the repository: never packed
    assert not any(n.startswith(("zsegan/data/", "zsegan/runs/")) for n in names)
    assert pack(output_dir=tmp_path).read_bytes() == archive.read_bytes()  # same bundle, same archive


def test_pack_refuses_a_bundle_without_weights(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text(META.read_text())
    (tmp_path / "LICENSE").write_text("Apache License 2.0")
    with pytest.raises(InputError, match="model.pt: missing"):
        pack(tmp_path, output_dir=tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


def test_download_unpacks_the_archive_from_a_local_path(archive, downloaded):
    unpacked = sorted(f"zsegan/{p.relative_to(downloaded).as_posix()}" for p in downloaded.rglob("*") if p.is_file())
    assert unpacked == sorted(zipfile.ZipFile(archive).namelist())
    assert (downloaded / "models" / "model.pt").read_bytes() == (BUNDLE / "models" / "model.pt").read_bytes()


def test_a_bundle_unpacked_part_way_stops_every_workflow_with_what_to_do(downloaded, tmp_path):
    partial = tmp_path / "zsegan"
    shutil.copytree(downloaded, partial)
    (partial / "docs" / "README.md").unlink()  # as if MONAI's unpacking had stopped before it
    result = monai_bundle(
        "run", "inference", "--config_file", "configs/inference.yaml", "--output_dir", str(tmp_path / "out"),
        cwd=partial, env=outside_the_repository(),
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"error: {partial}: is an incomplete bundle (1 of its" in result.stderr
    assert "delete this folder and download the bundle again" in result.stderr


def test_load_gives_the_shipped_weights_from_the_downloaded_bundle(downloaded, g_s):
    network = load("zsegan", bundle_dir=downloaded.parent, model=default_generator(), device="cpu")
    shipped = g_s.state_dict()
    loaded = network.state_dict()
    assert loaded.keys() == shipped.keys()
    for key, value in shipped.items():
        assert torch.equal(loaded[key], value), key


@pytest.fixture(scope="module")
def standalone(downloaded) -> Path:
    """The downloaded bundle with a tiny simulated dataset in its own data folder (its default dataset_dir)."""
    simulate_dataset(downloaded / "data", n_stacks=4, n_infocus=4, size=40, depth=17, seed=3, progress=False)
    return downloaded


def test_the_bundle_alone_trains(standalone, tmp_path):
    weights = tmp_path / "g_s.pt"
    result = monai_bundle(
        "run", "training", "--config_file", "configs/train.yaml", "--model_path", str(weights), *TINY_TRAIN,
        cwd=standalone, env=outside_the_repository(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(BUNDLE) not in result.stdout + result.stderr
    # bundle_root is where `scripts` was imported from: outputs landed in the copy, not in the repository
    assert "crop_size: 32" in (standalone / "runs" / "train" / "config.yaml").read_text()
    default_generator(channels=4, n_residual_blocks=1).load_state_dict(torch.load(weights, weights_only=True))


def test_the_bundle_alone_infers_with_the_shipped_weights(standalone, tmp_path):
    stack = sorted((standalone / "data" / "stacks").iterdir())[0]
    result = monai_bundle(
        "run", "inference", "--config_file", "configs/inference.yaml", "--input_path", str(stack),
        "--output_dir", str(tmp_path), cwd=standalone, env=outside_the_repository(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(BUNDLE) not in result.stdout + result.stderr
    (output,) = tmp_path.iterdir()
    x, y = read_stack(stack)[0], read_stack(output)[0]
    assert output.name == stack.name.replace(".tif", "_enhanced.tif")
    assert y.shape == x.shape and y.dtype == x.dtype and not np.array_equal(x, y)


# ---------------------------------------------------------------- model card


def test_model_card_links_exist_and_it_gives_the_shipped_recipe():
    card = BUNDLE / "docs" / "README.md"
    text = card.read_text()
    links = re.findall(r"\]\(([^)#\s]+)", text)
    local = [link for link in links if "://" not in link]
    assert any(link.endswith(".png") for link in local)
    for link in local:
        assert (card.parent / link).exists(), link
    recipe = re.search(r"OMP_NUM_THREADS=1 python -m monai\.bundle run training .*?--g_b_kind optical", text, re.S)
    assert recipe and recipe.group(0) in (ROOT / "docs" / "results.md").read_text()
    # the card describes these very weights: retrained weights need a new recipe and checksum
    assert hashlib.md5((BUNDLE / "models" / "model.pt").read_bytes()).hexdigest() in text
