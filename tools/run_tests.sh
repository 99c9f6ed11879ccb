#!/usr/bin/env bash
# The README's test command: set everything up (idempotent; the mmcv build is cached) and run the test suite.
# Extra arguments go to pytest. On a machine without CUDA the GPU-only tests are deselected, not skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
PY=.venv/bin/python
marker=()
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  marker=(-m "not gpu")
fi
exec "$PY" -m pytest -q "${marker[@]}" "$@"
