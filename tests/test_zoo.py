"""The bundle as the MONAI model zoo takes it: metadata, network checks, exports, workflow properties, the archive.

Commands run as a user would run them (from the bundle folder, or from an unpacked copy of the archive that has
no other file of the repository); the rest calls the same ``monai.bundle`` functions in-process.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
import urllib.request
import zipfile
from pathlib import Path

import monai
import monai.apps.utils
import numpy as np
import pytest
import torch
from monai.bundle import (
    ConfigParser,
    ConfigWorkflow,
    create_workflow,
    load,
    onnx_export,
    verify_metadata,
    verify_net_in_out,
)
from monai.data import load_net_with_metadata
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from scripts.data.io import read_stack
from scripts.errors import InputError
from scripts.nets.architecture import default_generator
from scripts.nets.networks import Generator3D
from scripts.ops.pack import CONTENT, LARGE, LARGE_FILES, ZOO_NAME, pack
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
    "--sw_roi_size", "[-1, 32, 32]", "--sw_overlap_px", "16", "--n_horizontal", "2", "--n_vertical", "2",
    "--max_epochs", "1", "--epoch_length", "2",
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


ZOO_PYTHON = "3.10"  # the Python of the model zoo's CI (its premerge scripts)
WHOLE_SLIDE_ONLY = {"zarr", "dask"}  # inference_wholeslide.yaml alone imports them: not pinned for the zoo


def test_metadata_claims_only_packages_and_versions_that_are_true():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    on_zoo_python = {"python_version": ZOO_PYTHON, "python_full_version": f"{ZOO_PYTHON}.0"}
    requirements = {
        canonicalize_name(r.name): r
        for r in map(Requirement, project["dependencies"])
        if r.marker is None or r.marker.evaluate(on_zoo_python)
    }
    meta = metadata()
    # MONAI's own requirements (torch, numpy) have their own fields; its extras we use are required packages
    base = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    expected = (set(requirements) - set(base) - WHOLE_SLIDE_ONLY) | {
        canonicalize_name(e) for e in requirements["monai"].extras
    }
    listed = {canonicalize_name(name): version for name, version in meta["required_packages_version"].items()}
    assert set(listed) == expected
    for name, version in {**listed, **base}.items():
        installed = Version(Version(importlib.metadata.version(name)).base_version)  # 2.13.0+cpu -> 2.13.0
        assert Version(version) <= installed, f"{name} {version} is newer than the installed {installed}"
        if name in requirements:
            assert requirements[name].specifier.contains(version), f"{name} {version} outside pyproject's range"


def zoo_requirements(meta: dict) -> list[str]:
    """The requirements the zoo's CI installs for a bundle (its ci/get_bundle_requirements.py): every pin."""
    pins = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    return [f"{name}=={version}" for name, version in {**pins, **meta["required_packages_version"]}.items()]


def pip_on_zoo_python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``pip install --dry-run`` for the zoo's Python 3.10 from PyPI alone (this machine's pip settings left out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    cmd = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--target", str(tmp_path / "target"), "--python-version",
        ZOO_PYTHON, "--only-binary=:all:", "--index-url", "https://pypi.org/simple", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_metadata_pins_install_on_the_zoos_python(tmp_path):
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=20).close()
    except OSError as e:
        pytest.skip(f"the package index cannot be reached: {e}")
    result = pip_on_zoo_python(tmp_path, *zoo_requirements(metadata()))
    assert result.returncode == 0, result.stderr[-3000:]
    # a pin without a Python 3.10 build fails the same command (numpy 2.4.6 needs Python 3.11)
    result = pip_on_zoo_python(tmp_path, "--no-deps", "numpy==2.4.6")
    assert result.returncode != 0 and "numpy==2.4.6" in result.stderr


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
    for config in (BUNDLE / "configs").glob("*.yaml"):  # each beside its JSON twin, the same config
        twin = json.loads(zipfile.ZipFile(archive).read(f"zsegan/configs/{config.stem}.json"))
        assert twin == ConfigParser.load_config_file(config), config.name
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


def test_load_builds_the_network_itself_from_the_generated_json_config(downloaded, g_s):
    network = load("zsegan", bundle_dir=downloaded.parent, device="cpu")  # configs/train.json's network_def
    assert isinstance(network, Generator3D)
    loaded = network.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in g_s.state_dict().items())


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


# ---------------------------------------------------------------- the model-zoo pull request

ZOO = (
    ROOT / "zoo"
)  # what a zoo pull request adds outside models/<name>/: its unit tests, the supported app's properties
# the zoo's code-style settings (its setup.cfg and pyproject.toml), with which its CI runs isort, black, flake8
ZOO_SETUP_CFG = """\
[flake8]
select = B,C,E,F,N,P,T4,W,B9
max_line_length = 120
ignore = E203,E501,E741,W503,W504,C408,N812,B023
per_file_ignores = __init__.py: F401, __main__.py: F401
exclude = *.pyi,.git,.eggs,venv,.venv,_version.py

[isort]
known_first_party = models
profile = black
line_length = 120
skip = .git, .eggs, venv, .venv, versioneer.py, _version.py, conf.py
skip_glob = *.pyi
"""
ZOO_PYPROJECT = """\
[tool.black]
line-length = 120
target-version = ['py37', 'py38', 'py39']
include = '\\.pyi?$'
"""
NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.ENCODING}


def string_after_code(source: str) -> int | None:
    """The line of a module-level string after code or after the module docstring, as pre-commit's
    check-docstring-first (a zoo check) finds it; None when there is none."""
    docstring = code = None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING and token.start[1] == 0:
            if docstring is not None or code is not None:
                return token.start[0]
            docstring = token.start[0]
        elif token.type not in NOT_CODE and code is None:
            code = token.start[0]
    return None


@pytest.fixture(scope="module")
def zoo_pr(tmp_path_factory) -> Path:
    """A model-zoo repository with this bundle's pull request: ``pack --zoo`` (the documented command) and zoo/."""
    root, hosting = tmp_path_factory.mktemp("model-zoo"), tmp_path_factory.mktemp("hosting")
    cmd = [
        sys.executable, "-m", "scripts.ops.pack", "--zoo", "--hosting_url", hosting.as_uri(), "--hosting_dir",
        str(hosting), "--output_dir", str(root),
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.strip()) == root / "models" / ZOO_NAME
    shutil.copytree(ZOO, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "setup.cfg").write_text(ZOO_SETUP_CFG)
    (root / "pyproject.toml").write_text(ZOO_PYPROJECT)
    return root


def test_the_check_for_strings_after_code_finds_them():
    assert string_after_code('"""Doc."""\n\nimport os\n\nx = (\n    "indented"\n)\n') is None
    assert string_after_code('import os\n"""Doc."""\n') == 2
    assert string_after_code('"""Doc."""\n"""Another."""\n') == 2
    assert string_after_code('"""Doc."""\nx = [\n"at column 0",\n]\n') == 3


def test_the_pull_request_passes_the_zoos_code_checks(zoo_pr):
    python_files = sorted(zoo_pr.rglob("*.py"))
    assert len(python_files) > 50 and (zoo_pr / "ci" / "unit_tests" / f"test_{ZOO_NAME}_dist.py") in python_files
    for check in (["isort", "--check"], ["black", "--skip-magic-trailing-comma", "--check"], ["flake8", "--count"]):
        result = subprocess.run([sys.executable, "-m", *check, "."], cwd=zoo_pr, capture_output=True, text=True)
        hint = "the repository's settings are the zoo's: `isort bundle tests tools zoo && black bundle tests tools zoo`"
        assert result.returncode == 0, f"{check[0]}: {result.stdout[-3000:]}{result.stderr[-3000:]}\n{hint}"
    assert {path.name: string_after_code(path.read_text()) for path in python_files} == {
        path.name: None for path in python_files
    }  # fmt: skip
    too_large = [p for p in zoo_pr.rglob("*") if p.is_file() and p.stat().st_size > LARGE]  # check-added-large-files
    assert too_large == []


def test_large_files_yml_gives_the_weights_and_load_builds_the_network(zoo_pr, g_s, tmp_path):
    bundle = tmp_path / ZOO_NAME
    shutil.copytree(zoo_pr / "models" / ZOO_NAME, bundle)
    result = monai_bundle(
        "download_large_files", "--bundle_path", str(bundle), cwd=tmp_path, env=outside_the_repository()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (bundle / "models" / "model.pt").read_bytes() == (BUNDLE / "models" / "model.pt").read_bytes()
    # a user's Python outside the repository, the bundle on its path (as the zoo's tests put it): no model= needed
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); from monai.bundle import load; "
        "network = load(sys.argv[2], bundle_dir=sys.argv[3], device='cpu'); print(type(network).__name__); "
        "torch.save(network.state_dict(), sys.argv[4])"
    )
    cmd = [sys.executable, "-c", code, str(bundle), ZOO_NAME, str(tmp_path), str(tmp_path / "loaded.pt")]
    result = subprocess.run(cmd, cwd=tmp_path, env=outside_the_repository(), capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.split()[-1] == "Generator3D", result.stderr[-3000:]
    loaded = torch.load(tmp_path / "loaded.pt", weights_only=True)
    assert all(torch.equal(loaded[key], value) for key, value in g_s.state_dict().items())


def test_large_files_with_another_hash_are_refused(zoo_pr, tmp_path):
    bundle = tmp_path / ZOO_NAME
    shutil.copytree(zoo_pr / "models" / ZOO_NAME, bundle)
    listing = (bundle / LARGE_FILES).read_text()
    (bundle / LARGE_FILES).write_text(re.sub(r"hash_val: \w+", "hash_val: " + "0" * 64, listing))
    result = monai_bundle(
        "download_large_files", "--bundle_path", str(bundle), cwd=tmp_path, env=outside_the_repository()
    )
    assert result.returncode != 0 and "check of downloaded file failed" in result.stderr
    assert not (bundle / "models" / "model.pt").exists()


def missing_properties(
    bundle: Path, config_file: Path, app: str, meta_file: Path | None = None, **override
) -> list[str]:
    """What the zoo's property check (its ci/verify_bundle.py) reports missing for ``app`` in ``config_file``."""
    spec = importlib.util.spec_from_file_location("bundle_properties", ZOO / app / "bundle_properties.py")
    properties = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(properties)
    configs = bundle / "configs"
    workflow = create_workflow(
        workflow_type="inference", bundle_root=str(bundle), config_file=str(config_file),
        logging_file=str(configs / "logging.conf"), meta_file=str(meta_file or configs / "metadata.json"), **override,
    )  # fmt: skip
    workflow.properties = {**properties.MetaProperties, **properties.InferProperties}
    return workflow.check_properties()


def test_each_supported_app_checks_the_inference_config(zoo_ci, tiny_dataset, tmp_path):
    bundle = zoo_ci / "models" / ZOO_NAME  # with its weights, as the zoo's CI checks it
    apps = metadata()["supported_apps"]
    assert apps
    for app in apps:
        found = {"dataset_dir": str(tiny_dataset)}  # stacks to enhance in <dataset_dir>/stacks
        assert missing_properties(bundle, bundle / "configs" / "inference.yaml", app, **found) == [], app
        meta = metadata()
        del meta["network_data_format"]["inputs"]["image"]["value_range"]  # one of the app's own properties
        (tmp_path / "metadata.json").write_text(json.dumps(meta))
        config = bundle / "configs" / "inference.yaml"
        with pytest.raises(KeyError, match="Property 'value_range'"):  # MONAI's check stops at it
            missing_properties(bundle, config, app, tmp_path / "metadata.json", **found)


def test_the_zoos_own_property_check_passes(zoo_ci):
    """The zoo checks with the config's defaults: input_path <bundle>/data/stacks, which a zoo bundle has not.
    Parsing lists no input then; reading and checking the inputs is the first step of running (below)."""
    bundle = zoo_ci / "models" / ZOO_NAME
    assert not (bundle / "data").exists()
    for app in metadata()["supported_apps"]:
        assert missing_properties(bundle, bundle / "configs" / "inference.yaml", app) == [], app


def test_inference_without_its_default_input_is_refused_when_run(zoo_ci, tmp_path):
    bundle = zoo_ci / "models" / ZOO_NAME
    out = tmp_path / "out"
    result = monai_bundle(
        "run", "inference", "--config_file", "configs/inference.yaml", "--output_dir", str(out), cwd=bundle,
        env=outside_the_repository(),
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {bundle.resolve() / 'data' / 'stacks'}: no such file or folder: check the path"]
    assert not out.exists()


@pytest.fixture(scope="module")
def zoo_ci(zoo_pr, tmp_path_factory) -> Path:
    """The zoo repository as its CI has it before the unit tests: the large files downloaded."""
    root = tmp_path_factory.mktemp("model-zoo-ci")
    shutil.copytree(zoo_pr, root, dirs_exist_ok=True)
    bundle = root / "models" / ZOO_NAME
    result = monai_bundle("download_large_files", "--bundle_path", str(bundle), cwd=root, env=outside_the_repository())
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.mark.parametrize("suffix", ["", "_dist"])
def test_the_zoos_unit_tests_pass(zoo_ci, suffix):
    env = outside_the_repository() | {"PYTHONPATH": str(zoo_ci / "ci" / "unit_tests"), "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_")}
    cmd = [sys.executable, "-m", "unittest", "-v", f"test_{ZOO_NAME}{suffix}"]  # its runner's import, from its root
    result = subprocess.run(cmd, cwd=zoo_ci, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    assert re.search(r"Ran [1-9]\d* tests? in .*\n\nOK", result.stderr), result.stderr[-3000:]


# ---------------------------------------------------------------- model card


def test_model_card_links_exist_and_it_gives_the_shipped_recipe():
    card = BUNDLE / "docs" / "README.md"
    text = card.read_text()
    links = re.findall(r"\]\(([^)#\s]+)", text)
    local = [link for link in links if "://" not in link]
    assert any(link.endswith(".png") for link in local)
    for link in local:
        assert (card.parent / link).exists(), link
    recipe = re.search(r"OMP_NUM_THREADS=\d python -m monai\.bundle run training .*?--g_b_kind optical", text, re.S)
    assert recipe and recipe.group(0) in (ROOT / "docs" / "results.md").read_text()
    # the card describes these very weights: retrained weights need a new recipe and checksum
    assert hashlib.md5((BUNDLE / "models" / "model.pt").read_bytes()).hexdigest() in text
