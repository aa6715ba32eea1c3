#!/usr/bin/env bash
# The GPU check, prepared to run in one go on a lent GPU machine (see docs/performance.md):
#   1. tests/test_cuda.py: no host sync in a training step, sparse == plain, bf16 ~ fp32, chunked
#      InfoNCE == whole logits, all on CUDA;
#   2. the training throughput benchmark on CUDA (Table 1 setting, batch 8 ... 2048).
# It uses the machine's own python3 and torch, with the project on PYTHONPATH (no install: the
# training path needs no PyAV). Logs and the JSON rows go to $OUT (default benchmarks/results).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/device.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" 2>&1 |
    tee -a "$out/device.txt"
python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/cuda_tests.log"
tests=${PIPESTATUS[0]}
python3 benchmarks/train_throughput.py --device cuda --batch-sizes 8 19 57 512 2048 \
    --min-seconds 3 --json "$out/train_throughput_cuda.json" 2>&1 | tee "$out/train_throughput_cuda.log"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, benchmark exit $bench"
exit $((tests || bench))
