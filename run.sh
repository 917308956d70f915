#!/usr/bin/env bash
# Quick start on a fresh machine with Python 3.10+ and pip:
#   bash run.sh train   # set up, then a short first training run on the embedded (simulated) data
#   bash run.sh test    # set up, then the test suite
# Any further arguments go to the command, e.g. `bash run.sh train --max_epochs 200` or `bash run.sh test -k io`.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${ZSEGAN_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"

if ! "$PY" -c "import torch" 2>/dev/null; then
  # Where a local torch wheel is offered (CPU-only build machines, CI), take it: it keeps the install lean.
  # Elsewhere pip chooses the normal torch build for this machine's hardware.
  links="${PIP_FIND_LINKS:-$("$PY" -m pip config get global.find-links 2>/dev/null || true)}"
  wheel=""
  for d in $links; do
    wheel=$(ls "${d#file://}"/torch-*.whl 2>/dev/null | sort | tail -n 1 || true)
    [ -n "$wheel" ] && break
  done
  if [ -n "$wheel" ]; then "$PY" -m pip install -q "$wheel"; fi
fi
"$PY" -m pip install -q -e ".[dev]"

job="${1:-}"
shift || true
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
    echo "usage: bash run.sh train|test [extra arguments]" >&2; exit 2 ;;
esac
