"""One source for each network's architecture: train, inference, evaluate and registration build the same networks."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
from monai.bundle import ConfigParser
from scripts.nets.architecture import DEFAULTS, DISCRIMINATOR_KEYS, GENERATOR_KEYS, STUDY_DEFAULTS, generator_args
from scripts.nets.networks import Generator3D, PatchDiscriminator2D
from scripts.nets.optical import OpticalBlur

CONFIGS = Path(__file__).resolve().parents[2] / "bundle" / "configs"
WORKFLOWS = ("train.yaml", "inference.yaml", "evaluate.yaml")


def parser_for(name: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser(ConfigParser.load_config_file(CONFIGS / name))
    parser.update(overrides)
    return parser


def layout(network) -> dict:
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


def test_every_constructor_option_is_a_key_with_the_constructors_default_or_the_studys():
    for cls, keys in ((Generator3D, GENERATOR_KEYS), (PatchDiscriminator2D, DISCRIMINATOR_KEYS)):
        options = set(inspect.signature(cls).parameters) - {"in_channels", "out_channels"}
        assert set(keys.values()) == options, cls.__name__
    assert DEFAULTS == {
        "g_channels": 16, "g_downsamplings": 2, "g_residual_blocks": 6, "g_first_kernel": 5, "g_norm": "batch",
        "g_padding_mode": "replicate", "g_upsampling": "pixelshuffle", "g_residual": True, "g_focus_guide": True,
        "g_focal_skip": True, "g_focal_gate": True,
        "d_channels": 32, "d_layers": 3, "d_norm": "instance",
    }  # fmt: skip
    assert set(STUDY_DEFAULTS) == {
        "g_upsampling", "g_residual", "g_focus_guide", "g_norm", "g_focal_skip", "g_focal_gate", "d_layers"
    }  # fmt: skip


def test_configs_pass_the_keys_in_the_helpers_order():
    call = "generator_args(" + ", ".join("@" + k for k in GENERATOR_KEYS) + ")"
    for name in WORKFLOWS:
        text = (CONFIGS / name).read_text()
        assert call in text, name
        assert not re.search(r"^g_\w+: *\d", text, re.M), f"{name} writes an architecture default again"
    assert (
        "discriminator_args(" + ", ".join("@" + k for k in DISCRIMINATOR_KEYS) + ")"
        in (CONFIGS / "train.yaml").read_text()
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"g_channels": 4, "g_residual_blocks": 1, "g_downsamplings": 1, "g_first_kernel": 3, "g_norm": "batch",
         "g_padding_mode": "zeros", "g_upsampling": "pixelshuffle", "g_residual": True,
         "d_channels": 8, "d_layers": 3, "d_norm": "none"},
        {"g_channels": 4, "g_residual_blocks": 1, "g_focus_guide": True},
        {"g_channels": 4, "g_residual_blocks": 1, "g_focus_guide": False, "g_focal_skip": False, "g_focal_gate": False},
        {"g_channels": 4, "g_residual_blocks": 1, "g_focal_gate": False},
    ],
)  # fmt: skip
def test_train_inference_evaluate_and_registration_build_the_same_networks(overrides):
    train = parser_for("train.yaml", overrides)
    others = [parser_for(name, {k: v for k, v in overrides.items() if k.startswith("g_")}) for name in WORKFLOWS[1:]]
    expected = {GENERATOR_KEYS[k]: v for k, v in {**DEFAULTS, **overrides}.items() if k in GENERATOR_KEYS}
    register_args = train.get_parsed_content("train#register#network_args")
    assert json.loads(json.dumps(register_args)) == register_args == expected  # what the MLflow model stores
    reference = layout(Generator3D(**expected))
    built = [train.get_parsed_content("network_def")]  # G_S
    built += [p.get_parsed_content("network_def") for p in others]
    built.append(Generator3D(**register_args))  # what ZStackEnhancer rebuilds
    for network in built:
        assert isinstance(network, Generator3D) and layout(network) == reference
        assert network.residual == expected["residual"]
    for p in others:
        assert p.get_parsed_content("generator_args") == expected
    g_b = train.get_parsed_content("g_b_generator")  # the paper's G_B: G_S's architecture, never focus-guided
    plain = {**expected, "focus_guide": False, "focal_skip": False, "focal_gate": False}
    assert layout(g_b) == layout(Generator3D(**plain)) and not g_b.focus_guide and not g_b.focal_skip
    assert isinstance(train.get_parsed_content("g_b_def"), OpticalBlur)  # the default G_B: g_b_kind optical
    d_expected = {DISCRIMINATOR_KEYS[k]: v for k, v in {**DEFAULTS, **overrides}.items() if k in DISCRIMINATOR_KEYS}
    d_reference = layout(PatchDiscriminator2D(**d_expected))
    for i in ("d_s_def", "d_b_def"):
        assert layout(train.get_parsed_content(i)) == d_reference


def test_generator_args_wants_every_key():
    with pytest.raises(TypeError, match="g_channels"):
        generator_args(16, 2)


def test_g_residual_from_the_command_line_is_a_real_flag():
    values = [{**DEFAULTS, "g_focal_skip": False, "g_focal_gate": False}[k] for k in GENERATOR_KEYS]
    position = list(GENERATOR_KEYS).index("g_residual")
    for given, expected in (("false", False), ("False", False), ("true", True), (True, True)):
        values[position] = given
        assert generator_args(*values)["residual"] is expected
    values[position] = "no"
    with pytest.raises(ValueError, match="g_residual"):
        generator_args(*values)


def test_focal_skip_without_its_guide_or_residual_output_names_the_keys():
    values = dict(DEFAULTS)
    for key in ("g_focus_guide", "g_residual"):
        wrong = {**values, key: "false"}
        with pytest.raises(ValueError, match=f"--g_focal_skip true needs {key} true.*--g_focal_skip false"):
            generator_args(*[wrong[k] for k in GENERATOR_KEYS])
    plain = {**values, "g_focus_guide": False, "g_focal_skip": False, "g_focal_gate": False}
    assert generator_args(*[plain[k] for k in GENERATOR_KEYS])
    with pytest.raises(ValueError, match="--g_focal_gate true needs --g_focal_skip true.*--g_focal_gate false"):
        generator_args(*[{**values, "g_focal_skip": "false"}[k] for k in GENERATOR_KEYS])
