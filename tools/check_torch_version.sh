#!/usr/bin/env bash
# The torch.compile tests (CPU) under another torch release, in a side venv: the GPU machine runs torch 2.11, whose
# dynamo traces less than the pinned 2.14 (session 25: a builtin it could not trace in the exact focused-linear path
# made compiled FLatten-PVT-T recompile on every call; the CPU tests on 2.14 never saw it).
#
#   bash tools/check_torch_version.sh                       # torch 2.11.0 + torchvision 0.26.0 (the GPU machine's)
#   bash tools/check_torch_version.sh 2.12.0 0.27.0 -k one_graph
#
# PyPI's Linux torch wheels are CUDA builds: the side venv takes ~5 GB and a few minutes to install, once.
# Env: LINATTN_SIDE_VENV (default ~/.cache/linattn_vision/torch-VERSION), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
torch_version=${1:-2.11.0}
vision_version=${2:-0.26.0}
shift $(( $# < 2 ? $# : 2 ))
venv=${LINATTN_SIDE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/linattn_vision/torch-$torch_version}
timm_version=$(sed -n 's/^timm==//p' tools/constraints.txt)
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" \
    2>/dev/null; then
  echo "[check_torch_version] installing torch $torch_version, torchvision $vision_version into $venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install -q "torch==$torch_version" "torchvision==$vision_version" \
    "timm==${timm_version:?no timm pin in tools/constraints.txt}" pytest
fi
# the model and op tests need torch and timm only (the mm tests need the full stack: tools/setup_env.sh)
PYTHONPATH="$PWD" exec "$venv/bin/python" -m pytest -q -m "not gpu" -p no:cacheprovider \
  tests/models/test_compiled_training.py tests/models/test_compiled_kernel_route.py \
  tests/ops/test_focused_linear_trace.py tests/ops/test_focused_linear.py "$@"
