#!/usr/bin/env bash
# run.sh DIR: the sanitizer job. Configures and builds drtune with AddressSanitizer and UndefinedBehaviorSanitizer
# in DIR (incrementally: fast when nothing changed; without -Werror, as the sanitizers change what the optimiser
# warns about), then runs the core, io, gradcheck and train tests and the
# dist_collectives test there. Exit 0 only when every test passes without a sanitizer report; 77 (skipped) when
# the compiler cannot build with the sanitizers.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-build/sanitize}
if [ ! -f "$dir/CMakeCache.txt" ]; then
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDRTUNE_SANITIZE=ON -DDRTUNE_CUDA=OFF -DDRTUNE_NATIVE=OFF \
        -DDRTUNE_WERROR=OFF >/dev/null || { echo "cannot configure the sanitizer build: skipped"; exit 77; }
fi
start=$(date +%s)
cmake --build "$dir" -j"$(nproc)" -- --no-print-directory | grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built)' || true
test -x "$dir/drtune" || { echo "sanitizer build failed"; exit 1; }
echo "sanitizer build: $(( $(date +%s) - start )) s"
supp=$PWD/tests/sanitize/lsan.supp
# halt_on_error: the first report ends the process with a failure; detect_leaks: LeakSanitizer at exit.
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=99:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=98
# passive: waiting OpenMP threads sleep instead of spinning, which a busy machine punishes hard
export OMP_WAIT_POLICY=PASSIVE
export LSAN_OPTIONS=suppressions=$supp:print_suppressions=0
cd "$dir"
rc=0
ctest --output-on-failure --timeout 1200 -L '^(core|io|gradcheck|train)$' || rc=1
# Open MPI: its components stay loaded until exit and stacks are unwound slowly, so that lsan.supp can name
# Open MPI's libraries in every stack of its own leaks
OMPI_MCA_mca_base_component_disable_dlclose=1 ASAN_OPTIONS=$ASAN_OPTIONS:fast_unwind_on_malloc=0 \
  ctest --output-on-failure --timeout 1200 -R '^dist_collectives$' || rc=1
echo "sanitizer job: $(( $(date +%s) - start )) s in all"
exit $rc
