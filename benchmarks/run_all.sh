#!/usr/bin/env bash
# Every measurement README.md and docs/*.md quote, on the default model on the CPU: tables on stdout, PNGs under
# docs/, JSON under benchmarks/results/ (which script backs which claim: docs/results.md, "Where each number comes from"). A few hours on two shared cores; --quick runs a smoke test in minutes (its
# numbers are not for quoting; it writes under $BENCH_OUT, default /tmp/steering-bench-quick).
# --tuning also reruns the tuning runs (benchmarks/tuning/) whose results the README cites for how a default
# was chosen; they read only the tuning set, and take hours more.
#   benchmarks/run_all.sh [--quick] [--tuning]
# The peers need their own environment (benchmarks/requirements-peers.txt): PEER_PYTHON, else
# .peerenv/bin/python; without one, that part is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1  # more threads are far slower on a shared machine
PY=.venv/bin/python
PEER=${PEER_PYTHON:-.peerenv/bin/python}
QUICK=""; TUNING=""
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --tuning) TUNING=1 ;;
    *) echo "usage: benchmarks/run_all.sh [--quick] [--tuning]" >&2; exit 2 ;;
  esac
done
if [ -n "$QUICK" ]; then
  export BENCH_OUT=${BENCH_OUT:-/tmp/steering-bench-quick}  # leave the committed results and plots alone
  OVERHEAD="--rounds 3 --tokens 8"; BUILD="--rounds 1 --sizes 64"; PEERS="--rounds 3 --tokens 8 --sizes 64 --step-rotations 2"
  DISTIL="--via contrast --rounds 2 --messages 2"; PERSONAS="--only kind-distilled,json --via contrast --held-out 2 --ttft-rounds 1 --behaviour-tokens 8"; EFFECTS="--n 2 --tokens 8 --layers 6 --only json,weddings"; GPU="--tiny --rounds 2 --tokens 8"; RESTART="--rounds 2 --tokens 8"; AGREEMENT="--n 4"
  CALIBRATION="--n 1 --prompts 1 --only love --budgets 0.25 --cost-rounds 1"; UNTUNED="--n 1 --prompts 1 --only joy,grumpy --held-out 1 --json untuned_quick"
  PRESETS="--n 1 --presets love --max-new-tokens 8"; SECOND="--n 1 --prompts 1 --only calm"; CEILING="--prompts 1 --only joy"; AFTER=untuned_quick
  TUNE="--n 1 --prompts 1 --only happy"; SENTENCES="--n 1 --only trains --variants none,sentence-v1"; CHAT_TUNE="--prompts 1 --only football"; ISO="--only football"
  REPEAT="--only kind --busy 0 --held-out 1 --json distill_repeat_quick"; CHECK="--only football,capitals"
  HEADLINE="--n 2"; PRESET_SWEEP="--n 1 --presets kind --strengths 0.15,0.35 --max-new-tokens 8"; MONITOR="--n 2 --rounds 2 --tokens 8 --requests 1"
  API="--rounds 2 --tokens 8"; HELD_CHECK="--only joy,cats"
else
  OVERHEAD=""; BUILD=""; PEERS=""; DISTIL=""; PERSONAS=""; EFFECTS=""; GPU=""; RESTART=""; AGREEMENT="--n 64"
  REPEAT="--only kind-distilled,pirate-distilled --busy 2"; CHECK=""
  CALIBRATION="--cost-rounds 3"; UNTUNED="--n 8 --prompts 2 --held-out 8 --label after --json untuned_after --plot untuned_after --before untuned_before"
  PRESETS="--n 8"; SECOND="--n 8 --prompts 2"; CEILING="--prompts 2"; AFTER=untuned_after; TUNE=""; SENTENCES=""; CHAT_TUNE=""; ISO=""
  HEADLINE=""; PRESET_SWEEP="--n 8 --presets kind json french --strengths 0.15,0.25,0.35"; MONITOR=""; API="--rounds 20 --tokens 48"; HELD_CHECK=""
fi
set -x
$PY benchmarks/headline.py $HEADLINE  # the README's first table: its generate command, scored by sentiment
$PY benchmarks/presets.py $PRESETS  # docs/results.md's table: each shipped preset's effect and fluency
$PY benchmarks/presets.py $PRESET_SWEEP  # the strengths it names for kind, json and french
$PY benchmarks/monitor.py $MONITOR  # the README's reading-vs-sentiment figure (docs/monitor.md)
$PY benchmarks/api_cost.py $API  # docs/api.md: the API's cost
$PY benchmarks/overhead.py $OVERHEAD
$PY benchmarks/build_speed.py $BUILD
{ set +x; } 2>/dev/null
if [ -x "$PEER" ]; then
  set -x
  "$PEER" benchmarks/peers.py $PEERS
  $PY benchmarks/peers.py --plot
else
  echo "[skip] peers: no peer environment at $PEER (set PEER_PYTHON; see benchmarks/requirements-peers.txt)"
fi
set -x
$PY benchmarks/prompt_vs_vector.py $DISTIL
$PY benchmarks/personas.py $PERSONAS
$PY benchmarks/effects.py $EFFECTS
$PY benchmarks/calibration.py $CALIBRATION  # the KL budget (largest keeping the shipped presets readable) and what calibrating costs
OMP_NUM_THREADS=2 $PY benchmarks/untuned.py $UNTUNED  # the held-out set at the defaults (distillation's speed goal is for 2 cores)
$PY benchmarks/untuned.py --set benchmarks/untuned_set_2.yaml $SECOND --no-personas --label "second set, after" --json untuned_set_2 --plot untuned_set_2
$PY benchmarks/untuned.py --ceiling $CEILING --json untuned_ceiling  # the model told in words, no vector
$PY benchmarks/untuned.py --ceiling $CEILING --set benchmarks/untuned_set_2.yaml --json untuned_set_2_ceiling
$PY benchmarks/untuned.py --redraw --json $AFTER --plot untuned_vs_told --before untuned_ceiling --outline "told in words (no vector)"
$PY benchmarks/untuned.py --redraw --json untuned_set_2 --plot untuned_set_2_vs_told --before untuned_set_2_ceiling --outline "told in words (no vector)"
$PY benchmarks/distill_repeat.py $REPEAT  # the same tensors as the machine is and with two CPU spinners
$PY benchmarks/check_pairs.py $CHECK  # the pre-build check on the tuning set, then on the held-out sets (docs/check.md)
{ set +x; } 2>/dev/null
if [ -n "$QUICK" ]; then
  echo "[skip] languages, chat form, the held-out check's outcomes: distillations and whole held-out sets, no smaller setting"
  set -x
  $PY benchmarks/check_pairs.py --set benchmarks/untuned_set.yaml --outcomes untuned_after --ceiling untuned_ceiling $HELD_CHECK
else
  set -x
  # docs/languages.md: a language name built through `build` (it distils "Always reply in X.")
  $PY benchmarks/language_distill.py --languages Spanish --json language_build
  $PY benchmarks/language_distill.py --languages French,German,Italian --json language_build_fr_de_it
  # the held-out Spanish pairs through that route, fluency under the told model (they replace the pair-read rows for the check)
  $PY benchmarks/untuned.py --only spanish --no-personas --prompts 2 --json untuned_after_languages
  $PY benchmarks/untuned.py --set benchmarks/untuned_set_2.yaml --only espanol --no-personas --prompts 2 --json untuned_set_2_languages
  # docs/check.md: the check on the held-out sets, timed on two threads (the target is for 2 idle cores)
  OMP_NUM_THREADS=2 $PY benchmarks/check_pairs.py --set benchmarks/untuned_set.yaml --outcomes untuned_after,untuned_after_languages --ceiling untuned_ceiling
  OMP_NUM_THREADS=2 $PY benchmarks/check_pairs.py --set benchmarks/untuned_set_2.yaml --outcomes untuned_set_2,untuned_set_2_languages --ceiling untuned_set_2_ceiling
  # docs/chat-dose.md: dose 1 in chat form, greedy (the budgets for the record) and sampled
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set.yaml --json chat_dose_set1 --budgets 0.25,0.5,0.8
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set_2.yaml --json chat_dose_set2 --budgets 0.25,0.5,0.8
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set.yaml --sampled 4 --json chat_dose_set1_sampled
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set_2.yaml --sampled 4 --json chat_dose_set2_sampled
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set.yaml --mode generated --no-ceiling --json chat_dose_set1_generated  # (not taken)
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set_2.yaml --mode generated --no-ceiling --json chat_dose_set2_generated
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set.yaml --only ocean,cats,music,space --budgets 0.25,0.35 --no-ceiling --json chat_dose_set1_topics  # a topic budget of 0.35 (not taken)
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set_2.yaml --only food,weather,cars,birds,history --budgets 0.25,0.35 --no-ceiling --json chat_dose_set2_topics
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set.yaml --effect-ladder --max-bound 2 --json chat_dose_set1  # the effect climb (not taken)
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set_2.yaml --effect-ladder --max-bound 2 --json chat_dose_set2
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set.yaml --json chat_dose_set1 --stop 1.5,2
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set_2.yaml --json chat_dose_set2 --stop 1.5,2
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set.yaml --opening 16:1.5 --json chat_dose_set1  # a stronger opening (not taken: over 2x)
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set_2.yaml --opening 16:1.5 --json chat_dose_set2
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set.yaml --opening 8:1.25 --json chat_dose_set1_gentle  # a gentler opening (not taken)
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set_2.yaml --opening 8:1.25 --json chat_dose_set2_gentle
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set.yaml --opening 1000:0.9,1000:1,1000:1.1 --json chat_dose_set1_nearby  # the verdict at 0.9x-1.1x (chooses nothing)
  $PY benchmarks/chat_dose.py --set benchmarks/untuned_set_2.yaml --opening 1000:0.9,1000:1,1000:1.1 --json chat_dose_set2_nearby
  # docs/distill.md: the speed goal is for 2 idle cores; run this on an otherwise idle machine
  OMP_NUM_THREADS=2 $PY benchmarks/distill_repeat.py --only kind-distilled,pirate-distilled --busy 0 --json distill_idle_2threads
fi
set -x
$PY benchmarks/llama_restart.py $RESTART  # needs STEERING_LLAMA_SERVER (a llama-server binary); says so and skips without
$PY benchmarks/llama_agreement.py $AGREEMENT  # the same
$PY benchmarks/llama_high_scale.py  # docs/llama-cpp.md; also needs STEERING_CVECTOR_GENERATOR (or --vector), skips without
$PY benchmarks/gpu_overhead.py $GPU  # the real measurement needs CUDA; on the CPU it runs a tiny smoke test
{ set +x; } 2>/dev/null
[ -n "$TUNING" ] || exit 0
# How the defaults were chosen (tuning set only), under the tags the README and the engine's comments cite.
set -x
TUNE_EXPANSION=benchmarks/tuning/tune_expansion.py
ALL_DEPTHS="20%,30%,40%,50%,60%,70%,80%"
$PY $TUNE_EXPANSION --variants v1 --layers auto --n 8 --prompts 3 --budget 0.25 $TUNE --tag "budget 0.25, v1, auto, n 8 x 3"  # the KL budget
$PY $TUNE_EXPANSION --variants v1 --layers auto --n 8 --prompts 3 --budget 0.35 $TUNE --tag "budget 0.35, v1, auto, n 8 x 3"
$PY $TUNE_EXPANSION --variants v1 --layers auto --n 12 --prompts 3 --candidates $ALL_DEPTHS $TUNE --tag "candidates 20-80 %, n 12 x 3"  # the candidate layers
$PY $TUNE_EXPANSION --variants v1 --layers auto --n 12 --prompts 3 --candidates 10%,20%,30%,40%,50%,60% $TUNE --tag "candidates 10-60 %, n 12 x 3"
$PY $TUNE_EXPANSION --variants prompt --layers auto --n 6 --prompts 2 --only football mountains trains computers $TUNE \
    --tag "topics: the topic framing as a system prompt (no vector)"  # the model told a topic, and the same distilled
$PY $TUNE_EXPANSION --variants distill --doses 1,1.5 --layers auto --n 6 --prompts 2 --only football mountains trains computers $TUNE \
    --tag "topics: the topic framing distilled"
$PY $TUNE_EXPANSION --sentences $SENTENCES  # sentence-v1
$PY benchmarks/chat_dose.py --budgets 0.25,0.5,0.8 --json chat_dose_tuning $CHAT_TUNE  # docs/chat-dose.md: the budget in chat form
$PY benchmarks/chat_dose.py --ladder --json chat_dose_ladder_tuning $CHAT_TUNE  # the fluency ladder (not taken)
$PY benchmarks/tuning/iso_effect.py $ISO  # a strength matched to telling (not taken)
$PY benchmarks/chat_dose.py --mode generated --no-ceiling --json chat_dose_tuning_generated $CHAT_TUNE  # steering only the reply (not taken)
$PY benchmarks/chat_dose.py --route told --no-ceiling --json chat_dose_tuning_told $CHAT_TUNE  # distilling the told framing (not taken)
$PY benchmarks/chat_dose.py --effect-ladder --json chat_dose_ladder_tuning $CHAT_TUNE  # the effect climb (not taken)
$PY benchmarks/chat_dose.py --json chat_dose_ladder_tuning --stop 1.5,1.75,2
$PY benchmarks/chat_dose.py --opening 4:1.5,8:1.5,16:1.5,4:2,8:2,16:2,4:3,8:3,16:3 --json chat_dose_tuning $CHAT_TUNE  # a stronger opening
$PY benchmarks/chat_dose.py --opening 8:1.25,16:1.25,24:1.25,8:1.5,24:1.5 --json chat_dose_tuning_gentle $CHAT_TUNE  # a gentler opening
$PY benchmarks/chat_dose.py --opening 16:1.5:fade,32:1.5:fade,16:1.75:fade,32:1.75:fade,16:2:fade,32:2:fade --json chat_dose_tuning_fade $CHAT_TUNE  # a fading opening
$PY benchmarks/tuning/check_features.py  # the check's second-round rules (docs/check.md)
