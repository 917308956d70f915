"""Export G_S as a BioImage Model Zoo model package (bioimage.io model spec 0.5), which Fiji (deepImageJ), ilastik,
QuPath, napari and the ``bioimageio`` command line run without MONAI or this bundle's code.

From the bundle folder::

    python -m scripts.ops.pack --format bioimageio --output_dir dist   # -> dist/zsegan_v<version>.bioimageio.zip

The archive holds ``rdf.yaml`` and the files it names: the weights as TorchScript (``monai.bundle ckpt_export``)
and as ONNX (``monai.bundle onnx_export``, dynamic B, Z, Y, X; needs the ``export`` extra), a test input (a
simulated z-stack, seed 0) and the test output of this bundle's own pipeline on it, a cover picture of both, and
the model card as documentation.

The package says what the network needs around it, as bioimage.io's own operations, which every client applies:
before G_S, ``scale_range`` maps each stack's 0.5 and 99.5 percentiles (over Z, Y and X together, as the bundle's
inference does) to 0 and 1, and ``scale_linear`` (gain 2, offset -1) to -1 and 1; after it, ``scale_linear``
(gain 0.5, offset 0.5) maps the output back to 0 and 1 at the input's percentiles. So the output is in those
normalised units, not in the input's (the spec has no inverse of ``scale_range``); the bundle's own inference
writes the input's units. The axes allow any depth from 4 planes and Y, X from 64 in steps of 16. No halo is
declared: with one, bioimageio.core pads every input by it, and G_S's instance norm then changes the whole output
(by 0.03 on average, 0.7 at the border, on the test input), whereas without, a whole stack gives the bundle's output.
G_S was trained on whole stacks: a client should not tile in Z.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch
import yaml
from monai.bundle import ckpt_export, onnx_export
from PIL import Image
from scripts.data.atomic import write_zip_atomic
from scripts.data.transforms import percentile_range
from scripts.errors import InputError
from scripts.simulate.zstacks import simulate_stack

FORMAT_VERSION = "0.5.12"  # the model spec of bioimageio.spec 0.5.12, which validates the package in the tests
LOWER, UPPER = 0.5, 99.5  # the percentiles mapped to -1 and 1 (inference.yaml's intensity_lower/upper)
VOXEL_UM = (1.0, 1.0, 1.0)  # Z, Y, X of the simulated stacks the shipped weights were trained on
TEST_SHAPE = (16, 64, 64)  # Z, Y, X of the test input
# the ONNX export documented in docs/README.md: an example input with no size 1 (torch.export fixes sizes 0 and 1)
ONNX_INPUT_SHAPE = [2, 1, 16, 64, 64]
ONNX_DYNAMIC = {0: "batch", 2: "z", 3: "y", 4: "x"}
ONNX_CONVERTER = {
    "input_names": ["image"], "output_names": ["pred"], "dynamic_axes": {"image": ONNX_DYNAMIC, "pred": ONNX_DYNAMIC}
}  # fmt: skip
CITE = [
    {
        "text": "Visual enhancement of image stacks from a z-scanning microscope using focal lengths weighted GANs "
        "(ZSE-GAN), unpublished manuscript",
        "url": "https://github.com/keerfish/ZSE-GAN/blob/main/ZSE_GAN.pdf",
    },
    {
        "text": "Zhu, Park, Isola, Efros. Unpaired image-to-image translation using cycle-consistent adversarial "
        "networks. ICCV 2017",
        "doi": "10.1109/ICCV.2017.244",
    },
]


def reference_tensors(network: torch.nn.Module, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A test input (B, C, Z, Y, X float32: a simulated stack in its own units) and G_S's output on it, mapped as
    the package says (``rdf``): computed by this bundle's percentiles and network, not by a bioimage.io client."""
    stack = simulate_stack(np.random.default_rng(seed), size=TEST_SHAPE[1], depth=TEST_SHAPE[0])[0]
    x = np.asarray(stack, np.float32)[None, None]
    lo, hi = percentile_range(x, LOWER, UPPER, "the test input")
    with torch.no_grad():
        y = network(torch.from_numpy(2 * (x - lo) / (hi - lo) - 1)).numpy()
    return x, ((y + 1) / 2).astype(np.float32)


def _space_axes(output: bool) -> list[dict]:
    axes = []
    for name, scale in zip("zyx", VOXEL_UM, strict=True):
        axis = {"type": "space", "id": name, "unit": "micrometer", "scale": scale}
        if output:
            axis["size"] = {"tensor_id": "raw", "axis_id": name}  # no halo: clients would pad (see the docstring)
        else:
            axis["size"] = {"min": 4, "step": 1} if name == "z" else {"min": 64, "step": 16}
        axes.append(axis)
    return axes


def rdf(meta: dict, files: dict[str, bytes], opset_version: int) -> dict:
    """The model's ``rdf.yaml`` (spec 0.5) from the bundle's metadata and the package's ``files`` (name -> bytes)."""

    def _file(name: str) -> dict:
        return {"source": name, "sha256": hashlib.sha256(files[name]).hexdigest()}

    return {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": meta["name"],
        "description": meta["task"],
        "version": meta["version"],
        "authors": [{"name": meta["authors"]}],
        "cite": CITE,
        "license": "Apache-2.0",
        "documentation": _file("README.md"),
        "covers": [_file("cover.png")],
        "tags": ["microscopy", "brightfield", "z-stack", "3d", "deblurring", "enhancement", "gan", "pytorch"],
        "git_repo": "https://github.com/keerfish/ZSE-GAN",
        "inputs": [
            {
                "id": "raw",
                "description": "a brightfield z-stack in its own intensity units, axes Z (focal planes), Y, X",
                "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["brightfield"]}, *_space_axes(False)],
                "test_tensor": _file("test_input.npy"),
                "sample_tensor": _file("sample_input.tif"),
                "data": {"type": "float32"},
                "preprocessing": [
                    {
                        "id": "scale_range",
                        "kwargs": {"axes": ["z", "y", "x"], "min_percentile": LOWER, "max_percentile": UPPER},
                    },
                    {"id": "scale_linear", "kwargs": {"gain": 2.0, "offset": -1.0}},
                ],
            }
        ],
        "outputs": [
            {
                "id": "enhanced",
                "description": "the enhanced stack, same size; 0 and 1 at the input's 0.5 and 99.5 percentiles",
                "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["enhanced"]}, *_space_axes(True)],
                "test_tensor": _file("test_output.npy"),
                "sample_tensor": _file("sample_output.tif"),
                "data": {"type": "float32"},
                "postprocessing": [{"id": "scale_linear", "kwargs": {"gain": 0.5, "offset": 0.5}}],
            }
        ],
        "weights": {
            "torchscript": {**_file("weights/model.ts"), "pytorch_version": meta["pytorch_version"]},
            "onnx": {**_file("weights/model.onnx"), "opset_version": opset_version, "parent": "torchscript"},
        },
    }


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _tif(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def cover(x: np.ndarray, y: np.ndarray) -> bytes:
    """A 2:1 PNG: the test input's outermost plane (the most out of focus) beside G_S's output there."""
    x0, y0 = x[0, 0, 0], y[0, 0, 0]
    lo, hi = np.percentile(x0, [LOWER, UPPER])
    planes = [(x0 - lo) / (hi - lo), y0 * 1.0]  # the output is already 0 and 1 at the input's percentiles
    pixels = np.concatenate([np.clip(p, 0, 1) for p in planes], axis=1)
    image = Image.fromarray((pixels * 255).round().astype(np.uint8)).resize((512, 256), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def package_files(root: Path) -> tuple[dict[str, bytes], int]:
    """Every file of the package but ``rdf.yaml``, from the bundle at ``root``, and the ONNX opset used."""
    configs, weights = root / "configs", root / "models" / "model.pt"
    if not weights.is_file():
        raise InputError(weights, "missing: the package needs G_S's weights")
    try:
        import onnx
    except ImportError as e:
        raise InputError(None, "the ONNX weights need the export extra: pip install -e '.[export]'") from e
    common = {
        "net_id": "network_def", "ckpt_file": str(weights), "meta_file": str(configs / "metadata.json"),
        "config_file": str(configs / "inference.yaml"), "bundle_root": str(root),
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        ts, onnx_path = Path(tmp) / "model.ts", Path(tmp) / "model.onnx"
        ckpt_export(filepath=str(ts), **common)
        onnx_export(filepath=str(onnx_path), input_shape=ONNX_INPUT_SHAPE, converter_kwargs=ONNX_CONVERTER, **common)
        network = torch.jit.load(str(ts), map_location="cpu").eval()
        x, y = reference_tensors(network)
        opset = max(o.version for o in onnx.load(str(onnx_path)).opset_import if o.domain in ("", "ai.onnx"))
        files = {"weights/model.ts": ts.read_bytes(), "weights/model.onnx": onnx_path.read_bytes()}
    files |= {"test_input.npy": _npy(x), "test_output.npy": _npy(y), "cover.png": cover(x, y)}
    files |= {"sample_input.tif": _tif(x), "sample_output.tif": _tif(y)}  # the same, for people: any TIFF reader
    card = root / "docs" / "README.md"
    files["README.md"] = card.read_bytes()
    for figure in sorted((root / "docs" / "figures").glob("*.png")):  # the card's pictures, where it links them
        files[f"figures/{figure.name}"] = figure.read_bytes()
    return files, opset


def bioimageio_package(root: str | Path, output_dir: str | Path = ".", name: str = "zsegan") -> Path:
    """Write ``<output_dir>/<name>_v<version>.bioimageio.zip`` for the bundle at ``root``; return its path."""
    root = Path(root)
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    files, opset = package_files(root)
    files = {"rdf.yaml": yaml.safe_dump(rdf(meta, files, opset), sort_keys=False).encode(), **files}
    archive = Path(output_dir) / f"{name}_v{meta['version']}.bioimageio.zip"
    write_zip_atomic(archive, files)
    return archive
