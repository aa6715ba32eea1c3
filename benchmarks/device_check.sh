#!/usr/bin/env bash
# The GPU check, prepared to run in one go on a lent GPU machine (see docs/performance.md):
#   1. tests/test_cuda.py: no host sync in a training step, sparse == plain, bf16 ~ fp32, chunked
#      InfoNCE == whole logits, all on CUDA;
#      and, when the converted I3D weights travel along, I3D in fp16 on CUDA against fp32 on CPU;
#   2. the training throughput benchmark on CUDA (Table 1 setting, batch 8 ... 2048).
# It uses the machine's own python3 and torch, with the project on PYTHONPATH (no install: the
# training path needs no PyAV). Logs and the JSON rows go to $OUT (default benchmarks/results).
# To include the I3D check, first copy the weights cache into the ignored folder .carry here:
#   mkdir -p .carry/scalevid-cache && cp -r ~/.cache/scalevid/i3d .carry/scalevid-cache/
# and name .carry in the device run's carry list (51 MB).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .carry/scalevid-cache ]; then export SCALEVID_CACHE="$PWD/.carry/scalevid-cache"; fi
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
