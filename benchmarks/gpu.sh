#!/usr/bin/env bash
# The GPU benchmarks in one short run (about 5 minutes on an H100/H200; fits one 10-minute
# device call): throughput of ours (bf16, batches of 16) against the original approach, the
# bf16-vs-fp32 cosine check, and the memory sweep from 10 s to one hour.
#
#   bash benchmarks/gpu.sh            # uses python3 (needs torch with CUDA and the pinned packages)
#   PYTHON=.venv/bin/python bash benchmarks/gpu.sh
#
# Results go to benchmarks/results/*_cuda.{json,md}, and are copied to $OUT when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-python3}"
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
"$python" -m benchmarks.throughput --device cuda --dtype bfloat16 --clips 64 --batch 16
"$python" -m benchmarks.memory_sweep --device cuda --dtype bfloat16 --lengths 10 60 600 3600
if [ -n "${OUT:-}" ]; then
  cp benchmarks/results/*_cuda.* "$OUT"/
fi
