"""The command-line layer of ``python -m monai.bundle run …``: key checks, executed config, clear errors.

MONAI's bundle CLI accepts any ``--key value`` and silently adds unknown keys to the config, so a
typo (``--max_epoch 5``) would train with the default. ``prepare`` rejects such keys, writes the
executed config (files + overrides) beside the run, and makes bad input exit with one clear line.
"""

from __future__ import annotations

import ast
import difflib
import sys
from pathlib import Path

import yaml
from monai.bundle import ConfigParser

from scripts.data.atomic import write_text_atomic
from scripts.errors import InputError, install_excepthook

# arguments of monai.bundle's ``run`` itself, not config keys
RUN_ARGUMENTS = {
    "run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking",
    "args_file", "workflow_type", "properties_path",
}  # fmt: skip


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
    """Start of every workflow: clear errors for bad input, reject unknown keys, save the executed config.

    The executed config (files + command-line overrides) goes to ``<output_dir>/config.yaml`` when
    ``output_dir`` is given. Returns its top-level scalar settings (for MLflow params).
    """
    install_excepthook()
    command = bundle_command_line(argv)
    if command is None:  # called from Python: nothing to check
        return {}
    files, overrides = command
    parser = ConfigParser()
    parser.read_config(files)
    check_overrides(parser.get(), overrides)
    check_tracking_option(parser.get(), command_line_arguments(argv).get("tracking"))
    parser.update(overrides)
    config = parser.get()
    if output_dir is not None:
        write_text_atomic(Path(output_dir) / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool)) and not k.startswith("_")}
