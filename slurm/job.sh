#!/usr/bin/env bash
# job.sh: the body shared by the Slurm batch scripts (slurm/fdxl.sh, tiny.sh, train.sh), so the recipe the tests submit
# and the one users submit behave the same: one rank per task under srun, a run folder keyed by the job name,
# --resume auto, and the preemption contract (docs/FDXL.md):
#   - SIGUSR1 / SIGTERM reach every rank (Slurm's --signal, scancel --signal=USR1 --batch or --full, preemption);
#     drtune writes a checkpoint and exits 0;
#   - the job then requeues itself (scontrol requeue) and the requeued job resumes from that checkpoint;
#   - a failing run (non-zero exit) is never requeued; a stopped run is requeued at most DRTUNE_MAX_REQUEUES times
#     and only when it made progress since the last start, so nothing loops forever.
# Called as: slurm/job.sh CONFIG.ini [--section.key=value ...]   (inside an allocation, from the batch script)
# Environment (all optional):
#   DRTUNE_MODEL         model folder (--model.path)           DRTUNE_RUN_DIR   run folder (default runs/JOB_NAME)
#   DRTUNE_BIN           drtune binary (default build/drtune)   DRTUNE_MAX_REQUEUES   (default 20)
#   DRTUNE_LAUNCH        srun (default) or mpirun               DRTUNE_SRUN_MPI  srun --mpi plugin (default pmix)
set -uo pipefail
config=${1:?usage: slurm/job.sh CONFIG.ini [--section.key=value ...]}
shift
cd "${SLURM_SUBMIT_DIR:-.}" || exit 2
bin=${DRTUNE_BIN:-build/drtune}
job=${SLURM_JOB_NAME:-drtune}
run_dir=${DRTUNE_RUN_DIR:-runs/$job}
max_requeues=${DRTUNE_MAX_REQUEUES:-20}
restarts=${SLURM_RESTART_COUNT:-0}
args=(--config "$config" "$@" --output.dir="$run_dir")
[ -n "${DRTUNE_MODEL:-}" ] && args+=(--model.path="$DRTUNE_MODEL")
say() { echo "drtune-job: $*"; }
fail() { echo "drtune: error: $*" >&2; exit "${2:-2}"; }

[ -x "$bin" ] || fail "no drtune binary at $bin (build it with ./launch/build.sh, or set DRTUNE_BIN)"
# The resolved configuration (the same resolution drtune train does): a bad key stops here, before srun.
resolved=$("$bin" train "${args[@]}" --print-config) || exit 2
iterations=$(awk '/^\[/ {s = $0} s == "[train]" && $1 == "iterations" {print $3}' <<<"$resolved")
# The newest checkpoint's iteration (0 when there is none).
progress() {
  local latest
  latest=$(cat "$run_dir/checkpoints/latest" 2>/dev/null) || { echo 0; return; }
  latest=${latest#ckpt-}
  latest=${latest%.h5}
  [[ $latest =~ ^[0-9]+$ ]] || latest=0
  echo $((10#$latest))
}
before=$(progress)
marker=$(mktemp) || exit 1 # the export written by this start is newer than this file
say "job ${SLURM_JOB_ID:-?} ($job), start $((restarts + 1)), run $run_dir, from iteration $before of $iterations"

export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}} # the allocation's, not the login node's
case ${DRTUNE_LAUNCH:-srun} in
  srun) launch=(srun --mpi="${DRTUNE_SRUN_MPI:-pmix}" --kill-on-bad-exit=1) ;;
  mpirun) launch=(mpirun --bind-to none) ;; # Open MPI reads the allocation from Slurm itself
  *) fail "DRTUNE_LAUNCH must be srun or mpirun, not '$DRTUNE_LAUNCH'" ;;
esac

# The batch shell passes a stop signal on to the ranks (srun forwards SIGUSR1 and SIGTERM to every task; mpirun
# forwards SIGUSR1 only, and ends the job on SIGTERM, so it gets SIGUSR1 for both), so `scancel --signal=USR1
# --batch` works as well as --full or Slurm's own --signal=USR1@T.
stop=""
step=""
on_signal() {
  stop=$1
  local sig=$1
  [ "${launch[0]}" = mpirun ] && sig=USR1
  [ -n "$step" ] && kill -"$sig" "$step" 2>/dev/null
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM
"${launch[@]}" "$bin" train "${args[@]}" --resume auto &
step=$!
while :; do
  wait "$step"
  rc=$?
  [ "$rc" -le 128 ] && break
  kill -0 "$step" 2>/dev/null && continue # a signal interrupted the wait; the step goes on
  wait "$step"
  r=$?
  [ "$r" -ne 127 ] && rc=$r
  break
done
trap - USR1 TERM
after=$(progress)
fresh_export=$(find "$run_dir/export" -newer "$marker" 2>/dev/null | head -n 1)
rm -f "$marker"
if [ "$rc" -ne 0 ]; then
  say "drtune exited with $rc at iteration $after: not requeued (fix the cause, then resubmit: it resumes)"
  exit "$rc"
fi
if [ "$after" -ge "$iterations" ] && [ -n "$fresh_export" ]; then
  say "done: $iterations iterations, exported weights in $run_dir/export"
  exit 0
fi
# Stopped by a signal before the end, with a checkpoint at $after.
if [ "$restarts" -ge "$max_requeues" ]; then
  say "stopped at iteration $after after $restarts requeues (DRTUNE_MAX_REQUEUES=$max_requeues): not requeued"
  exit 1
fi
if [ "$after" -le "$before" ]; then
  say "stopped at iteration $after without progress since this start: not requeued"
  exit 1
fi
say "stopped${stop:+ by SIG$stop} at iteration $after of $iterations: requeueing" \
  "(requeue $((restarts + 1)) of at most $max_requeues)"
scontrol requeue "$SLURM_JOB_ID" || fail "scontrol requeue $SLURM_JOB_ID failed; resubmit the job to continue" 1
sleep 60 # Slurm ends this shell as part of the requeue
