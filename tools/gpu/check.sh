#!/usr/bin/env bash
# check.sh: the GPU check, one prepared run on a machine with an NVIDIA GPU, from the repository root, in under 9
# minutes (CHECK_BUDGET_S, default 530 s, bounds the whole run: each step's timeout is cut to what is left).
# Programs: the bundle built on a machine with nvcc (tools/gpu/bundle.sh: .gpu-bundle.tar.xz or .gpu-bundle/),
# checked with ldd here against the CUDA libraries this machine provides; only when it does not run, a build here
# from the carried Debian packages (tools/gpu/fetch_debs.sh, .deps/debs) as before. Python: this machine's PyTorch,
# with diffusers from carried wheels (.whl/*.whl) when it lacks it. Steps, each under its own timeout, each with its
# own log in $OUT (default /tmp/drtune-gpu):
#   setup      the bundle's ldd check and a first run (or the build)
#   env        GPU, driver, nvcc, cuBLAS/cuDNN/NCCL found, PyTorch, diffusers, drtune info --device
#   cuda       the op parity tests (cuda_*: every kernel and library wrapper against the CPU ops, fp32 and bf16)
#   bench      drtune bench gpu: per-op and whole-UNet times, TFLOP/s and MFU, SD 1.5 at 64x64 and SDXL at 128x128,
#              and a DRTune iteration of each (4 steps) with K = 1 and K = N: seconds and peak memory
#   torch      the same UNets in PyTorch + diffusers (bf16, SDPA) on the same card (tools/gpu/torch_unet.py)
#   model      the model parity tests: the whole UNet, training iterations and jobs on the GPU against the CPU
#   sanitizer  compute-sanitizer memcheck on op parity tests, racecheck on the shared-memory kernels
#   summary.md one line per step (passed / failed / timed out / skipped, seconds) and the drtune / PyTorch table
# shellcheck disable=SC2016 # the sh -c scripts expand their own variables
set -uo pipefail

# awk functions the summary's tables share (none named as a gawk built-in: gawk refuses to redefine `or`): the
# key=value fields of a `result` line, a ratio (or "-"), "-" for a missing value, trimming, a model folder's last
# name, and the op rows of bench gpu in its printf layout (oprow sets op and shape from a forward
# row, which a backward row keeps, and pass and ms from either; 0 for any other line)
summary_awk='
function kv(line, arr,   n, i, f, p) { n = split(line, f, " "); for (i = 2; i <= n; i++) { p = index(f[i], "=")
  if (p) arr[substr(f[i], 1, p - 1)] = substr(f[i], p + 1) } }
function ratio(a, b) { return (a > 0 && b > 0) ? sprintf("%.2f", a / b) : "-" }
function dash(x) { return x == "" ? "-" : x }
function trim(x) { gsub(/^ +| +$/, "", x); return x }
function base_name(path,   k, p) { sub(/:$/, "", path); k = split(path, p, "/"); return p[k] }
function oprow(line) {
  if (line ~ /^  [a-z]/) { op = trim(substr(line, 3, 18)); shape = trim(substr(line, 22, 30)) }
  else if (substr(line, 53, 3) != "bwd" || substr(line, 1, 52) !~ /^ +$/) return 0
  pass = trim(substr(line, 53, 4)); ms = trim(substr(line, 58, 10)); return 1 }
'

# write_summary DIR: DIR/summary.md from DIR/.steps (the step rows) and the `result` lines of DIR/bench.log (drtune
# bench gpu) and DIR/torch.log (torch_unet.py): the steps, then drtune next to PyTorch per model and pass
write_summary() {
  local dir=$1
  {
    echo "# GPU check $(date -u '+%Y-%m-%d %H:%M UTC'): ${GPU_NAME:-no GPU name}, programs from ${PROGRAMS:-?}"
    echo
    printf '| step | result | seconds |\n|---|---|---|\n'
    cat "$dir/.steps" 2>/dev/null
    echo
    echo "| model | latent | pass | drtune bf16 ms | PyTorch bf16 ms | drtune/PyTorch | PyTorch autocast ms |" \
      "drtune/autocast | drtune TFLOP/s | drtune MFU | drtune used MiB | PyTorch peak MiB | drtune CUDA graph ms |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    awk "$summary_awk"'
    function row(m, pass, d, p, a, tf, mfu, used, peak, g) {
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f%% | %s | %s | %s |\n", m[1], m[2], pass, d, dash(p),
        ratio(d, p), dash(a), ratio(d, a), tf, 100 * mfu, used, dash(peak), dash(g) }
    FILENAME ~ /bench.log$/ && /^result / { delete r; kv($0, r); k = r["model"] ":" r["latent"]; order[++n] = k
      d_fwd[k] = r["fwd_ms"]; d_fb[k] = r["fwdbwd_ms"]; tf_fwd[k] = r["fwd_tflops"]; tf_fb[k] = r["fwdbwd_tflops"]
      mfu_fwd[k] = r["mfu_fwd"]; mfu_fb[k] = r["mfu_fwdbwd"]; used[k] = r["used_mib"]; g_fwd[k] = r["fwd_graph_ms"] }
    FILENAME ~ /torch.log$/ && /^result / && !/ layout=channels_last/ { delete r; kv($0, r)
      k = r["model"] ":" r["latent"]
      if (r["dtype"] == "bf16") { p_fwd[k] = r["fwd_ms"]; p_fb[k] = r["fwdbwd_ms"]; pk_fwd[k] = r["fwd_peak_mib"]
        pk_fb[k] = r["fwdbwd_peak_mib"] } else { a_fwd[k] = r["fwd_ms"]; a_fb[k] = r["fwdbwd_ms"] } }
    END { for (i = 1; i <= n; i++) { k = order[i]; split(k, m, ":")
      row(m, "forward", d_fwd[k], p_fwd[k], a_fwd[k], tf_fwd[k], mfu_fwd[k], used[k], pk_fwd[k], g_fwd[k])
      row(m, "forward+backward", d_fb[k], p_fb[k], a_fb[k], tf_fb[k], mfu_fb[k], used[k], pk_fb[k], "") } }
    ' "$dir/bench.log" "$dir/torch.log" 2>/dev/null
    echo
    echo "drtune/PyTorch: time ratio (below 1: drtune faster). PyTorch bf16: weights and gradients in bf16;"
    echo "autocast: fp32 weights and gradients with bf16 compute, as drtune's bf16 (fp32 master weights, a bf16"
    echo "compute copy, fp32 gradients). MFU: against the bf16 GEMM rate measured in the same run (bench.log)."
    echo "drtune used MiB: GPU memory in use after forward+backward (CUDA context and libraries included);"
    echo "PyTorch peak: torch.cuda.max_memory_allocated (tensors only). drtune CUDA graph: the same forward captured"
    echo "once and replayed."
    # the DRTune iteration figures of bench gpu's result lines, when it ran them
    awk "$summary_awk"'
    /^result / && / iter_k1_s=/ { delete r; kv($0, r)
      if (!n++) { print ""; print "| model | latent | steps N | trainable | K = 1 s | K = N s | K = 1 peak MiB |" \
        " K = N peak MiB | peak K = N / K = 1 |"; print "|---|---|---|---|---|---|---|---|---|" }
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r["model"], r["latent"], r["iter_steps"],
        r["iter_trainable"], r["iter_k1_s"], r["iter_kn_s"], r["iter_k1_peak_mib"], r["iter_kn_peak_mib"],
        r["iter_peak_ratio"] }
    END { if (n) print "DRTune iteration (drtune bench gpu): seconds per iteration; peak: device_alloc buffers." }
    ' "$dir/bench.log" 2>/dev/null
    # the attention rows of bench gpu: cuDNN fused attention (or the chunked GEMMs) next to drtune's own kernels
    awk "$summary_awk"'
    /^model / { m = base_name($2) }
    /^  \(cuDNN/ { note[++nn] = m ": " substr($0, 4, length($0) - 4) }
    oprow($0) && op ~ /^(attn|attention) / {
      base = op; own = base ~ / own$/; sub(/ (cuDNN|GEMM|own)$/, "", base); key = m SUBSEP base SUBSEP pass
      if (!(key in seen)) { seen[key] = 1; order[++n] = key; shp[key] = shape }
      if (own) o[key] = ms; else f[key] = ms }
    END { if (!n && !nn) exit
      print ""; print "| model | attention | shape | pass | cuDNN / GEMM ms | own kernels ms | own / fused |"
      print "|---|---|---|---|---|---|---|"
      for (i = 1; i <= n; i++) { split(order[i], q, SUBSEP); a = f[order[i]]; b = o[order[i]]
        printf "| %s | %s | %s | %s | %s | %s | %s |\n", q[1], q[2], shp[order[i]], q[3], dash(a), dash(b),
          ratio(b, a) }
      for (i = 1; i <= nn; i++) print "- " note[i] }
    ' "$dir/bench.log" 2>/dev/null
    # the whole UNet channels last (train.channels_last) next to NCHW, from bench gpu's result lines, and PyTorch's
    # bf16 UNet in channels_last where torch.log has it
    awk "$summary_awk"'
    function row(k, pass, a, b, t) { split(k, m, ":")
      printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", m[1], m[2], pass, a, b, ratio(a, b), dash(t), ratio(b, t) }
    FILENAME ~ /torch.log$/ && /^result / && / layout=channels_last/ && / dtype=bf16 / { delete r; kv($0, r)
      k = r["model"] ":" r["latent"]; tf[k] = r["fwd_ms"]; tb[k] = r["fwdbwd_ms"] }
    FILENAME ~ /bench.log$/ && /^result / && / fwd_cl_ms=/ { delete r; kv($0, r); k = r["model"] ":" r["latent"]
      order[++n] = k; f[k] = r["fwd_ms"]; fc[k] = r["fwd_cl_ms"]; b[k] = r["fwdbwd_ms"]; bc[k] = r["fwdbwd_cl_ms"] }
    END { if (!n) exit
      print ""; print "| model | latent | pass | NCHW ms | channels last ms | NCHW / channels last |" \
        " PyTorch bf16 channels_last ms | drtune channels last / PyTorch |"
      print "|---|---|---|---|---|---|---|---|"
      for (i = 1; i <= n; i++) { k = order[i]; row(k, "forward", f[k], fc[k], tf[k])
        row(k, "forward+backward", b[k], bc[k], tb[k]) }
      print "The UNet channels last (train.channels_last = true): NCHW / channels last above 1, faster than NCHW on"
      print "this card. PyTorch channels_last: the bf16 UNet and latents in torch.channels_last." }
    ' "$dir/torch.log" "$dir/bench.log" 2>/dev/null
    # the 3x3 convolution rows of bench gpu: NCHW (the models' layout) next to channels last (conv2d_nhwc)
    awk "$summary_awk"'
    /^model / { m = base_name($2) }
    oprow($0) && op ~ /^conv2d 3x3/ {
      key = m SUBSEP pass; if (!(key in seen)) { seen[key] = 1; order[++n] = key; shp[key] = shape }
      if (op ~ / NHWC$/) c[key] = ms; else l[key] = ms }
    END { if (!n) exit
      print ""; print "| model | conv 3x3 | pass | NCHW ms | NHWC ms | NCHW / NHWC |"; print "|---|---|---|---|---|---|"
      for (i = 1; i <= n; i++) { split(order[i], q, SUBSEP); a = l[order[i]]; b = c[order[i]]
        printf "| %s | %s | %s | %s | %s | %s |\n", q[1], shp[order[i]], q[2], dash(a), dash(b), ratio(a, b) }
      print "NCHW / NHWC above 1: channels last is faster for cuDNN on this card." }
    ' "$dir/bench.log" 2>/dev/null
  } >"$dir/summary.md"
}

if [ "${1:-}" = --summary ]; then # the summary of an earlier run's folder alone (tests, a rerun)
  write_summary "${2:?usage: check.sh --summary DIR}"
  cat "$2/summary.md"
  exit 0
fi

out=${OUT:-/tmp/drtune-gpu}
budget=${CHECK_BUDGET_S:-530}
t_begin=$(date +%s)
mkdir -p "$out"
rows=$out/.steps
: >"$rows"
arch=$(uname -m)-linux-gnu

# step NAME LIMIT_S COMMAND...: COMMAND with its output in $out/NAME.log, a row in the summary; the limit is cut to
# the time left, and the step is skipped when under 10 s are left
step() {
  local name=$1 limit=$2 t0 rc result left
  shift 2
  left=$((budget - ($(date +%s) - t_begin)))
  if [ "$left" -lt 10 ]; then
    printf '| %s | skipped (no time left) | 0 |\n' "$name" >>"$rows"
    return 125
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >>"$out/$name.log" 2>&1
  rc=$?
  case $rc in 0) result=passed ;; 124 | 137) result="timed out ($limit s)" ;; *) result="failed ($rc)" ;; esac
  printf '| %s | %s | %d |\n' "$name" "$result" $(($(date +%s) - t0)) >>"$rows"
  echo "== $name: $result"
  tail -3 "$out/$name.log"
  return $rc
}

# The folders of the CUDA libraries the programs take from this machine (the toolkit's, or PyTorch's nvidia-*
# packages), for LD_LIBRARY_PATH; nothing for a library the loader already finds.
cuda_lib_dirs() {
  local so f py
  py=$(python3 -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null)
  for so in libcublas.so.13 libcublasLt.so.13 libcudnn.so.9 libnccl.so.2; do
    ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$so " && continue
    # shellcheck disable=SC2086 # py: folders, one word each
    f=$(find /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/*/lib $py -name "$so" 2>/dev/null |
      head -1)
    [ -n "$f" ] && dirname "$f"
  done | sort -u | paste -sd: -
}

# ---- programs: the bundle, or a build here
bin=""
if [ -f .gpu-bundle.tar.xz ] && [ ! -x .gpu-bundle/bin/drtune ]; then tar -xJf .gpu-bundle.tar.xz; fi
if [ -x .gpu-bundle/bin/drtune ]; then
  LD_LIBRARY_PATH=$PWD/.gpu-bundle/lib:$(cuda_lib_dirs):${LD_LIBRARY_PATH:-}
  export LD_LIBRARY_PATH
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >"$out/setup.log"
  if step setup 30 sh -c 'tools/gpu/bundle.sh check .gpu-bundle && .gpu-bundle/bin/drtune info --device'; then
    bin=$PWD/.gpu-bundle/bin
    tests=$bin
  fi
fi
if [ -z "$bin" ]; then
  echo "the bundle is missing or does not run here: building" | tee -a "$out/setup.log"
  root=$PWD/.deps/root
  if [ -d .deps/debs ]; then
    mkdir -p "$root"
    for f in .deps/debs/*.deb; do dpkg -x "$f" "$root"; done
  fi
  export PKG_CONFIG_PATH=$root/usr/lib/$arch/pkgconfig:$root/usr/lib/$arch/openblas-openmp/pkgconfig:$root/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$root
  export LD_LIBRARY_PATH=$root/usr/lib/$arch:$root/usr/lib/$arch/openblas-openmp:${LD_LIBRARY_PATH:-}
  step build 240 sh -c "cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DDRTUNE_DIST=OFF -DDRTUNE_SYSROOT='$root' \
    -DCMAKE_PREFIX_PATH='$root/usr' -DCMAKE_LIBRARY_PATH='$root/usr/lib/$arch' -DCMAKE_INCLUDE_PATH='$root/usr/include' \
    && cmake --build build-gpu -j16" || { PROGRAMS="(build failed)" write_summary "$out"; cat "$out/summary.md"; exit 1; }
  bin=$PWD/build-gpu
  tests=$bin/tests
fi
export DRTUNE_BIN=$bin/drtune  # the tests that run the program take it from here

# ---- Python: diffusers from the carried wheels when this machine lacks it
if ! python3 -c 'import diffusers' 2>/dev/null && compgen -G '.whl/*.whl' >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$out/setup.log" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

# run_tests NAME...: the programs cuda_NAME one after the other from the repository root (their fixtures are under
# tests/), each under its own timeout; fails when one fails, is missing or skips (exit 77: no GPU seen), except
# cuda_nccl, which needs mpirun, which this machine lacks
run_tests() {
  local t rc fail=0 t0
  for t in "$@"; do
    t0=$(date +%s)
    if [ ! -x "$tests/cuda_$t" ]; then
      echo "cuda_$t: MISSING"
      fail=1
      continue
    fi
    timeout -k 5 "${TEST_LIMIT_S:-150}" "$tests/cuda_$t" >"/tmp/cuda_$t.out" 2>&1
    rc=$?
    tail -5 "/tmp/cuda_$t.out"
    case $rc:$t in
      0:*) echo "cuda_$t: passed, $(($(date +%s) - t0)) s" ;;
      77:nccl) echo "cuda_$t: skipped (needs mpirun)" ;;
      *) echo "cuda_$t: FAILED (exit $rc$([ "$rc" = 77 ] && echo ': skipped')), $(($(date +%s) - t0)) s"; fail=1 ;;
    esac
  done
  return $fail
}

# the model tests; every other cuda_* program is an op test (parity, layout, linear, conv, norm, attention, ...)
model_tests="unet sd15_iter train train_job bf16_job reward_clip reward_train adherence nccl"
ops_tests=$(cd "$tests" && for f in cuda_*; do
  case " $model_tests " in *" ${f#cuda_} "*) ;; *) printf '%s ' "${f#cuda_}" ;; esac
done)

step env 20 sh -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -2; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ldd "$DRTUNE_BIN" | grep -E "cublas|cudnn|nccl|cudart|openblas"
  python3 -c "import torch, diffusers; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\",
    torch.backends.cudnn.version(), \"diffusers\", diffusers.__version__)"
  compute-sanitizer --version | tail -1; "$DRTUNE_BIN" --version; "$DRTUNE_BIN" info --device'
export -f run_tests
export tests
step cuda 120 bash -c "TEST_LIMIT_S=60 run_tests $ops_tests"
step bench 170 "$bin/drtune" bench gpu --device cuda --reps 3 --steps 4
step torch 110 sh -c 'for m in sd15:64 sdxl:128; do
  python3 tools/gpu/torch_unet.py --model configs/models/${m%%:*} --latent ${m##*:} --dtype bf16 --reps 3 || exit 1
  done
  for m in sd15:64 sdxl:128; do
  python3 tools/gpu/torch_unet.py --model configs/models/${m%%:*} --latent ${m##*:} --autocast --reps 3 || exit 1
  done
  python3 tools/gpu/torch_unet.py --model configs/models/sdxl --latent 128 --dtype bf16 --channels-last --reps 3'
step model 100 bash -c "TEST_LIMIT_S=100 run_tests $model_tests"
if command -v compute-sanitizer >/dev/null; then
  step sanitizer 60 sh -c 'set -e
    for t in parity layout norm attention sdpa channels_last concat; do echo "memcheck cuda_$t"
      compute-sanitizer --tool memcheck --error-exitcode 1 "$0/cuda_$t" >/dev/null; done
    for t in norm channels_last emulator; do echo "racecheck cuda_$t"
      compute-sanitizer --tool racecheck --error-exitcode 1 "$0/cuda_$t" >/dev/null; done' "$tests"
else
  printf '| sanitizer | skipped (no compute-sanitizer) | 0 |\n' >>"$rows"
fi

# ---- summary.md
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1) PROGRAMS=${bin#"$PWD"/} \
  write_summary "$out"
rm -f "$rows"
cat "$out/summary.md"
echo "total $(($(date +%s) - t_begin)) s"
