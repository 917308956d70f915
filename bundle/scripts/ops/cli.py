"""The command-line layer of ``python -m monai.bundle run …``: key checks, value checks, executed config,
clear errors.

MONAI's bundle CLI accepts any ``--key value`` and silently adds unknown keys to the config, so a
typo (``--max_epoch 5``) would train with the default. ``prepare`` rejects such keys and values out of
``CONSTRAINTS`` (one table for every workflow), then writes the executed config (files + overrides) beside
the run, and makes bad input exit with one clear line.
"""

from __future__ import annotations

import ast
import difflib
import math
import sys
from pathlib import Path

import torch
import yaml
from monai.bundle import ConfigParser
from scripts.data.atomic import hold_lock, write_text_atomic
from scripts.data.pairs import valid_input_planes
from scripts.data.transforms import NUISANCE_RANGES, nuisance_must_be, nuisance_ok
from scripts.errors import InputError, install_excepthook
from scripts.inference.sliding_window import PRECISIONS, TILINGS, HaloInferer, halo_width, window_overlap
from scripts.ops.pack import check_complete
from scripts.simulate.defects import TASKS
from scripts.zsegan.trainer import AMP_DTYPES, SHARP_DOMAINS

# arguments of monai.bundle's ``run`` itself, not config keys
RUN_ARGUMENTS = {
    "run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking",
    "args_file", "workflow_type", "properties_path",
}  # fmt: skip


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _device_here(v) -> bool:
    try:
        device = torch.device(v)
    except (RuntimeError, TypeError):
        return False
    return device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_available())


# What each config key must hold, checked on its value (after overrides, expressions evaluated) before a
# workflow writes anything; a key a workflow does not have is skipped.
CONSTRAINTS: list[tuple[tuple[str, ...], str, object]] = [
    (
        ("max_epochs", "crop_size", "batch_size", "n_horizontal", "n_vertical", "checkpoint_interval",
         "val_interval", "log_interval", "min_planes", "sw_batch_size", "tile_size", "rl_num_iter",
         "histogram_bins", "d_channels", "d_layers"),
        "a positive integer", lambda v: _integer(v) and v > 0,
    ),
    (("epoch_length",), "null or a positive integer", lambda v: v is None or (_integer(v) and v > 0)),
    (("n_real", "n_synthetic"), "null or an integer >= 0", lambda v: v is None or (_integer(v) and v >= 0)),
    (
        ("num_workers", "seed", "pool_size", "n_views", "u_res_units"),
        "an integer >= 0", lambda v: _integer(v) and v >= 0,
    ),
    (("sw_overlap", "val_fraction", "test_fraction"), "a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    (
        ("sw_overlap_px",),
        "null, auto or an integer >= 0 (pixels)", lambda v: v in (None, "auto") or (_integer(v) and v >= 0),
    ),
    (("intensity_lower", "intensity_upper"), "a percentile in [0, 100]", lambda v: _number(v) and 0 <= v <= 100),
    (("lr", "detail_sigma", "plane_step_um"), "a positive number", lambda v: _number(v) and v > 0),
    (("input_planes",), "1 or an odd number of planes (the target's in the middle)", valid_input_planes),
    (
        ("p", "lambda_cycle", "lambda_identity", "lambda_lowpass", "lowpass_sigma", "coarse_sigma",
         "lambda_spectrum", "lambda_correction_tv", "cycle_sigma", "lambda_adversarial_b", "lambda_adversarial",
         "lambda_l1", "lambda_ssim", "lambda_content", "lambda_focal_detail"),
        "a number >= 0", lambda v: _number(v) and v >= 0,
    ),
    (("max_shift_px",), "null or a number >= 0", lambda v: v is None or (_number(v) and v >= 0)),
    (
        ("init_gain",),
        "a number > 0 (PyTorch's default initialisation: init_gain: null in a config file given after this one)",
        lambda v: v is None or (_number(v) and v > 0),
    ),
    (
        ("sw_roi_size",), "a list [z, y, x] ([y, x] with spatial_dims 2) of positive integers, -1 for the full size",
        lambda v: isinstance(v, (list, tuple)) and len(v) in (2, 3)
        and all(_integer(n) and (n > 0 or n == -1) for n in v),
    ),
    (("output_dir",), "a folder, not a file", lambda v: isinstance(v, str) and not Path(v).is_file()),
    (("device",), "cpu, or cuda on a machine with a CUDA GPU", _device_here),
    (
        ("augment_input", "u_residual", "u_top_conv_only", "g_long_skip", "real_only", "compile"),
        "True or False", lambda v: isinstance(v, bool),
    ),
    (
        ("system_normalisation",),
        "True or False (or, for inference, null: as G was trained)", lambda v: v is None or isinstance(v, bool),
    ),
] + [
    ((f"aug_{name}",), nuisance_must_be(name), lambda v, name=name: nuisance_ok(name, v)) for name in NUISANCE_RANGES
] + [
    ((key,), "one of " + ", ".join(map(str, choices)), lambda v, choices=choices: v in choices)
    for key, choices in {
        "sw_mode": ("constant", "gaussian"),
        "sw_tiling": TILINGS,
        "precision": PRECISIONS,
        "focus_weights": ("dynamic", "reference"),
        "adversarial_loss": ("lsgan", "bce"),
        "g_b_kind": ("optical", "generator"),
        "optical_domain": ("absorbance", "intensity"),
        "sharp_domain": SHARP_DOMAINS,
        "amp_dtype": tuple(AMP_DTYPES),
        "tracking_fallback": ("fail", "local"),
        "output_format": ("ome-zarr", "ome-tiff"),
        "subset": ("held_out", "all"),
        "spatial_dims": (2, 3),
        "task": TASKS,
        "restorer": ("cgan", "l1"),
    }.items()
]  # fmt: skip


def check_values(parser: ConfigParser) -> None:
    """InputError naming the key, its value and what it must be, for the first value out of ``CONSTRAINTS``."""
    config = parser.get()
    values = {}
    for keys, must_be, ok in CONSTRAINTS:
        for key in keys:
            if key in config:
                values[key] = parser.get_parsed_content(key)
                if not ok(values[key]):  # type: ignore[operator]
                    raise InputError(None, f"--{key} {values[key]!r}: must be {must_be}")
    roi, dims = values.get("sw_roi_size"), values.get("spatial_dims", 3)
    if values.get("input_planes", 1) > 1 and dims != 2:
        raise InputError(None, f"--input_planes {values['input_planes']}: needs spatial_dims 2 (planes as channels)")
    if roi is not None and len(roi) != dims:
        axes = "[z, y, x]" if dims == 3 else "[y, x]"
        raise InputError(None, f"--sw_roi_size {roi!r}: must be a list {axes} (spatial_dims {dims})")
    if roi is not None and values.get("sw_tiling") == "halo":  # the halo on G_S's lattice, the window over two
        multiple = 2 ** parser.get_parsed_content("g_downsamplings") if "g_downsamplings" in config else 4
        halo = halo_width(values.get("sw_overlap_px"), None, multiple)  # None: G_S's reach, checked once built
        HaloInferer(roi, halo or 0, multiple)
    elif roi is not None and values.get("sw_overlap_px") is not None:
        window_overlap(roi, values.get("sw_overlap", 0.25), values["sw_overlap_px"])  # below the window's size
    if values.get("intensity_lower", 0) >= values.get("intensity_upper", 100):
        raise InputError(
            None, f"--intensity_lower {values['intensity_lower']!r} must be below --intensity_upper "
            f"{values['intensity_upper']!r}: they are the percentiles mapped to -1 and 1",
        )  # fmt: skip


def command_line_arguments(argv: list[str] | None = None) -> dict | None:
    """Every ``--key value`` (a Python literal where it parses as one) of ``python -m monai.bundle run …``,
    or None when this process is something else."""
    argv = sys.argv if argv is None else argv
    if not argv or not Path(argv[0]).as_posix().endswith("monai/bundle/__main__.py"):
        return None
    args: dict[str, object] = {}
    tokens = argv[1:]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):
            key, has_value, value = token[2:].partition("=")
            if not has_value:
                if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                    value, i = tokens[i + 1], i + 1
                else:
                    value = "True"
            try:
                args[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                args[key] = value
        i += 1
    return args


def bundle_command_line(argv: list[str] | None = None) -> tuple[list[str], dict] | None:
    """``(config files, overrides)`` when this process is ``python -m monai.bundle run …``, else None."""
    args = command_line_arguments(argv)
    if args is None:
        return None
    files = args.pop("config_file", [])
    files = [files] if isinstance(files, str) else list(files)
    return [str(f) for f in files], {k: v for k, v in args.items() if k not in RUN_ARGUMENTS}


def _has_key(config, key: str) -> bool:
    node = config
    for part in key.replace("::", "#").split("#"):  # MONAI's separator is "::", "#" the older one
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def check_overrides(config: dict, overrides: dict) -> None:
    """Raise InputError for an override that names no key of the config files."""
    for key in overrides:
        if not _has_key(config, key):
            close = difflib.get_close_matches(key, [k for k in config if isinstance(k, str)], n=3)
            hint = f" Did you mean {', '.join('--' + c for c in close)}?" if close else ""
            raise InputError(None, f"unknown config key '--{key}': no such key in the config files.{hint}")


def check_none_overrides(parser: ConfigParser, overrides: dict) -> None:
    """Raise InputError for ``--key None`` where the config files set ``key`` to something else: MONAI's command
    line drops overrides whose value is None (``update_kwargs(ignore_none=True)``), so the files' value would be
    used in silence."""
    for key, value in overrides.items():
        if value is None and parser[key] is not None:
            raise InputError(
                None, f"--{key} None: MONAI's command line ignores None values, so the config's {parser[key]!r} "
                f"would be used. Put '{key.replace('#', '::')}: null' in a YAML file of your own and add it to "
                "--config_file, e.g. --config_file \"['<the config>.yaml', 'mine.yaml']\"",
            )  # fmt: skip


def check_tracking_option(config: dict, tracking) -> None:
    """Refuse ``--tracking mlflow`` for training: MONAI's default MLflow handler logs a single output
    ``loss`` and would fail at the first iteration on the GAN's dict of losses."""
    if tracking == "mlflow" and _has_key(config, "train#trainer"):
        raise InputError(
            None,
            "--tracking mlflow: MONAI's default MLflow handler logs a single 'loss' and ZSE-GAN's trainer outputs "
            "a dict of losses. Training tracks to MLflow by itself (--tracking_uri, --experiment_name): leave "
            "--tracking out, or pass --tracking configs/mlflow_tracking.yaml (the same tracking)",
        )


def prepare(output_dir: str | Path | None = None, argv: list[str] | None = None) -> dict:
    """Start of every workflow: clear errors for bad input, reject unknown keys and values out of
    ``CONSTRAINTS``, save the executed config.

    The executed config (files + command-line overrides) goes to ``<output_dir>/config.yaml`` when
    ``output_dir`` is given, locked for this process first (``scripts.data.atomic.hold_lock``). Returns its
    top-level scalar settings (for MLflow params).
    """
    install_excepthook()
    check_complete()  # a bundle unpacked part way stops here, with what to do
    command = bundle_command_line(argv)
    if command is None:  # called from Python: nothing to check
        return {}
    files, overrides = command
    parser = ConfigParser()
    parser.read_config(files)
    check_overrides(parser.get(), overrides)
    check_none_overrides(parser, overrides)
    check_tracking_option(parser.get(), command_line_arguments(argv).get("tracking"))
    parser.update(overrides)
    check_values(parser)  # before anything is written: the record of an earlier run in output_dir stays
    config = parser.get()
    if output_dir is not None:
        hold_lock(output_dir)  # one run at a time in an output folder
        write_text_atomic(Path(output_dir) / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool)) and not k.startswith("_")}
