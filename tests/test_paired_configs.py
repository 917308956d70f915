"""The paired workflow's configs agree on the network, the intensities, the window and the split."""

from pathlib import Path

from monai.bundle import ConfigParser

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"
NAMES = ("paired_train.yaml", "paired_inference.yaml", "paired_evaluate.yaml")
SHARED = [
    "bundle_root", "spatial_dims", "u_channels", "u_strides", "u_res_units", "u_norm", "u_residual", "network_def",
    "intensity_lower", "intensity_upper", "sw_roi_size", "sw_batch_size", "sw_overlap", "sw_mode",
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
