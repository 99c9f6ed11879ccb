#!/usr/bin/env bash
# The README's first command: from a fresh clone to trained FLatten / Agent models, their metrics and pictures.
#
#   bash tools/run_demo.sh                 # setup, demo data, detection + segmentation + classification
#
# 1. tools/setup_env.sh (idempotent) installs .venv with the whole stack;
# 2. tools/make_demo_data.py writes the bundled demo data (COCO, ADE20K and ImageFolder layouts) unless cached;
# 3. for each task, tools/train.py trains a small model from scratch (mmengine log lines with ETA) and tools/test.py
#    evaluates it (a progress bar, then bbox mAP / mIoU / top-1), drawing predictions with mmdet's / mmseg's
#    visualizers (--show-dir);
# 4. tools/plot_curves.py draws the loss and metric curves; a summary lists metrics, pictures and curves.
# The same command uses the GPU where there is one (nothing here or in configs/demo names a device).
#
# Options (or the environment variables in brackets):
#   --quick              tiny data and a few iterations, to check the pipeline end to end   [DEMO_QUICK=1]
#   --tasks "det seg cls"  which demos to run, in this order                                [DEMO_TASKS]
#   --work-dir DIR       where models, logs, pictures and curves go (work_dirs/demo)        [DEMO_WORK_DIR]
#   --data DIR           demo data root (data/demo; data/demo_quick with --quick)           [DEMO_DATA]
#   --skip-setup         do not run tools/setup_env.sh                                      [DEMO_SKIP_SETUP=1]
#   --tensorboard        also log to TensorBoard (needs the tensorboard package)           [DEMO_TENSORBOARD=1]
#   --cfg-options ...    passed on to every tools/train.py and tools/test.py call (must come last)
# [DEMO_PYTHON] the interpreter to use (default: the venv's, ${LINATTN_VENV:-.venv}/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=${DEMO_QUICK:-0}
TASKS=${DEMO_TASKS:-det seg cls}
WORK=${DEMO_WORK_DIR:-}
DATA=${DEMO_DATA:-}
SKIP_SETUP=${DEMO_SKIP_SETUP:-0}
TENSORBOARD=${DEMO_TENSORBOARD:-0}
EXTRA_CFG=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --tasks) TASKS=$2; shift ;;
    --work-dir) WORK=$2; shift ;;
    --data) DATA=$2; shift ;;
    --skip-setup) SKIP_SETUP=1 ;;
    --tensorboard) TENSORBOARD=1 ;;
    --cfg-options) shift; EXTRA_CFG=("$@"); break ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_demo.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for task in $TASKS; do
  case "$task" in det|seg|cls) ;; *) echo "run_demo.sh: error: unknown task '$task' (det, seg, cls)" >&2; exit 2 ;; esac
done
if [ "$QUICK" = 1 ]; then
  WORK=${WORK:-work_dirs/demo_quick}
  DATA=${DATA:-data/demo_quick}
else
  WORK=${WORK:-work_dirs/demo}
  DATA=${DATA:-data/demo}
fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
export LINATTN_DEMO_DATA=$DATA  # configs/demo read their data root from it
export PYTHONUNBUFFERED=1

log() { printf '\n[demo %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
T0=$(date +%s)
STAGE_TIMES=()
stage_done() { STAGE_TIMES+=("$1: $(( $(date +%s) - $2 )) s"); }

# ---- 1. environment ------------------------------------------------------------------------------------------------
t=$(date +%s)
if [ "$SKIP_SETUP" != 1 ]; then
  log "setting up the environment (tools/setup_env.sh; quick when already installed)"
  bash tools/setup_env.sh
fi
PY=${DEMO_PYTHON:-${LINATTN_VENV:-$ROOT/.venv}/bin/python}
if [ ! -x "$PY" ] && ! command -v "$PY" >/dev/null; then
  echo "run_demo.sh: error: no Python at $PY; run tools/setup_env.sh or set DEMO_PYTHON" >&2
  exit 2
fi
stage_done setup "$t"

# ---- 2. data -------------------------------------------------------------------------------------------------------
t=$(date +%s)
log "demo data under $DATA (generated once, then reused)"
DATA_ARGS=()
[ "$QUICK" = 1 ] && DATA_ARGS=(--num-train 24 --num-val 12)
tasks_data=()
for task in $TASKS; do
  case "$task" in det) tasks_data+=(coco) ;; seg) tasks_data+=(ade) ;; cls) tasks_data+=(imagenet) ;; esac
done
"$PY" tools/make_demo_data.py --out "$DATA" --tasks "${tasks_data[@]}" "${DATA_ARGS[@]}"
stage_done data "$t"

# ---- 3. train + test -----------------------------------------------------------------------------------------------
config_of() {
  case "$1" in
    det) echo configs/demo/retinanet_flatten-pvt-demo_shapes-coco.py ;;
    seg) echo configs/demo/fpn_agent-pvt-demo_shapes-ade.py ;;
    cls) echo configs/demo/flatten-pvt-demo_shapes-imagefolder.py ;;
  esac
}
title_of() {
  case "$1" in
    det) echo "detection: RetinaNet on a small FLatten-PVT (demo COCO)" ;;
    seg) echo "segmentation: Semantic FPN on a small Agent-PVT (demo ADE20K)" ;;
    cls) echo "classification: a small FLatten-PVT (demo ImageFolder)" ;;
  esac
}
# a few iterations of everything, to check the pipeline end to end
quick_options() {
  case "$1" in
    det) echo train_cfg.max_epochs=2 train_cfg.val_interval=1 default_hooks.logger.interval=1 \
              log_processor.window_size=1 model.test_cfg.score_thr=0.0 ;;
    seg) echo train_cfg.max_iters=4 train_cfg.val_interval=2 default_hooks.logger.interval=1 \
              log_processor.window_size=1 ;;
    cls) echo train_cfg.max_epochs=2 train_cfg.val_interval=1 train_dataloader.batch_size=8 \
              default_hooks.logger.interval=1 log_processor.window_size=1 ;;
  esac
}
# TensorBoard next to the JSON scalars: --cfg-options cannot append a dict to a list (mmengine's DictAction parses
# scalars only), so a two-line config derived from the demo config adds the backend
TENSORBOARD_OK=0
if [ "$TENSORBOARD" = 1 ]; then
  if "$PY" -c "import tensorboard" 2>/dev/null; then
    TENSORBOARD_OK=1
  else
    echo "run_demo.sh: --tensorboard needs the tensorboard package (pip install tensorboard); logging JSON only" >&2
  fi
fi
with_tensorboard() {  # config work_dir -> derived config path
  local derived="$2/$(basename "$1" .py)_tensorboard.py"
  mkdir -p "$2"
  local backends="[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]"
  printf "_base_ = '%s'\nvisualizer = dict(vis_backends=%s)\n" "$ROOT/$1" "$backends" > "$derived"
  echo "$derived"
}

for task in $TASKS; do
  config=$(config_of "$task")
  wd=$WORK/$task
  [ "$TENSORBOARD_OK" = 1 ] && config=$(with_tensorboard "$config" "$wd")
  t=$(date +%s)
  log "training $(title_of "$task")"
  # the same overrides for training and evaluation (training-only keys do not matter to tools/test.py)
  options=()
  [ "$QUICK" = 1 ] && read -r -a options <<< "$(quick_options "$task")"
  options+=("${EXTRA_CFG[@]}")
  cfg_options=()
  [ ${#options[@]} -gt 0 ] && cfg_options=(--cfg-options "${options[@]}")
  "$PY" tools/train.py "$config" --work-dir "$wd" "${cfg_options[@]}"
  stage_done "$task train" "$t"

  t=$(date +%s)
  checkpoint=$(cat "$wd/last_checkpoint")
  log "evaluating $checkpoint"
  case "$task" in
    det) "$PY" tools/test.py "$config" "$checkpoint" --work-dir "$wd" --show-dir pictures "${cfg_options[@]}" ;;
    seg) "$PY" tools/test.py "$config" "$checkpoint" --work-dir "$wd" --show-dir "$wd/pictures" "${cfg_options[@]}" ;;
    cls) "$PY" tools/test.py "$config" "$checkpoint" --work-dir "$wd" "${cfg_options[@]}"
         "$PY" tools/show_cls_predictions.py "$config" "$checkpoint" --out "$wd/pictures/predictions.png" \
           "${cfg_options[@]}" ;;
  esac
  stage_done "$task test" "$t"
done

# ---- 4. curves and summary -----------------------------------------------------------------------------------------
t=$(date +%s)
log "plotting loss and metric curves"
work_dirs=()
for task in $TASKS; do work_dirs+=("$WORK/$task"); done
"$PY" tools/plot_curves.py "${work_dirs[@]}"
stage_done curves "$t"

log "summary"
DEMO_STAGE_TIMES=$(printf '%s\n' "${STAGE_TIMES[@]}") DEMO_TOTAL=$(( $(date +%s) - T0 )) \
  "$PY" - "$WORK" $TASKS <<'EOF'
import glob, json, os, os.path as osp, sys

work, tasks = sys.argv[1], sys.argv[2:]
main_metrics = {'det': ['coco/bbox_mAP', 'coco/bbox_mAP_50'], 'seg': ['mIoU', 'mAcc', 'aAcc'],
                'cls': ['accuracy/top1', 'accuracy/top2']}
for task in tasks:
    wd = osp.join(work, task)
    runs = sorted(d for d in glob.glob(osp.join(wd, '2*')) if osp.isdir(d))
    # the test run is the newest one whose log json holds no training records
    metrics = {}
    for run in reversed(runs):
        path = osp.join(run, osp.basename(run) + '.json')
        if osp.isfile(path) and not osp.isfile(osp.join(run, 'vis_data', 'scalars.json')):
            with open(path) as f:
                metrics = json.loads(f.readline())
            break
    shown = ', '.join(f'{k} {metrics[k]:.4g}' for k in main_metrics[task] if k in metrics) or 'no test metrics found'
    print(f'{task}: {shown}')
    pictures = sorted(glob.glob(osp.join(wd, '**', '*.png'), recursive=True)
                      + glob.glob(osp.join(wd, '**', 'pictures', '*.jpg'), recursive=True))
    pictures = [p for p in pictures if not p.endswith('_curve.png')]
    if pictures:
        folders = sorted({osp.dirname(p) for p in pictures})
        print(f'  pictures: {len(pictures)} in {", ".join(folders)}')
    for curve in sorted(glob.glob(osp.join(wd, '*_curve.png'))):
        print(f'  curve:    {curve}')
print('stage times: ' + '; '.join(os.environ['DEMO_STAGE_TIMES'].splitlines()))
print(f'total: {os.environ["DEMO_TOTAL"]} s; everything is under {work}')
EOF
