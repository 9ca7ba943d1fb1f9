#!/usr/bin/env bash
# compare_methods.sh: the DRTune paper's comparison at small scale. Trains drtune, refl, draft (K = 1), draft-lv and
# alignprop from the same start (the default config's model), with the same number of reward evaluations, on a
# low-level reward (symmetry) and two high-level ones (prompt adherence, and clipscore with the small CLIP of
# data/models/clip), each method with several training seeds (train.seed = 0 .. N-1); evaluates every result on the
# same fixed seeds; writes runs/compare/<reward>.md (table: mean and spread across training seeds) and <reward>.png
# (reward curves of the first seed).
# Usage: ./launch/compare_methods.sh [--iterations N] [--seeds N] [--rewards a,b,...] [--clip DIR] [--config FILE]
#                                    [extra --section.key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=40
seeds=3
rewards=symmetry,adherence,clipscore
clip=data/models/clip
config=configs/default.ini
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --iterations) iterations=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --rewards) rewards=$2; shift 2 ;;
    --clip) clip=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done
./launch/deps.sh
./launch/build.sh
bin=build/drtune
out=${COMPARE_DIR:-runs/compare}
mkdir -p "$out"
model=$(sed -n 's/^path *= *//p' "$config" | head -1)
copies=2
eval_args=(--prompts data/prompts/default.txt --n 16 --steps 20 --guidance 4)
for reward in ${rewards//,/ }; do
  echo "== reward: $reward"
  rargs=() eargs=()
  if [ "$reward" = clipscore ]; then rargs=(--reward.clipscore_path="$clip"); eargs=(--reward-path clipscore="$clip"); fi
  $bin eval --model "$model" "${eval_args[@]}" --rewards "$reward" "${eargs[@]}" --out "$out/$reward-before.json" \
    >/dev/null
  runs=() curves=()
  for method in drtune refl draft draft-lv alignprop; do
    it=$iterations
    args=()
    case $method in
      draft) args+=(--method.k=1) ;;
      draft-lv) it=$(( iterations / copies )); args+=(--method.lv_copies=$copies) ;; # copies x iterations evaluations
    esac
    for ((seed = 0; seed < seeds; seed++)); do
      dir="$out/$reward/$method-s$seed"
      mkdir -p "$out/$reward"
      echo "   $method, seed $seed: $it iterations"
      $bin train --config "$config" --method.name=$method --reward.names=$reward --reward.weights=1 "${rargs[@]}" \
        --train.iterations=$it --train.seed=$seed --output.dir="$dir" --log.progress=off "${args[@]}" "${extra[@]}" \
        >"$dir.log" 2>&1 || { echo "drtune: error: $method failed, see $dir.log" >&2; exit 1; }
      $bin eval --model "$model" --lora "$dir/export/pytorch_lora_weights.safetensors" "${eval_args[@]}" \
        --rewards "$reward" "${eargs[@]}" --out "$dir/eval.json" >/dev/null
      runs+=("$dir:$method")
      [ "$seed" -eq 0 ] && curves+=("$dir/metrics.jsonl:$method")
    done
  done
  {
    echo "Reward: **$reward**; $iterations iterations of the default config per method (draft-lv: $((iterations / copies)) with $copies copies,"
    echo "the same number of reward evaluations), training seeds 0..$((seeds - 1)); evaluation: 16 fixed seeds, 20 DDIM steps,"
    echo "guidance 4. Reward after and change: mean ± standard deviation across the training seeds."
    echo
    $bin report --before "$out/$reward-before.json" "${runs[@]}"
  } >"$out/$reward.md"
  $bin plot --title "$reward during training (seed 0)" --out "$out/$reward.png" "${curves[@]}" >/dev/null
  cat "$out/$reward.md"
done
echo "tables and plots in $out/"
