#!/usr/bin/env bash
# The GPU speed targets of the op, the DAT backbones, Deformable DETR and DINO, measured in one go
# on one CUDA device, each against its peer in the same run. Writes OUT_DIR/*.json|log.
#
#   bash tools/analysis_tools/gpu_targets.sh [OUT_DIR]      # default work_dirs/gpu_targets
#
# The peers are mmcv's compiled CUDA op (multi-scale deformable attention, used by mmdet's
# DeformableDETR and DINO), timm's Swin-T and mmdet's ResNet-50 (for the DAT backbones). mmcv
# must be built with its CUDA ops for the op, Deformable DETR and DINO to have a peer, e.g.
#   MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
#     pip install --no-build-isolation mmcv==2.1.0
# Without mmcv the op benchmark still times dat_det's backends (no ratio), and the detector
# comparison is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-work_dirs/gpu_targets}
PY=${PY:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "error: no CUDA device visible to torch; these targets are GPU measurements" >&2
    exit 2
fi
mkdir -p "$OUT_DIR"
has_mmcv_cuda=0
if "$PY" -c 'import sys; from mmcv.ops import get_compiling_cuda_version as v
sys.exit(0 if v() != "not available" else 1)' 2>/dev/null; then
    has_mmcv_cuda=1
else
    echo "[gpu-targets] warning: mmcv is missing or built without CUDA ops; no mmcv peer" >&2
fi

echo "[gpu-targets] 1/4 op: encoder and decoder shapes, fp32 and bf16 (target: fwd+bwd at the"
echo "              encoder shape >= 3x mmcv in fp32, >= 4x in bf16; fwd <= 0.25 ms)"
for dtype in float32 bfloat16; do
    "$PY" tools/analysis_tools/benchmark_msda.py --device cuda --dtype "$dtype" \
        --json "$OUT_DIR/msda_$dtype.json" | tee "$OUT_DIR/msda_$dtype.log"
done

echo "[gpu-targets] 2/4 DAT-T and DAT++-T against timm's Swin-T and mmdet's ResNet-50, batch 1:"
echo "              inference 800x1333 and its peak memory, training step 512x512 (target:"
echo "              DAT-T and DAT++-T within 1.5x of Swin-T's times, 2x of its memory)"
"$PY" tools/analysis_tools/benchmark_backbone.py --device cuda \
    --profile-dir "$OUT_DIR/backbone_peers_profiles" --json "$OUT_DIR/backbone_peers.json" \
    | tee "$OUT_DIR/backbone_peers.log"

echo "[gpu-targets] 3/4 Deformable DETR R50 training iteration, 800x1333, batch 2"
echo "              (target: >= 1.5x faster than mmdet's DeformableDETR on mmcv's CUDA op)"
if [[ $has_mmcv_cuda == 1 ]]; then
    "$PY" tools/analysis_tools/benchmark.py \
        configs/deformable_detr/deformable-detr_r50_16xb2-50e_coco.py --device cuda \
        --compare --train --batch-size 2 --img-size 800 1333 \
        | tee "$OUT_DIR/deformable_detr_r50.log"
else
    echo "[gpu-targets] skipped: needs mmcv with its CUDA ops (see the top of this script)"
fi
echo "[gpu-targets] 4/4 DINO-4scale R50 training iteration, 800x1333, batch 2 (target: >= 1.5x"
echo "              faster than mmdet's DINO on mmcv's CUDA op), then ours under bf16 autocast"
echo "              (mmcv's op has no bf16): the step must run with a finite loss"
if [[ $has_mmcv_cuda == 1 ]]; then
    "$PY" tools/analysis_tools/benchmark.py configs/dino/dino-4scale_r50_8xb2-12e_coco.py \
        --device cuda --compare --train --batch-size 2 --img-size 800 1333 \
        | tee "$OUT_DIR/dino_r50.log"
else
    echo "[gpu-targets] skipped the comparison: needs mmcv with its CUDA ops"
fi
"$PY" tools/analysis_tools/benchmark.py configs/dino/dino-4scale_r50_8xb2-12e_coco.py \
    --device cuda --train --bf16 --batch-size 2 --img-size 800 1333 \
    | tee "$OUT_DIR/dino_r50_bf16.log"
echo "[gpu-targets] results in $OUT_DIR"
