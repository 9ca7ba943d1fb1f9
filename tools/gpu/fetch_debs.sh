#!/usr/bin/env bash
# fetch_debs.sh: downloads the Debian packages a GPU machine without our -dev packages needs to build drtune
# (single-process build, DRTUNE_DIST=OFF) into .deps/debs, to be carried there and unpacked by tools/gpu/check.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .deps/debs
cd .deps/debs
apt-get download libopenblas0-openmp libopenblas-openmp-dev libcjson1 libcjson-dev libinih1 libinih-dev \
  libpng16-16 libpng-dev zlib1g-dev 2>/dev/null
ls -la
