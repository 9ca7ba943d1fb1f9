#!/usr/bin/env bash
# retrain.sh: one round of periodic retraining, the thing a crontab line calls (docs/FDXL.md, README "Cluster").
#
#   launch/retrain.sh [--submit] CONFIG.ini [--section.key=value ...]
#
# The run folder R is the configuration's output.dir. A round trains from the current promoted model (the base
# model.path before the first promotion), evaluates the result against the model it started from on the held-out
# prompts ([retrain] section of the configuration), and promotes it only when the target reward's mean gains more
# than retrain.min_gain and no guard reward's mean falls by more than retrain.margin:
#   R/rounds/NNNNNN/      the round's training run (metrics, samples, export), gate_before.json, gate_after.json
#   R/promoted/NNNNNN/    a promoted round: unet/ (merged), the LoRA file when trained with LoRA, model/ (a complete
#                         diffusers folder: unet/ plus links to the base model's other parts), gate.json
#   R/current             symlink to promoted/NNNNNN, replaced by rename; the newest retrain.keep rounds are kept
#   R/retrain.log         one JSON line per decision (promoted, rejected, failed)
# Round N trains with train.seed + N - 1, so a round after a rejected one does not repeat it.
# One call at a time: a second call while one runs (flock on R/.lock) prints a note and exits 0. A round that was
# interrupted (killed, node lost) is continued by the next call (--resume auto); a decided round is never redone.
# With --submit (on a Slurm login node) the round runs as a batch job instead, submitted with
# --dependency=singleton under the job name drtune-retrain-<basename of R>; nothing is submitted while such a job is
# already pending. Training runs under srun inside a Slurm allocation, under mpirun -np DRTUNE_RANKS when that is
# more than 1, and as one process otherwise.
#
# Exit codes: 0 promoted, or nothing to do; 3 the gate rejected the round; 2 user error (configuration, files);
# 1 failure (training or evaluation failed).
# Environment: DRTUNE_BIN (default build/drtune next to this script), DRTUNE_RANKS (local ranks, default 1),
# DRTUNE_SBATCH_ARGS (extra sbatch options for --submit, e.g. "--nodes=2 --ntasks-per-node=8 --gpus-per-task=1"),
# DRTUNE_SRUN_MPI (srun --mpi plugin, default pmix).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${DRTUNE_BIN:-$here/../build/drtune}
say() { echo "retrain: $*"; }
fail() { echo "drtune: error: $*" >&2; exit "${2:-2}"; }

submit=0
if [ "${1:-}" = --submit ]; then
  submit=1
  shift
fi
config=${1:-}
[ -n "$config" ] && [ "${config#--}" = "$config" ] ||
  fail "usage: launch/retrain.sh [--submit] CONFIG.ini [--section.key=value ...]"
shift
overrides=("$@")
[ -x "$bin" ] || fail "no drtune binary at $bin (build it with ./launch/build.sh, or set DRTUNE_BIN)"
command -v jq >/dev/null || fail "jq is needed to read the evaluation results (Debian package jq: launch/deps.sh)"

# The resolved configuration: the same resolution drtune train does, so a bad key stops here with exit 2.
resolved=$("$bin" train --config "$config" "${overrides[@]}" --print-config) || exit 2
get() { # get SECTION KEY: the resolved value, surrounding double quotes removed
  awk -v s="[$1]" -v k="$2" '/^\[/ {cur = $0; next}
    cur == s && index($0, k " = ") == 1 {
      v = substr($0, length(k) + 4)
      if (v ~ /^".*"$/) v = substr(v, 2, length(v) - 2)
      print v
    }' <<<"$resolved"
}
root=$(get output dir)
base=$(get model path)
keep=$(get retrain keep)

if [ "$submit" = 1 ]; then
  command -v sbatch >/dev/null || fail "--submit needs Slurm's sbatch on this machine"
  name="drtune-retrain-$(basename "$root")"
  queued=$(squeue -h -n "$name" -t PENDING -o %i 2>/dev/null | head -n 1)
  if [ -n "$queued" ]; then
    say "a round is already queued as job $queued ($name): nothing submitted"
    exit 0
  fi
  mkdir -p "$root" || fail "cannot create the run folder $root"
  # shellcheck disable=SC2086 # DRTUNE_SBATCH_ARGS is a list of options
  job=$(sbatch --parsable --job-name="$name" --dependency=singleton --output="$root/slurm-%j.out" \
    --open-mode=append ${DRTUNE_SBATCH_ARGS:-} "$here/retrain.sh" "$config" "${overrides[@]}") ||
    fail "sbatch failed" 1
  say "submitted round job $job ($name); its log: $root/slurm-$job.out"
  exit 0
fi

mkdir -p "$root/rounds" "$root/promoted" || fail "cannot create the run folder $root"
exec 9>>"$root/.lock" || fail "cannot open the lock $root/.lock"
if ! flock -n 9; then
  say "another round is running in $root (lock held): nothing to do"
  exit 0
fi

# The gate's settings and the rewards it reads.
target=$(get retrain target)
IFS=', ' read -r -a names <<<"$(get reward names)"
IFS=', ' read -r -a guards <<<"$(get retrain guards)"
[ -n "$target" ] || target=${names[0]}
rewards=$(printf '%s\n' "${names[@]}" "$target" "${guards[@]}" | awk 'NF && !seen[$0]++' | paste -sd, -)
min_gain=$(get retrain min_gain)
margin=$(get retrain margin)
prompts=$(get retrain prompts)
[ -f "$prompts" ] || fail "retrain.prompts: no prompt file '$prompts'"
[ "$(get output export)" != lora ] && [ "$(get output export)" != none ] ||
  fail "retraining promotes the merged UNet: set output.export = merged or both (it is $(get output export))"

# The numbered entries of a folder (rounds/, promoted/), newest first.
numbered() { find "$1" -mindepth 1 -maxdepth 1 -name '[0-9]*' ! -name '*.tmp' -printf '%f\n' | sort -rn; }

log_line() { # one JSON object per line, appended in one write
  jq -cn --arg time "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$@" '$ARGS.named + {time: $time}' >>"$root/retrain.log"
}

# The round: the newest one when it has no decision yet (an interrupted round), otherwise a new one.
last=$(numbered "$root/rounds" | head -n 1)
if [ -n "$last" ] && [ ! -f "$root/rounds/$last/decision.json" ]; then
  round=$last
  say "continuing round $((10#$round)) in $root/rounds/$round"
else
  round=$(printf '%06d' $((10#${last:-0} + 1)))
  mkdir -p "$root/rounds/$round.tmp" || fail "cannot create $root/rounds/$round.tmp"
  start=$(cd "$base" 2>/dev/null && pwd -P) || fail "model.path: no model folder '$base'"
  [ -L "$root/current" ] && start=$(cd "$root/current/model" && pwd -P)
  printf '%s\n' "$start" >"$root/rounds/$round.tmp/start_model"
  mv -T "$root/rounds/$round.tmp" "$root/rounds/$round" || fail "cannot publish $root/rounds/$round" 1
  say "round $((10#$round)) starts from $start"
fi
dir=$root/rounds/$round
start=$(cat "$dir/start_model")
[ -f "$start/model_index.json" ] || fail "the round's start model $start is not a model folder"

# Training (continued from its newest checkpoint when the round was interrupted).
if [ ! -f "$dir/trained" ]; then
  if [ -n "${SLURM_JOB_ID:-}" ]; then
    launch=(srun --mpi="${DRTUNE_SRUN_MPI:-pmix}" --kill-on-bad-exit=1)
  elif [ "${DRTUNE_RANKS:-1}" -gt 1 ]; then
    launch=(mpirun -np "$DRTUNE_RANKS")
  else
    launch=()
  fi
  args=() # the overrides, less the three keys each round sets itself
  for a in "${overrides[@]}"; do
    case $a in --output.dir=* | --model.path=* | --train.seed=*) ;; *) args+=("$a") ;; esac
  done
  # Round N trains with seed train.seed + N - 1: a round after a rejection draws new noise, not the same run again.
  seed=$(($(get train seed) + 10#$round - 1))
  "${launch[@]}" "$bin" train --config "$config" "${args[@]}" --output.dir="$dir" --model.path="$start" \
    --train.seed="$seed" --resume auto
  rc=$?
  if [ "$rc" -ne 0 ]; then
    log_line --argjson round $((10#$round)) --arg decision failed --arg stage train --argjson exit "$rc"
    say "round $((10#$round)): training failed (exit $rc); the next call continues it"
    [ "$rc" -eq 2 ] && exit 2
    exit 1
  fi
  [ -f "$dir/export/unet/diffusion_pytorch_model.safetensors" ] ||
    fail "round $((10#$round)): training finished without a merged UNet in $dir/export" 1
  : >"$dir/trained"
fi

# The candidate: the start model with the trained UNet.
rm -rf "$dir/model"
mkdir -p "$dir/model.tmp" || fail "cannot create $dir/model.tmp" 1
for part in "$start"/*; do
  [ "$(basename "$part")" = unet ] && continue
  ln -s "$(readlink -f "$part")" "$dir/model.tmp/$(basename "$part")"
done
ln -s ../export/unet "$dir/model.tmp/unet"
mv -T "$dir/model.tmp" "$dir/model" || fail "cannot publish $dir/model" 1

# The gate: the same images (seeds, prompts, sampler settings) from the start model and from the candidate.
neg=$(get sampler negative_prompt)
seeds=$(get retrain seeds | tr -d ' ')
colour=$(get reward colour | tr -d ' ')
evaluate() { # evaluate MODEL OUT
  [ -f "$2" ] && return 0
  "$bin" eval --model "$1" --prompts "$prompts" --rewards "$rewards" --colour "$colour" --seeds "$seeds" \
    --steps "$(get sampler steps)" --guidance "$(get sampler guidance)" --eta "$(get sampler eta)" \
    --height "$(get sampler height)" --width "$(get sampler width)" ${neg:+--negative "$neg"} --out "$2" >/dev/null
}
for side in before after; do
  model=$start
  [ "$side" = after ] && model=$dir/model
  if ! evaluate "$model" "$dir/gate_$side.json"; then
    log_line --argjson round $((10#$round)) --arg decision failed --arg stage "evaluation ($side)"
    fail "round $((10#$round)): the evaluation of $model failed; the next call retries it" 1
  fi
done
means() { jq -c '.summary | del(.total) | map_values(.mean)' "$1"; }
before=$(means "$dir/gate_before.json")
after=$(means "$dir/gate_after.json")
guard_list=$(printf '%s\n' "${guards[@]}" | jq -R . | jq -cs 'map(select(length > 0))')
reasons=$(jq -cn --argjson b "$before" --argjson a "$after" --arg t "$target" --argjson g "$min_gain" \
  --argjson m "$margin" --argjson guards "$guard_list" '
  [ (if ($a[$t] - $b[$t]) > $g then empty
     else "target \($t) gained \($a[$t] - $b[$t]) (needs more than \($g))" end),
    ($guards[] | select(($b[.] - $a[.]) > $m) | "guard \(.) fell by \($b[.] - $a[.]) (margin \($m))") ]')
gate=(--argjson round $((10#$round)) --arg start_model "$start" --arg target "$target" --argjson min_gain "$min_gain"
  --argjson margin "$margin" --argjson guards "$guard_list" --argjson before "$before" --argjson after "$after")

if [ "$reasons" != "[]" ]; then
  jq -n "${gate[@]}" --arg decision rejected --argjson reasons "$reasons" '$ARGS.named' >"$dir/decision.json.tmp" &&
    mv "$dir/decision.json.tmp" "$dir/decision.json"
  log_line "${gate[@]}" --arg decision rejected --argjson reasons "$reasons"
  rm -rf "$dir/checkpoints"
  say "round $((10#$round)) rejected: $(jq -r 'join("; ")' <<<"$reasons"); current unchanged"
  exit 3
fi

# Promotion: the round is assembled in promoted/.NNNNNN.tmp, published by rename, then current is swapped by rename.
pub=$root/promoted/$round
rm -rf "$root/promoted/.$round.tmp"
mkdir -p "$root/promoted/.$round.tmp/model" || fail "cannot create $root/promoted/.$round.tmp" 1
cp -r "$dir/export/unet" "$root/promoted/.$round.tmp/unet" &&
  { [ ! -f "$dir/export/pytorch_lora_weights.safetensors" ] ||
    cp "$dir/export/pytorch_lora_weights.safetensors" "$root/promoted/.$round.tmp/"; } &&
  cp "$dir/config.ini" "$root/promoted/.$round.tmp/config.ini" ||
  fail "cannot copy the round's weights into $root/promoted/.$round.tmp" 1
for part in "$dir/model"/*; do
  [ "$(basename "$part")" = unet ] && continue
  cp -P "$part" "$root/promoted/.$round.tmp/model/"
done
ln -s ../unet "$root/promoted/.$round.tmp/model/unet"
jq -n "${gate[@]}" --arg decision promoted '$ARGS.named' >"$root/promoted/.$round.tmp/gate.json"
rm -rf "$pub"
mv -T "$root/promoted/.$round.tmp" "$pub" || fail "cannot publish $pub" 1
ln -sfn "promoted/$round" "$root/.current.tmp" && mv -T "$root/.current.tmp" "$root/current" ||
  fail "cannot swap $root/current" 1
cp "$pub/gate.json" "$dir/decision.json.tmp" && mv "$dir/decision.json.tmp" "$dir/decision.json"
rm -rf "$dir/checkpoints"
# Keep the newest retrain.keep promoted rounds (current among them) and as many round folders.
removed=()
for old in $(numbered "$root/promoted" | tail -n +$((keep + 1))); do
  rm -rf "${root:?}/promoted/$old" && removed+=("$old")
done
for old in $(numbered "$root/rounds" | tail -n +$((keep + 1))); do
  rm -rf "${root:?}/rounds/$old"
done
kept=$(numbered "$root/promoted" | sort -n | jq -R . | jq -cs .)
log_line "${gate[@]}" --arg decision promoted --arg current "promoted/$round" --argjson kept "$kept"
from=$(jq -r --arg t "$target" '.[$t]' <<<"$before")
to=$(jq -r --arg t "$target" '.[$t]' <<<"$after")
say "round $((10#$round)) promoted: $target $from -> $to;" \
  "current -> promoted/$round${removed[*]:+ (removed ${removed[*]})}"
exit 0
