#!/usr/bin/env bash
# The README's demo: train CONFIG on the generated shapes dataset, evaluate COCO bbox mAP on its
# val split, and draw detections. Called by `make demo` (which installs and generates the data).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/demo/dino-3scale_dat++-pico_shapes.py}
WORK_DIR=${WORK_DIR:-work_dirs/demo}
PY=${PY:-.venv/bin/python}
# Two training processes (PyTorch DDP over gloo, tools/dist_train.sh) of one compute thread
# each, batch 2 each: the config's total batch of 4. The model is so small that a step is
# mostly per-operator overhead, which a second process on the second core shares out (an
# iteration of 4 images took ~0.19 s instead of ~0.28 s in one process on 2 idle cores).
# NPROC=1 trains in one process (then also pass a batch of 4 to keep the recipe).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
NPROC=${NPROC:-2}
start=$(date +%s)
# mmengine writes each run's logs to a new WORK_DIR/<yyyymmdd_hhmmss> folder; an earlier
# (perhaps interrupted) run in the same work dir left its own, so this run's is the new one
log_dirs() { ls "$WORK_DIR" 2>/dev/null | grep -E '^[0-9]{8}_[0-9]{6}$' | sort || true; }
earlier_logs=$(log_dirs)

echo "[demo] training $CONFIG (work dir $WORK_DIR)"
# TRAIN_ARGS: more tools/train.py arguments, e.g. another schedule:
#   TRAIN_ARGS="--cfg-options train_cfg.max_epochs=26 param_scheduler.1.end=26"
# shellcheck disable=SC2086  # TRAIN_ARGS is split into arguments on purpose
PYTHON="$PY" bash tools/dist_train.sh "$CONFIG" "$NPROC" --work-dir "$WORK_DIR" ${TRAIN_ARGS:-}
checkpoint=$(cat "$WORK_DIR/last_checkpoint")
train_logs=$(comm -13 <(echo "$earlier_logs") <(log_dirs) | tail -n 1)

echo "[demo] evaluating $checkpoint on the val split"
"$PY" tools/test.py "$CONFIG" "$checkpoint" --work-dir "$WORK_DIR/test" --show-dir vis \
    | tee "$WORK_DIR/test.log"
vis_dir=$(ls -td "$WORK_DIR"/test/*/vis | head -n 1)
"$PY" tools/misc/tile_images.py "$vis_dir" "$WORK_DIR/detections.png" --num 6

echo "[demo] drawing where deformable attention samples"
"$PY" tools/analysis_tools/visualize_deformable.py "$CONFIG" "$checkpoint" data/shapes/val/000002.jpg \
    --out-dir "$WORK_DIR/deformable" --top-k 3 || echo "[demo] (no deformable attention to draw)"

metrics=$(ls -t "$WORK_DIR"/test/*/*.json | head -n 1)
echo
echo "[demo] done in $(( $(date +%s) - start ))s"
echo "[demo] bbox mAP (val):  $("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['coco/bbox_mAP'])" "$metrics")"
echo "[demo] checkpoint:      $checkpoint"
echo "[demo] training logs:   $([[ -n $train_logs ]] && echo "$WORK_DIR/$train_logs" || echo 'none written')"
echo "[demo] test metrics:    $metrics"
echo "[demo] detections:      $WORK_DIR/detections.png (left: ground truth, right: predictions)"
echo "[demo] sampling points: $WORK_DIR/deformable/"
