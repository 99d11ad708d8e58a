#!/usr/bin/env bash
# Every benchmark on the default model on the CPU: tables on stdout, PNGs under docs/, JSON under
# benchmarks/results/. About an hour on two shared cores; --quick runs a smoke test in minutes (its
# numbers are not for quoting; it writes under $BENCH_OUT, default /tmp/steering-bench-quick).
#   benchmarks/run_all.sh [--quick]
# The peers need their own environment (benchmarks/requirements-peers.txt): PEER_PYTHON, else
# .peerenv/bin/python; without one, that part is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1  # more threads are far slower on a shared machine
PY=.venv/bin/python
PEER=${PEER_PYTHON:-.peerenv/bin/python}
if [ "${1:-}" = "--quick" ]; then
  export BENCH_OUT=${BENCH_OUT:-/tmp/steering-bench-quick}  # leave the committed results and plots alone
  OVERHEAD="--rounds 3 --tokens 8"; BUILD="--rounds 1 --sizes 64"; PEERS="--rounds 3 --tokens 8 --sizes 64 --step-rotations 2"
  DISTIL="--via contrast --rounds 2 --messages 2"; PERSONAS="--only kind-distilled,json --via contrast --held-out 2 --ttft-rounds 1 --behaviour-tokens 8"; EFFECTS="--n 2 --tokens 8 --layers 6 --only json,weddings"; GPU="--tiny --rounds 2 --tokens 8"; RESTART="--rounds 2 --tokens 8"; AGREEMENT="--n 4"
  CALIBRATION="--n 1 --prompts 1 --only love --budgets 0.25 --cost-rounds 1"; UNTUNED="--n 1 --prompts 1 --only joy,grumpy --held-out 1 --json untuned_quick"
  REPEAT="--only kind --busy 0 --held-out 1 --json distill_repeat_quick"; CHECK="--only football,capitals"
else
  OVERHEAD=""; BUILD=""; PEERS=""; DISTIL=""; PERSONAS=""; EFFECTS=""; GPU=""; RESTART=""; AGREEMENT="--n 64"
  REPEAT="--only kind-distilled,pirate-distilled --busy 2"; CHECK=""
  CALIBRATION="--cost-rounds 3"; UNTUNED="--n 8 --prompts 2 --held-out 8 --label after --json untuned_after --plot untuned_after --before untuned_before"
fi
set -x
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
$PY benchmarks/distill_repeat.py $REPEAT  # the same tensors as the machine is and with two CPU spinners
$PY benchmarks/check_pairs.py $CHECK  # the pre-build check on the tuning set (the held-out runs: docs/check.md)
$PY benchmarks/llama_restart.py $RESTART  # needs STEERING_LLAMA_SERVER (a llama-server binary); says so and skips without
$PY benchmarks/llama_agreement.py $AGREEMENT  # the same
$PY benchmarks/gpu_overhead.py $GPU  # the real measurement needs CUDA; on the CPU it runs a tiny smoke test
