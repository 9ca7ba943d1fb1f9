#!/usr/bin/env bash
# bundle.sh: the programs of the GPU check (tools/gpu/check.sh) built on a machine with nvcc but no GPU, so the GPU
# machine (no MPI, HDF5, -dev packages or network) only runs them: drtune and the cuda_* test programs for sm_90a,
# single process (DRTUNE_DIST=OFF), without -march=native (the GPU machine's CPU differs), stripped, with the shared
# libraries they need that the GPU machine lacks, and an ldd check that every library is either carried or one the
# GPU machine provides:
#   provided there: the C library family, libstdc++ and libgcc_s (its host compiler for nvcc), the driver (libcuda,
#   libnvidia-*), and cuBLAS/cuBLASLt, cuDNN 9 and NCCL (the CUDA toolkit and PyTorch's nvidia-* packages; together
#   well over a gigabyte, far more than can be carried); check.sh finds their folders there.
#   carried: everything else ldd resolves (OpenBLAS and its Fortran runtime, OpenMP, cJSON, inih, libpng, zlib, the
#   CUDA runtime the programs were compiled against).
#
# usage: tools/gpu/bundle.sh                  build in build-bundle/, collect into .gpu-bundle/ and pack that into
#                                             .gpu-bundle.tar.xz (both git-ignored)
#        tools/gpu/bundle.sh collect BUILD OUT copy BUILD/drtune and BUILD/tests/cuda_* into OUT/bin and their
#                                             libraries into OUT/lib, strip them, then check OUT
#        tools/gpu/bundle.sh check OUT         the ldd check alone: one line per library (carried / provided /
#                                             MISSING), exit 1 when a library is missing or not found
# The bundle travels to the GPU machine as .gpu-bundle.tar.xz (about 35 MB; the folder about 220 MB), which
# check.sh unpacks.
set -euo pipefail

# Libraries the GPU machine provides (soname patterns).
provided_re='^(linux-vdso|ld-linux-x86-64|ld-linux-aarch64|libc|libm|libdl|libpthread|librt|libresolv|libutil|'
provided_re+='libstdc\+\+|libgcc_s|libcuda|libnvidia-[a-z0-9_-]+|libcublas|libcublasLt|libcudnn[a-z_]*|libnccl)\.so'

# check OUT: ldd of every program in OUT/bin with OUT/lib first on the library path (then LD_LIBRARY_PATH: on the
# GPU machine, the folders of its CUDA libraries); writes OUT/ldd-check.txt
check() {
  local out=$1 lib prog line name path
  if [ ! -d "$out/bin" ] || [ ! -d "$out/lib" ]; then
    echo "bundle.sh: $out/bin or $out/lib does not exist" >&2
    return 1
  fi
  lib=$(cd "$out/lib" && pwd)
  for prog in "$out"/bin/*; do
    while IFS= read -r line; do
      line=${line#"${line%%[![:space:]]*}"}
      name=${line%% *}
      case $line in
        *"=> not found"*) echo "MISSING  $name: not found (for $(basename "$prog"))"; continue ;;
        *" => "*) path=${line#* => }; path=${path%% (*} ;;
        *) path=${line%% (*} ;;
      esac
      if [ "$(dirname "$path")" = "$lib" ]; then
        echo "carried  $name"
      elif [[ $(basename "$name") =~ $provided_re ]]; then
        echo "provided $name ($path here)"
      else
        echo "MISSING  $name: resolves to $path here, which the GPU machine lacks (for $(basename "$prog"))"
      fi
    done < <(LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$prog")
  done | sort -u >"$out/ldd-check.txt"
  cat "$out/ldd-check.txt"
  if grep -q '^MISSING' "$out/ldd-check.txt"; then
    echo "bundle.sh: $(grep -c '^MISSING' "$out/ldd-check.txt") libraries missing" >&2
    return 1
  fi
  echo "bundle.sh: ldd check passed: $(find "$out/bin" -type f | wc -l) programs," \
    "$(grep -c '^carried' "$out/ldd-check.txt") carried libraries"
}

# collect BUILD OUT: programs into OUT/bin, the libraries not provided there into OUT/lib
collect() {
  local build=$1 out=$2 prog path
  [ -x "$build/drtune" ] || { echo "bundle.sh: $build/drtune is not built" >&2; return 1; }
  rm -rf "$out"
  mkdir -p "$out/bin" "$out/lib"
  cp "$build/drtune" "$out/bin/"
  for prog in "$build"/tests/cuda_*; do [ -x "$prog" ] && cp "$prog" "$out/bin/"; done
  for prog in "$out"/bin/*; do
    ldd "$prog" | awk '/=> \// {print $1, $3}' | while read -r name path; do
      [[ $name =~ $provided_re ]] || [ -e "$out/lib/$name" ] || cp -L "$path" "$out/lib/$name"
    done
  done
  chmod u+w "$out"/bin/* "$out"/lib/*
  strip --strip-unneeded "$out"/bin/* "$out"/lib/* 2>/dev/null || true
  git -C "$(dirname "$0")" rev-parse HEAD >"$out/commit" 2>/dev/null || true
  check "$out"
  du -sh "$out" "$out/bin" "$out/lib"
}

root=$(cd "$(dirname "$0")/../.." && pwd)
case ${1:-build} in
  check) check "${2:?usage: bundle.sh check OUT}" ;;
  collect) collect "${2:?usage: bundle.sh collect BUILD OUT}" "${3:?usage: bundle.sh collect BUILD OUT}" ;;
  build)
    cd "$root"
    command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "bundle.sh: nvcc not found" >&2; exit 1; }
    cmake -S . -B build-bundle -DCMAKE_BUILD_TYPE=Release -DDRTUNE_DIST=OFF -DDRTUNE_NATIVE=OFF -DDRTUNE_WERROR=ON \
      >/dev/null
    targets=$(find tests -maxdepth 1 -name 'cudaemu_*.c' | sed 's|^tests/cudaemu_|cuda_|; s/\.c$//')
    # shellcheck disable=SC2086 # one word per target
    cmake --build build-bundle -j"$(nproc)" --target drtune $targets -- --no-print-directory |
      grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built)' || true
    collect build-bundle .gpu-bundle
    # one xz archive for the carry: the programs share most of their code, which a 64 MiB dictionary finds
    XZ_OPT='-6 -T2' tar -cJf .gpu-bundle.tar.xz .gpu-bundle
    ls -la .gpu-bundle.tar.xz
    ;;
  *) echo "usage: tools/gpu/bundle.sh [check OUT | collect BUILD OUT]" >&2; exit 2 ;;
esac
