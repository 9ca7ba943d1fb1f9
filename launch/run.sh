#!/usr/bin/env bash
# run.sh: the one command for a new user: installs what is missing, builds, and runs the main job (configs/default.ini:
# DRTune on drtune's small model with the symmetry reward; outputs in runs/default). Extra arguments are config
# overrides, e.g. ./launch/run.sh --output.dir=/tmp/x
set -euo pipefail
cd "$(dirname "$0")/.."
./launch/deps.sh
./launch/build.sh
test -f data/models/tiny/model_index.json || {
  echo "drtune: error: data/models/tiny is missing (retrain it: build/drtune pretrain --config configs/pretrain.ini)" >&2
  exit 2
}
# OpenMP threads that sleep instead of spinning keep a busy laptop responsive
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
./build/drtune train --config configs/default.ini "$@"
