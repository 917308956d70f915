"""The paired workflow's configs agree on the network, the intensities, the window and the split."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer
from scipy import ndimage
from scripts.data.io import read_image, write_image
from scripts.data.transforms import RobustNormalised
from scripts.errors import InputError, find_input_error
from scripts.inference.sliding_window import enhance
from scripts.nets.paired import residual_unet
from scripts.ops.handlers import ExportGenerator

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"
NAMES = ("paired_train.yaml", "paired_inference.yaml", "paired_evaluate.yaml")
SHARED = [
    "bundle_root", "spatial_dims", "u_channels", "u_strides", "u_res_units", "u_norm", "u_residual", "u_top_conv_only",
    "network_def",
    "intensity_lower", "intensity_upper", "sw_roi_size", "sw_batch_size", "sw_overlap", "sw_mode", "input_ndim",
]  # fmt: skip
SPLIT = [
    "simulated_dir",
    "dataset_dir",
    "simulate_dataset",
    "seed",
    "val_fraction",
    "test_fraction",
    "train_systems",
    "max_shift_px",
]


def load(name: str) -> dict:
    return ConfigParser.load_config_file(CONFIGS / name)


def test_the_three_configs_share_their_common_settings():
    train, inference, evaluate = (load(n) for n in NAMES)
    for key in SHARED:
        assert train[key] == inference[key] == evaluate[key], key
    for key in SPLIT:  # evaluation tests exactly the pairs training held out
        assert train[key] == evaluate[key], key
    assert inference["dataset_dir"] == train["simulated_dir"]


def test_every_config_builds_the_same_generator_and_trains_the_paper_recipe():
    layouts = []
    for name in NAMES:
        network = ConfigParser(load(name)).get_parsed_content("network_def")
        layouts.append({k: tuple(v.shape) for k, v in network.state_dict().items()})
    assert layouts[0] == layouts[1] == layouts[2]
    train = load("paired_train.yaml")
    assert (train["lambda_l1"], train["lr"], train["beta1"], train["beta2"]) == (100.0, 0.0002, 0.5, 0.999)


def test_training_saves_what_an_exact_resume_needs():
    """paired_train.yaml, and restore_train.yaml laid over it (its own handler list), checkpoint the training
    loader's random states and shuffle with the resumable sampler; validation draws from a generator of its own
    (the end-to-end proof: test_paired_workflows.py, a killed and resumed run ends bit for bit)."""
    for files in (["paired_train.yaml"], ["paired_train.yaml", "restore_train.yaml"]):
        config = ConfigParser.load_config_files([CONFIGS / f for f in files])
        train = config["train"]
        (checkpoint,) = [h for h in train["handlers"] if str(h.get("_target_")).endswith(".ResumableCheckpoint")]
        assert checkpoint["loaders"] == ["@train#dataloader"], files
        assert train["dataloader"]["sampler"]["_target_"] == "scripts.data.datalist.ResumableSampler"
        assert "shuffle" not in train["dataloader"] and "generator" in train["dataloader"]
        assert "generator" in config["validate"]["dataloader"]


# ----------------------------------------------------------------------------- inference as G was trained

TINY = {"u_channels": [4, 8, 16, 32], "sw_roi_size": [32, 32], "sw_batch_size": 1, "device": "cpu"}


def _inputs(folder: Path, *names: str) -> dict[str, np.ndarray]:
    """Smooth float32 wide-field-like images of 40 x 48 at levels that differ by file, written as TIFF."""
    images = {}
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        images[name] = (ndimage.gaussian_filter(rng.random((40, 48)), 2) * 2000 * (i + 1) + 100).astype(np.float32)
        write_image(folder / name, images[name])
    return images


def _infer(inputs: Path, out: Path, model_path: Path, **overrides) -> dict[str, np.ndarray]:
    """paired_inference.yaml's ``inference``, in this process; {file name: output}."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "paired_inference.yaml"))
    parser.update(
        {"input_path": str(inputs), "output_dir": str(out), "model_path": str(model_path), **TINY, **overrides}
    )
    try:
        parser.get_parsed_content("inference")
    except Exception as e:  # MONAI's parser wraps what the config's expressions raise
        found = find_input_error(e)
        if found is None:
            raise
        raise found from e
    return {f.name.replace("_confocal", ""): read_image(f)[0] for f in sorted(out.iterdir())}


def _expected(g: torch.nn.Module, image: np.ndarray, intensity_range=None) -> np.ndarray:
    """G on ``image`` through the config's window, mapped by ``intensity_range`` (None: its own percentiles)."""
    inferer = SlidingWindowInferer([32, 32], 1, 0.25, mode="gaussian")
    return enhance(g, image, inferer, RobustNormalised("image", 0.5, 99.5, intensity_range=intensity_range))


@pytest.fixture
def g(tmp_path) -> torch.nn.Module:
    torch.manual_seed(0)
    return residual_unet(2, (4, 8, 16, 32), top_conv_only=True).eval()  # the configs' G, tiny


def test_inference_maps_each_input_by_its_systems_trained_range(g, tmp_path):
    """A G exported with per-system ranges (paired_train.yaml --system_normalisation True writes them beside the
    weights): a trained system's inputs mapped by its stored range, an unseen system's (C) by its own inputs pooled."""
    images = _inputs(tmp_path / "in", "A_00000.tif", "C_00000.tif", "C_00001.tif")
    stored = {"A": [100.0, 6000.0], "B": [50.0, 900.0]}
    engine = Engine(lambda engine, batch: None)
    ExportGenerator(g, str(tmp_path / "paired.pt"), {"system_ranges": stored}).attach(engine)
    engine.run([0], max_epochs=1)
    outputs = _infer(tmp_path / "in", tmp_path / "out", tmp_path / "paired.pt")
    pooled = np.percentile(np.concatenate([images["C_00000.tif"], images["C_00001.tif"]]), [0.5, 99.5])
    ranges = {"A_00000.tif": stored["A"], "C_00000.tif": pooled, "C_00001.tif": pooled}
    for name, image in images.items():
        expected = _expected(g, image, tuple(float(v) for v in ranges[name]))
        np.testing.assert_allclose(outputs[name], expected, rtol=1e-4, atol=1e-2, err_msg=name)
        per_image = _expected(g, image)  # as a G trained without the switch is applied: visibly another output
        assert np.abs(outputs[name] - per_image).max() > 100, name


def test_inference_of_a_g_without_ranges_is_per_image_as_before(g, tmp_path):
    """Weights without settings (trained without the switch, or before settings were written) map each input by
    its own percentiles; asking for system_normalisation with them is one clear error naming the key."""
    images = _inputs(tmp_path / "in", "A_00000.tif", "C_00000.tif")
    torch.save(g.state_dict(), tmp_path / "paired.pt")
    outputs = _infer(tmp_path / "in", tmp_path / "out", tmp_path / "paired.pt")
    for name, image in images.items():
        np.testing.assert_allclose(outputs[name], _expected(g, image), rtol=1e-4, atol=1e-2, err_msg=name)
    with pytest.raises(InputError, match=r"^--system_normalisation True: .*paired.pt carries no per-system"):
        _infer(tmp_path / "in", tmp_path / "refused", tmp_path / "paired.pt", system_normalisation=True)
    assert not (tmp_path / "refused").exists()


def test_inference_refuses_an_input_without_a_system_label_before_writing(g, tmp_path):
    _inputs(tmp_path / "in", "A_00000.tif", "cell.tif")
    engine = Engine(lambda engine, batch: None)
    ExportGenerator(g, str(tmp_path / "paired.pt"), {"system_ranges": {"A": [100.0, 6000.0]}}).attach(engine)
    engine.run([0], max_epochs=1)
    with pytest.raises(InputError, match="has no system label") as raised:
        _infer(tmp_path / "in", tmp_path / "out", tmp_path / "paired.pt")
    assert raised.value.path == str(tmp_path / "in" / "cell.tif")
    assert not (tmp_path / "out").exists()  # no partial output


@pytest.mark.parametrize("name", ["paired.pt", "paired_l1.pt"])
def test_the_shipped_paired_generators_bring_an_unseen_pair_closer_to_its_confocal(name, tmp_path):
    """bundle/models/paired.pt (the GAN) and paired_l1.pt (the L1-only baseline), trained by paired_train.yaml's
    defaults on the simulated pairs: paired_inference.yaml applies each, with the settings written beside it (per
    image, no system ranges), to a pair of the unseen system C simulated from another seed than the default
    data's, and its output is closer to the confocal than the wide-field input is (docs/paired.md's measures)."""
    from scripts.evaluation.paired import compare, unit_range
    from scripts.simulate.fluorescence import simulate_pairs

    simulate_pairs(tmp_path / "pair", n_per_system=1, systems=("C",), seed=7, progress=False)
    (tmp_path / "pair" / "confocal").rename(tmp_path / "confocal")  # inference reads every file of widefield/
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "paired_inference.yaml"))
    model = CONFIGS.parent / "models" / name
    parser.update({"input_path": str(tmp_path / "pair" / "widefield"), "output_dir": str(tmp_path / "out")})
    parser.update({"model_path": str(model)})
    assert parser.get_parsed_content("trained_settings")["system_ranges"] is None
    parser.get_parsed_content("inference")
    (output,) = (tmp_path / "out").iterdir()
    target = unit_range(read_image(tmp_path / "confocal" / "C_00000.tif")[0])
    before = compare(unit_range(read_image(tmp_path / "pair" / "widefield" / "C_00000.tif")[0]), target)
    after = compare(unit_range(read_image(output)[0]), target)
    assert after["psnr"] > before["psnr"] + 3.0 and after["ssim"] > before["ssim"], (before, after)


@pytest.mark.parametrize("name", NAMES)
def test_u_residual_must_be_a_boolean_not_the_string_false(name):
    """`--u_residual false` arrives as the string "false", which G would take as true (a skip the user turned off):
    every paired config refuses it with one line naming the key, and takes True/False."""
    from scripts.ops.cli import check_values

    parser = ConfigParser(load(name))
    parser.update({"u_residual": "false"})
    with pytest.raises(InputError, match=r"^--u_residual 'false': must be True or False$"):
        check_values(parser)
    parser.update({"u_residual": False})
    check_values(parser)


def test_init_gain_from_the_command_line_is_a_positive_number():
    """`--init_gain null` arrives as the string "null" (and `None` is dropped by MONAI's command line): refused with
    one line that says how to get PyTorch's default initialisation; null in a config file passes."""
    from scripts.ops.cli import check_values

    parser = ConfigParser(load("paired_train.yaml"))
    for value in ("null", 0, -0.02):
        parser.update({"init_gain": value})
        with pytest.raises(InputError, match=r"^--init_gain .*: must be a number > 0 \(PyTorch's default"):
            check_values(parser)
    for value in (None, 0.02):
        parser.update({"init_gain": value})
        check_values(parser)


def test_the_evaluations_l1_baseline_is_built_as_it_was_trained_and_apart_from_g(tmp_path):
    """G trained with a linear top (the config's keys say so) against an L1-only baseline trained before that key (its
    settings say: a normalised top): each is loaded into the network it was trained as, two modules apart; an L1 file
    without settings gets the config's network, a module of its own too."""
    from scripts.inference.sliding_window import write_settings

    args = {"spatial_dims": 2, "channels": [4, 8, 16, 32], "strides": [2, 2, 2], "num_res_units": 2}
    torch.manual_seed(0)
    for name, top in (("g.pt", True), ("l1.pt", False), ("bare.pt", True)):
        torch.save(residual_unet(**args, top_conv_only=top).state_dict(), tmp_path / name)
        if name != "bare.pt":
            write_settings(
                tmp_path / name, {"builder": "residual_unet", "network_args": {**args, "top_conv_only": top}}
            )
    for l1, top in (("l1.pt", False), ("bare.pt", True)):
        parser = ConfigParser(load("paired_evaluate.yaml"))
        parser.update({"u_channels": [4, 8, 16, 32], "u_top_conv_only": True})
        parser.update({"model_path": str(tmp_path / "g.pt"), "l1_model_path": str(tmp_path / l1)})
        network, baseline = parser.get_parsed_content("network"), parser.get_parsed_content("baseline")
        assert network is not baseline and network.network is not baseline.network
        layers = baseline.network.net.model[-1][0]
        assert hasattr(layers, "adn") is not top, l1  # the top's norm: as the L1 file was trained
        for key, value in torch.load(tmp_path / l1).items():
            torch.testing.assert_close(baseline.network.state_dict()[key], value)
