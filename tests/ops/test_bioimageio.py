"""The BioImage Model Zoo package: its rdf.yaml, test tensors and cover, and the package as bioimageio.core tests it
(format validation and reproducing the test output with each weights format), with no network."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from scripts.errors import InputError
from scripts.ops.bioimageio import LOWER, TEST_SHAPE, UPPER, cover, rdf, reference_tensors
from scripts.ops.pack import bundle_root, main

META = json.loads((bundle_root() / "configs" / "metadata.json").read_text())
FILES = (
    "weights/model.ts", "weights/model.onnx", "test_input.npy", "test_output.npy", "sample_input.tif",
    "sample_output.tif", "cover.png", "README.md",
)  # fmt: skip


def test_the_test_output_is_the_input_mapped_as_the_package_says():
    x, y = reference_tensors(torch.nn.Identity())  # G_S left out: what remains is the pre- and postprocessing
    assert x.shape == y.shape == (1, 1, *TEST_SHAPE) and x.dtype == y.dtype == np.float32
    assert x.min() >= 0 and x.max() > 2  # the simulated stack in its own units (8-bit), not normalised
    np.testing.assert_allclose(np.quantile(y, [LOWER / 100, UPPER / 100]), [0, 1], atol=1e-6)
    lo, hi = np.quantile(x, [LOWER / 100, UPPER / 100])
    np.testing.assert_allclose(y, (x - lo) / (hi - lo), atol=1e-6)


def test_the_rdf_names_every_file_of_the_package_with_its_digest():
    files = {name: name.encode() * 3 for name in FILES}
    description = rdf(META, files, opset_version=18)
    named = [description["documentation"], *description["covers"]]
    for tensor in description["inputs"] + description["outputs"]:
        named += [tensor["test_tensor"], tensor["sample_tensor"]]
    named += list(description["weights"].values())
    assert sorted(f["source"] for f in named) == sorted(FILES)
    assert all(f["sha256"] == hashlib.sha256(files[f["source"]]).hexdigest() for f in named)
    (raw,), (enhanced,) = description["inputs"], description["outputs"]
    assert [p["id"] for p in raw["preprocessing"]] == ["scale_range", "scale_linear"]
    assert raw["preprocessing"][0]["kwargs"] == {
        "axes": ["z", "y", "x"],
        "min_percentile": LOWER,
        "max_percentile": UPPER,
    }
    assert [a.get("id", a["type"]) for a in raw["axes"]] == ["batch", "channel", "z", "y", "x"]
    assert all(a["size"] == {"tensor_id": "raw", "axis_id": a["id"]} for a in enhanced["axes"][2:])
    assert {a["unit"] for a in raw["axes"][2:] + enhanced["axes"][2:]} == {"micrometer"}
    assert description["weights"]["onnx"]["parent"] == "torchscript" and description["version"] == META["version"]


def test_the_cover_is_a_2_to_1_picture_of_input_and_output():
    x = np.random.default_rng(0).uniform(0, 255, (1, 1, *TEST_SHAPE)).astype(np.float32)
    image = Image.open(io.BytesIO(cover(x, np.zeros_like(x))))
    assert image.format == "PNG" and image.size == (512, 256)
    pixels = np.asarray(image)
    assert pixels[:, :256].std() > 10 and pixels[:, 256:].max() == 0  # the input's texture; the output, all 0


def test_bioimageio_and_zoo_formats_are_not_mixed(tmp_path):
    with pytest.raises(InputError, match="--zoo: is for the MONAI model zoo"):
        main(["--format", "bioimageio", "--zoo", "--output_dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """The package made by the documented command, run in the bundle folder (for bioimageio.core to test)."""
    pytest.importorskip("bioimageio.core")
    out = tmp_path_factory.mktemp("bioimageio")
    cmd = [sys.executable, "-m", "scripts.ops.pack", "--format", "bioimageio", "--output_dir", str(out)]
    result = subprocess.run(cmd, cwd=bundle_root(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("the tests use no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def bioimageio_test(source: Path) -> tuple[str, list[str]]:
    """bioimageio.core's own test of a package: its status, and the names of the checks that passed."""
    from bioimageio.core import test_model

    summary = test_model(str(source))
    return summary.status, [d.name for d in summary.details if d.status == "passed"]


@pytest.mark.slow
def test_the_package_passes_bioimageio_cores_own_test(package, no_network):
    assert package.name == f"zsegan_v{META['version']}.bioimageio.zip"
    figures = [f"figures/{p.name}" for p in (bundle_root() / "docs" / "figures").glob("*.png")]  # the card's
    assert sorted(zipfile.ZipFile(package).namelist()) == sorted(["rdf.yaml", *FILES, *figures])
    status, passed = bioimageio_test(package)
    assert status == "passed"
    for weights in ("torchscript", "onnx"):
        assert f"Reproduce test outputs from test inputs ({weights})" in passed, passed


@pytest.mark.slow
def test_a_client_enhancing_a_whole_stack_gets_the_bundles_output(package, no_network):
    """As the README shows it: bioimageio.core's predict on a stack (no halo declared, so nothing is padded)."""
    from bioimageio.core import load_model_description, predict

    archive = zipfile.ZipFile(package)
    x, y = (np.load(io.BytesIO(archive.read(f"test_{kind}.npy"))) for kind in ("input", "output"))
    model = load_model_description(str(package))
    enhanced = predict(model=model, inputs={"raw": x}).members["enhanced"].data.values
    np.testing.assert_allclose(enhanced, y, rtol=0, atol=1e-4)
    wider = np.concatenate([x, x[..., ::-1]], axis=-1)  # another size: 16 x 64 x 128
    assert predict(model=model, inputs={"raw": wider}).members["enhanced"].data.shape == wider.shape


@pytest.mark.slow
def test_a_package_whose_weights_do_not_give_its_test_output_fails_that_test(package, no_network, tmp_path):
    zipfile.ZipFile(package).extractall(tmp_path)
    y = np.load(tmp_path / "test_output.npy")
    np.save(tmp_path / "test_output.npy", y + 0.01)  # beyond bioimageio's default tolerance (1e-3)
    description = yaml.safe_load((tmp_path / "rdf.yaml").read_text())
    sha = hashlib.sha256((tmp_path / "test_output.npy").read_bytes()).hexdigest()
    description["outputs"][0]["test_tensor"]["sha256"] = sha
    (tmp_path / "rdf.yaml").write_text(yaml.safe_dump(description, sort_keys=False))
    status, passed = bioimageio_test(tmp_path / "rdf.yaml")
    # the format is still valid ("valid-format"), the model's test is not ("passed" needs both)
    assert status == "valid-format" and not [name for name in passed if name.startswith("Reproduce test outputs")]
