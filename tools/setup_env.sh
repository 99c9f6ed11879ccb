#!/usr/bin/env bash
# Creates .venv and installs the whole stack, idempotently:
#   core: torch, torchvision, timm, triton (via torch), opencv, numpy, pyyaml, safetensors
#   mm:   mmengine, mmcv (built from source with ops, wheel cached), mmdet, mmsegmentation, pycocotools
# Usage: bash tools/setup_env.sh [--core-only]
# Env:   LINATTN_VENV (default .venv), LINATTN_CACHE (default ~/.cache/linattn_vision), PYTHON (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${LINATTN_VENV:-$ROOT/.venv}
CACHE=${LINATTN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/linattn_vision}
PY=${PYTHON:-python3}
CONSTRAINTS=$ROOT/tools/constraints.txt
MMCV_VERSION=2.1.0
MMCV_URL=https://files.pythonhosted.org/packages/a7/19/f97f0fd4d432113a232e75f965335be6b7bb6557ae9faf8051e9a012cadd/mmcv-2.1.0.tar.gz
MMCV_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
CORE_ONLY=0
[ "${1:-}" = "--core-only" ] && CORE_ONLY=1

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
t0=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
pipi() { "${PIP[@]}" install -q -c "$CONSTRAINTS" "$@"; }

stamp="$VENV/.linattn_core_$(sha256sum "$CONSTRAINTS" pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing core stack (torch, torchvision, timm, ...)"
  pipi "setuptools<82" wheel ninja pytest
  pipi torch torchvision timm numpy opencv-python pyyaml safetensors pillow matplotlib
  "${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"
  touch "$stamp"
else
  log "core stack already installed"
fi

if [ "$CORE_ONLY" = 1 ]; then log "done (core only) in $(( $(date +%s) - t0 )) s"; exit 0; fi

# mmcv 2.1.0 has no wheel for torch 2.14: build it from the source release with its C++ ops, once per
# (mmcv, torch, python) and keep the wheel in the cache so later setups only install it.
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; from mmcv.ops import nms" >/dev/null 2>&1; then
  key=$("$VENV/bin/python" -c "import torch, sys; print(f'torch{torch.__version__.split(\"+\")[0]}-py{sys.version_info.major}{sys.version_info.minor}')")
  wheel_dir="$CACHE/wheels/mmcv-$MMCV_VERSION-$key"
  if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION with ops for $key (about 10 min on 2 cores; cached afterwards)"
    build=$(mktemp -d)
    sdist="$CACHE/src/mmcv-$MMCV_VERSION.tar.gz"
    if [ ! -f "$sdist" ] || ! echo "$MMCV_SHA256  $sdist" | sha256sum -c --quiet; then
      mkdir -p "$CACHE/src"
      "$VENV/bin/python" -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" \
        "$MMCV_URL" "$sdist"
    fi
    echo "$MMCV_SHA256  $sdist" | sha256sum -c --quiet
    tar -xzf "$sdist" -C "$build"
    # torch 2.14's headers refuse anything older than C++20
    sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$build/mmcv-$MMCV_VERSION/setup.py"
    grep -q 'std=c++20' "$build/mmcv-$MMCV_VERSION/setup.py"
    pipi addict yapf packaging
    (cd "$build/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$build/wheel" .)
    mkdir -p "$wheel_dir"
    cp "$build"/wheel/mmcv-*.whl "$wheel_dir/"
    rm -rf "$build"
  else
    log "using cached mmcv wheel from $wheel_dir"
  fi
  "${PIP[@]}" install -q --no-deps --force-reinstall "$wheel_dir"/mmcv-*.whl
fi

stamp_mm="$VENV/.linattn_mm_$(sha256sum "$CONSTRAINTS" | cut -c1-16)"
if [ ! -f "$stamp_mm" ]; then
  log "installing mmengine, mmdet, mmsegmentation"
  pipi addict yapf packaging rich termcolor mmengine mmdet mmsegmentation pycocotools ftfy regex \
    shapely scipy terminaltables prettytable tqdm six
  "$VENV/bin/python" -c "import mmcv.ops, mmdet.models, mmseg.models" >/dev/null
  touch "$stamp_mm"
else
  log "mm stack already installed"
fi
log "done in $(( $(date +%s) - t0 )) s; activate with: source $VENV/bin/activate"
