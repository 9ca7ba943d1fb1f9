#!/usr/bin/env bash
# run.sh: the one command for a new user: installs what is missing, builds, and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
./launch/deps.sh
./launch/build.sh
./build/drtune --help
./build/drtune smoke
