#!/usr/bin/env bash
# build.sh: configures (once) and builds drtune into build/ (incremental: fast when nothing changed).
# CUDA is used automatically where nvcc exists; DRTUNE_BUILD_DIR and extra cmake arguments may be given.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${DRTUNE_BUILD_DIR:-build}
if [ ! -f "$dir/CMakeCache.txt" ]; then
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DDRTUNE_WERROR=ON "$@" >/dev/null
fi
cmake --build "$dir" -j"$(nproc)" -- --no-print-directory | grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built)' || true
test -x "$dir/drtune" || { echo "drtune: error: build failed" >&2; exit 1; }
