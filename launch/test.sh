#!/usr/bin/env bash
# test.sh: installs what is missing, builds, and runs the whole CPU test suite with ctest.
# Extra arguments go to ctest (e.g. ./launch/test.sh -L gradcheck).
set -euo pipefail
cd "$(dirname "$0")/.."
./launch/deps.sh
./launch/build.sh
cd build
ctest --output-on-failure --timeout 900 -j"$(nproc)" "$@"
