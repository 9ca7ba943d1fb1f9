#!/usr/bin/env bash
# check.sh: the GPU check, one prepared run on a machine with an NVIDIA GPU, from the repository root (under 9
# minutes). It unpacks the carried Debian packages (tools/gpu/fetch_debs.sh) into .deps/root when the system lacks
# them, builds drtune with CUDA for sm_90a (single process: no MPI or HDF5 there), and runs, each step under its own
# timeout with its own log in $OUT (default /tmp/drtune-gpu):
#   env          GPU, driver, nvcc, library versions (drtune info --device)
#   cuda         ctest -L cuda: every kernel and library wrapper against the CPU ops, fp32 and bf16, the whole UNet
#                (cuda_unet), and the default job trained on the GPU against the CPU (cuda_train_job)
#   memcheck     compute-sanitizer memcheck on the op parity tests, racecheck on the shared-memory kernels
#   sdxl         drtune bench unet: the SDXL UNet (configs/models/sdxl, random weights) forward and forward +
#                backward at a 128 x 128 latent, batch 1, in fp32 and in bf16
#   bench        drtune bench cuda (linear and elementwise, GPU vs CPU)
#   summary.md   one line per step: passed / failed / timed out, seconds
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
summary=$out/summary.md
printf '| step | result | seconds |\n|---|---|---|\n' >"$summary"

# step NAME LIMIT_S COMMAND...: runs COMMAND with its output in $out/NAME.log and a line in the summary
step() {
  local name=$1 limit=$2 t0 rc result
  shift 2
  t0=$(date +%s)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  case $rc in 0) result=passed ;; 124) result="timed out ($limit s)" ;; *) result="failed ($rc)" ;; esac
  printf '| %s | %s | %d |\n' "$name" "$result" $(( $(date +%s) - t0 )) >>"$summary"
  tail -3 "$out/$name.log"
  return $rc
}

step env 60 sh -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1'
step build 240 sh -c "cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DDRTUNE_DIST=OFF -DDRTUNE_SYSROOT='$root' \
  -DCMAKE_PREFIX_PATH='$root/usr' -DCMAKE_LIBRARY_PATH='$root/usr/lib/$arch' -DCMAKE_INCLUDE_PATH='$root/usr/include' \
  && cmake --build build-gpu -j16" || { cat "$summary"; exit 1; }
step info 30 ./build-gpu/drtune info --device
step cuda 240 sh -c 'cd build-gpu && ctest -L cuda --output-on-failure'
if command -v compute-sanitizer >/dev/null; then
  step memcheck 90 sh -c 'for t in cuda_parity cuda_layout cuda_norm cuda_attention; do
    compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/tests/$t >/dev/null || exit 1; done'
  step racecheck 60 sh -c 'for t in cuda_norm cuda_emulator; do
    compute-sanitizer --tool racecheck --error-exitcode 1 build-gpu/tests/$t >/dev/null || exit 1; done'
fi
step sdxl 150 sh -c 'for p in fp32 bf16; do
  ./build-gpu/drtune bench unet --model configs/models/sdxl --latent 128 --device cuda --precision $p --reps 3 || exit 1; done'
step bench 60 ./build-gpu/drtune bench cuda
cat "$summary"
