#!/usr/bin/env bash
# One-GPU check, at most ~8 minutes: tiny LLaVA bf16 batched generate throughput, caption scaling 1 vs 2 workers
# on the GPU, and 5 training steps of the LTCC config with random weights (on a tiny SynthCC workspace, since
# the real LTCC images are not assumed to be present). Results go to $OUT if set, else to the folder given as
# the first argument (default ./gpu-check). Usage:  bash benchmarks/gpu_check.sh [--smoke] [RESULTS_DIR]
# --smoke (CPU, about a minute; the test suite runs it): no GPU queried; steps 1 and 2 run the same scripts in their
# --smoke modes on the CPU (bookkeeping included); step 3 resolves the LTCC config with the same overrides and
# checks the `train` command parses them, without training. The last line of every mode: "<step> rc=<status> ...".
set -uo pipefail
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
cd "$(dirname "$0")/.."
RES="${OUT:-${1:-gpu-check}}"
mkdir -p "$RES"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
FAILED=0
step() {  # name, limit in seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$RES/$name.log" 2>&1
  local rc=$?
  [ "$rc" = 0 ] || FAILED=$((FAILED + 1))
  echo "$name rc=$rc $((SECONDS - t0))s: $(grep -v '^\s*$' "$RES/$name.log" | tail -n 1)" | tee -a "$RES/summary.txt"
}
if [ "$SMOKE" = 1 ]; then
  { date -u +%FT%TZ; echo "smoke mode: CPU, no GPU queried"; } >"$RES/summary.txt" 2>&1
else
  { date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } \
    >"$RES/summary.txt" 2>&1
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  >>"$RES/summary.txt" 2>&1
TRAIN_OVERRIDES=(data.dataset=synthcc text.encoder=minilm text.dim=null model.pretrained=random
  run.stop_after_steps=5 run.amp=bf16 run.name=gpu-check-ltcc)
if [ "$SMOKE" = 1 ]; then
  step throughput 300 "$PY" benchmarks/caption_throughput.py --smoke
  step scaling 300 "$PY" benchmarks/caption_scaling.py --smoke
  # the training step's config and overrides, resolved and validated, and its command line parsed (no training)
  step train_config 120 "$PY" - "${TRAIN_OVERRIDES[@]}" <<'PYCHECK'
import subprocess, sys
from differ_core.config import load_config
path = subprocess.run([sys.executable, "-m", "flows.cli", "configs", "--path", "configs/ltcc.yaml"],
                      capture_output=True, text=True, check=True).stdout.strip()
cfg = load_config(path, sys.argv[1:])
subprocess.run([sys.executable, "-m", "flows.cli", "train", "--help"], capture_output=True, check=True)
print(f"train config {path}: {cfg.model.backbone}, {len(sys.argv) - 1} overrides valid")
PYCHECK
  cat "$RES/summary.txt"
  exit "$FAILED"
fi
# 1. batched generate throughput of the tiny LLaVA in bf16 (one image at a time vs batches)
step throughput 120 "$PY" benchmarks/caption_throughput.py --device cuda --images 128 --batch-size 32
# 2. caption scaling: 1 worker vs 2 workers sharing GPU 0 (identical greedy captions), bookkeeping skipped
step scaling 180 "$PY" benchmarks/caption_scaling.py --devices 0,0 --images 192 --chunk-size 16 \
  --batch-size 16 --skip-bookkeeping
W="$(mktemp -d)"
# 3. a few training steps of the LTCC config with random weights (model.pretrained=random) on tiny SynthCC
step train_setup 120 bash -c "\"$PY\" -m flows.cli --workdir '$W' manifest synthcc --size tiny && \
  \"$PY\" -m flows.cli --workdir '$W' caption --dataset synthcc --perspectives biometrics,hairstyle,clothing && \
  \"$PY\" -m flows.cli --workdir '$W' encode --dataset synthcc --encoder minilm"
step train_ltcc 180 "$PY" -m flows.cli --workdir "$W" train --config configs/ltcc.yaml "${TRAIN_OVERRIDES[@]}"
rm -rf "$W"
cat "$RES/summary.txt"
exit "$FAILED"
