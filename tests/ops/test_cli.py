"""The command-line layer: argv parsing, override key checks, the executed config, clear errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from scripts.errors import InputError
from scripts.ops.cli import bundle_command_line, check_overrides, prepare

BUNDLE = Path(__file__).resolve().parents[2] / "bundle"
MAIN = "/venv/lib/python3.11/site-packages/monai/bundle/__main__.py"

CONFIG = {
    "max_epochs": 200,
    "lr": 0.0002,
    "dataset_dir": "/data",
    "sw_roi_size": [-1, 128, 128],
    "train": {"dataloader": {"batch_size": 1, "shuffle": True}, "handlers": [{"_target_": "StatsHandler"}]},
}


@pytest.fixture
def keep_excepthook(monkeypatch):
    """prepare() installs an excepthook: give the old one back after the test."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)


# ----------------------------------------------------------------------------- argv


def test_command_line_parses_both_forms_and_literals():
    argv = [
        MAIN, "run", "training",
        "--config_file", "configs/train.yaml",
        "--max_epochs", "5",
        "--lr=1e-3",
        "--dataset_dir", "/data/my stacks",
        "--sw_roi_size", "[-1, 64, 64]",
        "--amp", "False",
        "--verbose",
        "--offset", "-2",
        "--run_id", "training",
        "--meta_file=configs/metadata.json",
    ]  # fmt: skip
    files, overrides = bundle_command_line(argv)
    assert files == ["configs/train.yaml"]
    assert overrides == {
        "max_epochs": 5,
        "lr": 1e-3,
        "dataset_dir": "/data/my stacks",
        "sw_roi_size": [-1, 64, 64],
        "amp": False,
        "verbose": True,
        "offset": -2,
    }
    assert isinstance(overrides["max_epochs"], int)


def test_command_line_config_file_list():
    files, overrides = bundle_command_line([MAIN, "run", "--config_file=['a.yaml', 'b.json']", "--seed", "1"])
    assert files == ["a.yaml", "b.json"]
    assert overrides == {"seed": 1}
    assert bundle_command_line([MAIN, "run"]) == ([], {})


@pytest.mark.parametrize("argv0", ["-c", "/usr/bin/pytest", "train.py", "/x/monai/bundle/scripts.py"])
def test_command_line_none_outside_monai_bundle(argv0):
    assert bundle_command_line([argv0, "--max_epochs", "5"]) is None
    assert bundle_command_line([]) is None


def test_command_line_defaults_to_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", [MAIN, "run", "--seed", "7"])
    assert bundle_command_line() == ([], {"seed": 7})


# ----------------------------------------------------------------------------- override keys


@pytest.mark.parametrize(
    "key",
    ["max_epochs", "train#dataloader#batch_size", "train::dataloader::batch_size", "sw_roi_size#1",
     "train#handlers#0#_target_", "train"],
)  # fmt: skip
def test_check_overrides_accepts_existing_keys(key):
    check_overrides(CONFIG, {key: 1})


@pytest.mark.parametrize("key", ["sw_roi_size#3", "sw_roi_size#x", "train#dataloader#batchsize", "lr#0"])
def test_check_overrides_rejects_missing_nested_keys(key):
    with pytest.raises(InputError, match="unknown config key"):
        check_overrides(CONFIG, {key: 1})


def test_check_overrides_suggests_close_keys():
    with pytest.raises(InputError) as info:
        check_overrides(CONFIG, {"max_epochs": 2, "max_epoch": 5})
    message = str(info.value)
    assert "--max_epoch'" in message
    assert "Did you mean --max_epochs?" in message
    with pytest.raises(InputError) as info:
        check_overrides(CONFIG, {"zzzzzz": 5})
    assert "Did you mean" not in str(info.value)


# ----------------------------------------------------------------------------- prepare


def _config_files(tmp_path: Path) -> list[str]:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(CONFIG))
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"seed": 3, "_private": 1}))
    return [str(base), str(extra)]


def test_prepare_writes_executed_config_with_overrides(tmp_path, keep_excepthook):
    files = _config_files(tmp_path)
    out = tmp_path / "run"
    argv = [MAIN, "run", "training", "--config_file", str(files), "--max_epochs", "3",
            "--train#dataloader#batch_size=4", "--sw_roi_size#1", "64"]  # fmt: skip
    settings = prepare(out, argv)
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["max_epochs"] == 3
    assert written["train"]["dataloader"] == {"batch_size": 4, "shuffle": True}
    assert written["sw_roi_size"] == [-1, 64, 128]
    assert written["seed"] == 3  # second config file merged
    assert settings == {"max_epochs": 3, "lr": 0.0002, "dataset_dir": "/data", "seed": 3}
    assert sorted(p.name for p in out.iterdir()) == [".zsegan.lock", "config.yaml"]  # no temporary file left
    assert sys.excepthook is not sys.__excepthook__


def test_prepare_rejects_unknown_key_before_writing(tmp_path, keep_excepthook):
    files = _config_files(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(InputError, match="max_epochs"):
        prepare(out, [MAIN, "run", "--config_file", str(files), "--max_epoch", "3"])
    assert not (out / "config.yaml").exists()


def test_prepare_refuses_none_overrides_that_monai_would_drop(tmp_path, keep_excepthook):
    """MONAI's command line ignores --key None: the files' value would be trained with, and recorded as None."""
    files = _config_files(tmp_path)
    (tmp_path / "none.yaml").write_text("nothing: null\n")
    files.append(str(tmp_path / "none.yaml"))
    out = tmp_path / "run"
    with pytest.raises(InputError) as info:
        prepare(out, [MAIN, "run", "--config_file", str(files), "--max_epochs", "None"])
    message = str(info.value)
    assert "--max_epochs None" in message and "ignores None values" in message and "'max_epochs: null'" in message
    assert not (out / "config.yaml").exists()
    prepare(out, [MAIN, "run", "--config_file", str(files), "--nothing", "None"])  # None already: nothing dropped
    assert yaml.safe_load((out / "config.yaml").read_text())["nothing"] is None


BAD_VALUES = {
    "--sw_overlap 2": (["--sw_overlap", "2"], "--sw_overlap 2: must be a number in [0, 1)"),
    "--sw_overlap -0.5": (["--sw_overlap", "-0.5"], "--sw_overlap -0.5: must be a number in [0, 1)"),
    "--sw_overlap abc": (["--sw_overlap", "abc"], "--sw_overlap 'abc': must be a number in [0, 1)"),
    "--crop_size abc": (["--crop_size", "abc"], "--crop_size 'abc': must be a positive integer"),
    "--val_fraction 1.5": (["--val_fraction", "1.5"], "--val_fraction 1.5: must be a number in [0, 1)"),
    "--max_epochs -1": (["--max_epochs", "-1"], "--max_epochs -1: must be a positive integer"),
    "reversed percentiles": (
        ["--intensity_lower", "99.5", "--intensity_upper", "0.5"],
        "--intensity_lower 99.5 must be below --intensity_upper 0.5",
    ),
    "--sw_roi_size": (["--sw_roi_size", "[128, 128]"], "--sw_roi_size [128, 128]: must be a list [z, y, x]"),
    "--output_dir a file": (["--output_dir", __file__], "must be a folder, not a file"),
    "--sw_mode foo": (["--sw_mode", "foo"], "--sw_mode 'foo': must be one of constant, gaussian"),
    "--sharp_domain": (["--sharp_domain", "sharp"], "--sharp_domain 'sharp': must be one of infocus, stack, both"),
    "--amp_dtype": (["--amp_dtype", "fp8"], "--amp_dtype 'fp8': must be one of float16, bfloat16"),
    "--cycle_sigma": (["--cycle_sigma", "-1"], "--cycle_sigma -1: must be a number >= 0"),
    "--lambda_focal_detail": (["--lambda_focal_detail", "-1"], "--lambda_focal_detail -1: must be a number >= 0"),
    "--optical_domain": (
        ["--optical_domain", "phase"],
        "--optical_domain 'phase': must be one of absorbance, intensity",
    ),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_prepare_checks_values_before_writing(case, tmp_path, keep_excepthook):
    """One table of constraints, checked before the executed config is written: the record of an earlier run
    in output_dir stays."""
    args, problem = BAD_VALUES[case]
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("the earlier run's")
    argv = [MAIN, "run", "training", "--config_file", str(BUNDLE / "configs" / "train.yaml"), *args]
    output_dir = out if case != "--output_dir a file" else None
    with pytest.raises(InputError) as error:
        prepare(output_dir, argv)
    assert problem in str(error.value)
    assert (out / "config.yaml").read_text() == "the earlier run's"


INFERENCE_BAD_VALUES = {
    "--sw_overlap_px -3": (
        ["--sw_overlap_px", "-3"],
        "--sw_overlap_px -3: must be null, auto or an integer >= 0 (pixels)",
    ),
    "--sw_overlap_px 1.5": (["--sw_overlap_px", "1.5"], "--sw_overlap_px 1.5: must be null, auto or an integer >= 0"),
    "--sw_overlap_px 256": (
        ["--sw_tiling", "blend", "--sw_overlap_px", "256"],
        "--sw_overlap_px 256: must be below the window's 256 px",
    ),
    "beyond a smaller window": (
        ["--sw_tiling", "blend", "--sw_overlap_px", "40", "--sw_roi_size", "[-1, 64, 32]"],
        "--sw_overlap_px 40: must be below the window's 32 px",
    ),
    "--sw_tiling foo": (["--sw_tiling", "foo"], "--sw_tiling 'foo': must be one of blend, halo"),
    "halo: an overlap not twice a halo on the lattice": (
        ["--sw_tiling", "halo", "--sw_overlap_px", "20"],
        "--sw_overlap_px 20: with --sw_tiling halo it must be twice a halo that is a multiple of 4",
    ),
    "halo: a window not over twice the halo": (
        ["--sw_tiling", "halo", "--sw_overlap_px", "128", "--sw_roi_size", "[-1, 128, 128]"],
        "--sw_tiling halo: the halo (64 px) and the window's y, x [128, 128] (-1: all) must be multiples of 4, the "
        "window larger than twice the halo",
    ),
    "halo: windows over some planes": (
        ["--sw_tiling", "halo", "--sw_overlap_px", "16", "--sw_roi_size", "[8, 64, 64]"],
        "--sw_tiling halo runs windows over all planes: --sw_roi_size [8, 64, 64] must start with -1",
    ),
}


@pytest.mark.parametrize("case", list(INFERENCE_BAD_VALUES))
def test_an_overlap_in_pixels_is_checked_against_the_window_before_writing(case, tmp_path, keep_excepthook):
    args, problem = INFERENCE_BAD_VALUES[case]
    argv = [MAIN, "run", "inference", "--config_file", str(BUNDLE / "configs" / "inference.yaml"), *args]
    with pytest.raises(InputError) as error:
        prepare(tmp_path / "run", argv)
    assert problem in str(error.value)
    assert not (tmp_path / "run").exists()


PAIRED_BAD_VALUES = {
    "3D window on 2D images": (["--sw_roi_size", "[-1, 128, 128]"], "must be a list [y, x] (spatial_dims 2)"),
    "--spatial_dims 4": (["--spatial_dims", "4"], "--spatial_dims 4: must be one of 2, 3"),
    "--lambda_l1 -1": (["--lambda_l1", "-1"], "--lambda_l1 -1: must be a number >= 0"),
    "--max_shift_px -2": (["--max_shift_px", "-2"], "--max_shift_px -2: must be null or a number >= 0"),
    "--amp_dtype": (["--amp_dtype", "fp8"], "--amp_dtype 'fp8': must be one of float16, bfloat16"),
}


@pytest.mark.parametrize("case", list(PAIRED_BAD_VALUES))
def test_the_paired_workflow_is_checked_by_the_same_table(case, tmp_path, keep_excepthook):
    args, problem = PAIRED_BAD_VALUES[case]
    argv = [MAIN, "run", "training", "--config_file", str(BUNDLE / "configs" / "paired_train.yaml"), *args]
    with pytest.raises(InputError) as error:
        prepare(tmp_path / "run", argv)
    assert problem in str(error.value)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_2d_window_passes_on_2d_images(tmp_path, keep_excepthook):
    argv = [MAIN, "run", "training", "--config_file", str(BUNDLE / "configs" / "paired_train.yaml")]
    assert prepare(None, argv)["spatial_dims"] == 2  # its [y, x] window passes


def test_prepare_refuses_cuda_on_a_machine_without_it(tmp_path, keep_excepthook, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    argv = [MAIN, "run", "inference", "--config_file", str(BUNDLE / "configs" / "inference.yaml"), "--device", "cuda"]
    with pytest.raises(InputError, match="--device 'cuda': must be cpu, or cuda on a machine with a CUDA GPU"):
        prepare(None, argv)


def test_prepare_from_python_does_nothing(tmp_path, keep_excepthook):
    assert prepare(tmp_path / "run", ["-c"]) == {}
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- clear errors


def _run_python(code: str) -> subprocess.CompletedProcess:
    prelude = f"import sys\nsys.path.insert(0, {str(BUNDLE)!r})\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_excepthook_prints_one_line_for_wrapped_input_error():
    result = _run_python("""
        from scripts.errors import InputError, install_excepthook
        install_excepthook()
        try:
            raise InputError("/data/stack.tif", "has 3 planes; the network needs at least 16")
        except InputError as e:
            raise RuntimeError("parsing config item 'dataset'") from e
        """)
    assert result.returncode == 2
    assert result.stderr == "error: /data/stack.tif: has 3 planes; the network needs at least 16\n"


def test_excepthook_keeps_tracebacks_for_bugs():
    result = _run_python("""
        from scripts.errors import install_excepthook
        install_excepthook()
        raise KeyError("a bug")
        """)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError: 'a bug'" in result.stderr
    assert "error:" not in result.stderr.splitlines()[0]


def test_input_error_survives_pickling_as_from_a_worker_process():
    import pickle

    from scripts.errors import InputError

    error = pickle.loads(pickle.dumps(InputError("a/b.tif", "is not a TIFF")))
    assert isinstance(error, InputError) and (error.path, error.problem) == ("a/b.tif", "is not a TIFF")
    assert str(error) == "a/b.tif: is not a TIFF"
    assert str(pickle.loads(pickle.dumps(InputError(None, "no stacks")))) == "no stacks"
