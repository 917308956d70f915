#!/usr/bin/env bash
# Quick start on a fresh machine with Python 3.10+ and pip:
#   bash run.sh train   # set up, then a short first training run on the embedded (simulated) data
#   bash run.sh test    # set up, then the test suite
#   bash run.sh floors  # the dependency floors, tested: the lowest versions pyproject.toml allows, in a fresh
#                       # environment (ZSEGAN_FLOORS_VENV, default /tmp/zsegan-floors), then the test suite
#                       # (`bash run.sh floors -m "not slow"`: the quick lane)
#   bash run.sh floors lock   # remake tools/floors.txt from pyproject.toml (needs uv and PyPI)
# Any further arguments go to the command, e.g. `bash run.sh train --max_epochs 200` or `bash run.sh test -k io`.
set -euo pipefail
cd "$(dirname "$0")"
FLOORS_PYTHON=python3.11  # tools/floors.txt is resolved for this Python

# The newest torch wheel in the local folders pip is pointed to (CPU-only build machines, CI), or nothing.
local_torch_wheel() {
  local links d wheel
  links="${PIP_FIND_LINKS:-$("$1" -m pip config get global.find-links 2>/dev/null || true)}"
  for d in $links; do
    wheel=$(ls "${d#file://}"/torch-*.whl 2>/dev/null | sort | tail -n 1 || true)
    if [ -n "$wheel" ]; then echo "$wheel"; return; fi
  done
}

job="${1:-}"
shift || true
if [ "$job" = floors ]; then
  command -v "$FLOORS_PYTHON" >/dev/null || { echo "error: $FLOORS_PYTHON not found: tools/floors.txt is resolved for it" >&2; exit 2; }
  wheel=$(local_torch_wheel "$FLOORS_PYTHON")
  # where a local torch build is offered, the floors are resolved and tested with it (pulling torch's floor
  # from PyPI would bring a CUDA build); tools/floors.py reports torch as not tested at its floor then
  torch="torch$(grep -o '"torch>=[^"]*"' pyproject.toml | tr -d '"' | sed 's/^torch//; s/>=/==/')"
  [ -n "$wheel" ] && torch="torch==$(basename "$wheel" | cut -d- -f2)"
  if [ "${1:-}" = lock ]; then
    command -v uv >/dev/null || { echo "error: uv not found: pip install uv" >&2; exit 2; }
    echo "$torch" > "${TMPDIR:-/tmp}/zsegan-floors-torch.txt"
    uv pip compile -q pyproject.toml --all-extras --resolution lowest-direct --python-version "${FLOORS_PYTHON#python}" \
      ${wheel:+--find-links "$(dirname "$wheel")"} -c "${TMPDIR:-/tmp}/zsegan-floors-torch.txt" --no-emit-package torch \
      --custom-compile-command "bash run.sh floors lock" -o tools/floors.txt
    sed -i "3i #    (for $FLOORS_PYTHON, resolved with $torch, which run.sh floors installs beside)" tools/floors.txt
    exit
  fi
  VENV="${ZSEGAN_FLOORS_VENV:-/tmp/zsegan-floors}"
  rm -rf "$VENV" && "$FLOORS_PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --no-deps -r tools/floors.txt  # every package pinned: nothing resolved here
  "$VENV/bin/python" -m pip install -q "${wheel:-$torch}"
  "$VENV/bin/python" tools/floors.py
  # the code style at the linters' floors (the commands of README's Development section)
  "$VENV/bin/isort" --check -q bundle tests tools zsegan_napari && "$VENV/bin/black" --check -q bundle tests tools zsegan_napari
  "$VENV/bin/flake8" bundle tests tools zsegan_napari && "$VENV/bin/ruff" check -q --no-cache bundle tests tools zsegan_napari
  # the whole suite: the quick lane alone passed at floors that broke the MLflow registry, the ONNX export and
  # the configs; metadata.json's versions are the newest verified, which the floors are not
  exec "$VENV/bin/python" -m pytest -p no:cacheprovider \
    --deselect tests/test_zoo.py::test_metadata_claims_only_packages_and_versions_that_are_true "$@"
fi

VENV="${ZSEGAN_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" 2>/dev/null; then
  # Where a local torch wheel is offered (CPU-only build machines, CI), take it: it keeps the install lean.
  # Elsewhere pip chooses the normal torch build for this machine's hardware.
  wheel=$(local_torch_wheel "$PY")
  if [ -n "$wheel" ]; then "$PY" -m pip install -q "$wheel"; fi
fi
"$PY" -m pip install -q -e ".[dev]"

case "$job" in
  train)
    # A short first run (a few minutes on 2 CPU cores) that still writes every artifact: checkpoints,
    # validation views, MLflow store, G_S weights (in bundle/runs/train/, leaving the shipped
    # bundle/models/model.pt alone). The full recipe is in README.md.
    exec "$PY" -m monai.bundle run training --config_file bundle/configs/train.yaml \
      --max_epochs 4 --epoch_length 15 --val_interval 2 --checkpoint_interval 30 \
      --model_path bundle/runs/train/model.pt "$@" ;;
  test)
    exec "$PY" -m pytest "$@" ;;
  *)
    echo "usage: bash run.sh train|test|floors [extra arguments]" >&2; exit 2 ;;
esac
