#!/usr/bin/env bash
# On a CUDA machine, in one go: the GPU tests of the focused-linear op, then the op table, the whole-model table and
# a per-kernel profile of FLatten-Swin-T vs Swin-T training (the numbers BENCHMARKS.md reports), each into OUT_DIR.
#
#   bash tools/gpu_check.sh [OUT_DIR]        # default work_dirs/gpu_check; about 15 minutes on an H100
set -u
cd "$(dirname "$0")/.."
out=${1:-work_dirs/gpu_check}
mkdir -p "$out"
python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check.sh needs a CUDA GPU")' || exit 2
status=0
python -m pytest -q tests/ops/test_focused_linear.py -m gpu -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
python tools/benchmark_attention.py --reps 20 2>&1 | tee "$out/op_table.txt"
python tools/benchmark_models.py --graph --compile flatten_swin_t swin_tiny_patch4_window7_224 --nan-steps 200 \
    2>&1 | tee "$out/models.txt"
python tools/profile_model.py flatten_swin_t swin_tiny_patch4_window7_224 --train 2>&1 | tee "$out/profile.txt"
echo "results in $out"
exit $status
