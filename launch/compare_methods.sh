#!/usr/bin/env bash
# compare_methods.sh: the DRTune paper's comparison at small scale. Trains drtune, refl, draft (K = 1), draft-lv and
# alignprop from the same start (the default config's model), with the same seeds and the same number of reward
# evaluations, on a low-level reward (symmetry) and a high-level one (prompt adherence); evaluates every result on
# the same fixed seeds; writes runs/compare/<reward>.md (table) and <reward>.png (reward curves).
# Usage: ./launch/compare_methods.sh [--iterations N] [--config FILE] [extra --section.key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=40
config=configs/default.ini
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --iterations) iterations=$2; shift 2 ;;
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
for reward in symmetry adherence; do
  echo "== reward: $reward"
  $bin eval --model "$model" "${eval_args[@]}" --rewards "$reward" --out "$out/$reward-before.json" >/dev/null
  runs=()
  for method in drtune refl draft draft-lv alignprop; do
    it=$iterations
    args=()
    case $method in
      draft) args+=(--method.k=1) ;;
      draft-lv) it=$(( iterations / copies )); args+=(--method.lv_copies=$copies) ;; # copies x iterations evaluations
    esac
    dir="$out/$reward/$method"
    mkdir -p "$out/$reward"
    echo "   $method: $it iterations"
    $bin train --config "$config" --method.name=$method --reward.names=$reward --reward.weights=1 \
      --train.iterations=$it --output.dir="$dir" --log.progress=off "${args[@]}" "${extra[@]}" >"$dir.log" 2>&1 \
      || { echo "drtune: error: $method failed, see $dir.log" >&2; exit 1; }
    $bin eval --model "$model" --lora "$dir/export/pytorch_lora_weights.safetensors" "${eval_args[@]}" \
      --rewards "$reward" --out "$dir/eval.json" >/dev/null
    runs+=("$dir:$method")
  done
  {
    echo "Reward: **$reward**; $iterations iterations of the default config per method (draft-lv: $((iterations / copies)) with $copies copies,"
    echo "the same number of reward evaluations); evaluation: 16 fixed seeds, 20 DDIM steps, guidance 4."
    echo
    $bin report --before "$out/$reward-before.json" "${runs[@]}"
  } >"$out/$reward.md"
  curves=()
  for r in "${runs[@]}"; do curves+=("${r%%:*}/metrics.jsonl:${r##*:}"); done
  $bin plot --title "$reward during training" --out "$out/$reward.png" "${curves[@]}" >/dev/null
  cat "$out/$reward.md"
done
echo "tables and plots in $out/"
