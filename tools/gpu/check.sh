#!/usr/bin/env bash
# check.sh: the GPU check, run on a machine with an NVIDIA GPU from the repository root: unpacks the carried Debian
# packages (tools/gpu/fetch_debs.sh) into .deps/root when the system lacks them, builds drtune with CUDA, runs the
# CUDA parity tests and the CPU test suite's fast labels, and prints a summary table. Results go to $OUT if set.
set -uo pipefail
out=${OUT:-/tmp/drtune-gpu}
mkdir -p "$out"
root=$PWD/.deps/root
if [ -d .deps/debs ]; then
  mkdir -p "$root"
  for f in .deps/debs/*.deb; do dpkg -x "$f" "$root"; done
fi
arch=$(uname -m)-linux-gnu
export PKG_CONFIG_PATH=$root/usr/lib/$arch/pkgconfig:$root/usr/lib/$arch/openblas-openmp/pkgconfig:$root/usr/share/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$root
export LD_LIBRARY_PATH=$root/usr/lib/$arch:$root/usr/lib/$arch/openblas-openmp:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
nvcc --version | tail -1
t0=$(date +%s)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DDRTUNE_DIST=OFF -DDRTUNE_SYSROOT="$root" \
  -DCMAKE_PREFIX_PATH="$root/usr" -DCMAKE_LIBRARY_PATH="$root/usr/lib/$arch" \
  -DCMAKE_INCLUDE_PATH="$root/usr/include" -DCMAKE_CUDA_ARCHITECTURES=90 >"$out/cmake.log" 2>&1 \
  || { tail -30 "$out/cmake.log"; exit 1; }
cmake --build build-gpu -j16 >"$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
cd build-gpu
ctest -L cuda --output-on-failure 2>&1 | tee "$out/cuda.log"
./drtune bench cuda 2>&1 | tee "$out/bench_cuda.log"
ctest -L 'core|gradcheck' -j8 2>&1 | tail -4 | tee "$out/cpu.log"
