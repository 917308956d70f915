"""The bundle's configs: shared settings agree, the ids MONAI workflows expect exist, everything resolves."""

from pathlib import Path

import pytest
from monai.bundle import ConfigParser

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"
SHARED = [
    "architecture", "g_channels", "g_downsamplings", "g_residual_blocks", "g_first_kernel", "g_norm", "g_padding_mode",
    "g_upsampling", "g_residual", "g_focus_guide", "g_focal_skip", "g_focal_gate", "generator_args",
    "network_def",
    "intensity_lower", "intensity_upper", "sw_roi_size", "sw_batch_size", "sw_overlap", "sw_mode", "bundle_root",
    "dataset_dir",
]  # fmt: skip


def load(name: str) -> dict:
    return ConfigParser.load_config_file(CONFIGS / name)


def test_train_inference_and_evaluate_share_their_common_settings():
    train, inference, evaluate = load("train.yaml"), load("inference.yaml"), load("evaluate.yaml")
    for key in SHARED:
        assert train[key] == inference[key] == evaluate[key], key
    assert inference["tracking_uri"] == evaluate["model_tracking_uri"]  # models:/ URIs are looked up in one store
    assert train["val_fraction"] == evaluate["val_fraction"] and train["seed"] == evaluate["seed"]  # same held-out set


@pytest.mark.parametrize(
    "name, ids",
    [
        ("train.yaml", ["bundle_root", "device", "dataset_dir", "network_def", "network", "train#trainer",
                        "train#dataset", "train#handlers", "train#inferer", "train#trainer#max_epochs",
                        "validate#evaluator", "initialize", "training", "run"]),
        ("inference.yaml", ["bundle_root", "device", "network_def", "network", "inferer", "preprocessing",
                            "postprocessing", "dataset", "evaluator", "inference", "run"]),
    ],
)  # fmt: skip
def test_configs_define_the_ids_workflows_expect(name, ids):
    parser = ConfigParser(load(name))
    for config_id in ids:
        assert config_id in parser, config_id


def test_network_def_builds_the_generator():
    parser = ConfigParser(load("inference.yaml"))
    network = parser.get_parsed_content("network_def")
    # the fidelity study's G_S: residual, sub-pixel, focal guide, batch norm, its correction over the focal transfer,
    # weighed by each plane's defocus
    assert network.residual and network.focus_guide and network.focal_skip
    assert type(network.base).__name__ == "_GatedFocalTransfer"
    assert sum(p.numel() for p in network.parameters()) == 1_959_041


def test_scripts_package_imports_its_modules_on_first_use():
    import scripts

    assert scripts.zsegan.focus.ALPHA_RANGE == (1.0, 1.67)  # what configs use as @scripts.zsegan.focus.ALPHA_RANGE
    assert not hasattr(scripts, "no_such_module")
