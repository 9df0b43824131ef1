#!/usr/bin/env bash
# Every CPU figure of docs/benchmarks.md, in the order of that page, each against its peer
# measured in the same run. Writes OUT_DIR/<step>.log (and .json where the tool writes one).
#
#   bash tools/analysis_tools/cpu_benchmarks.sh [OUT_DIR] [STEP ...]   # default work_dirs/cpu_benchmarks
#
# STEPs (default: all but compile): op backbone dat_attention ddetr dino dattention compile.
# On 2 idle cores the default steps take about fifteen minutes; `compile` (torch.compile against
# eager, Deformable DETR R50, one thread, with and without benchmark.py's Inductor options)
# about as long again. Run on an otherwise idle machine:
# the ratios hold under load better than the times, but not exactly.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-work_dirs/cpu_benchmarks}
shift || true
STEPS=("$@")
[[ ${#STEPS[@]} -gt 0 ]] || STEPS=(op backbone dat_attention ddetr dino dattention)
PY=${PY:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT_DIR"
BENCH=tools/analysis_tools
DDETR=configs/deformable_detr/deformable-detr_r50_16xb2-50e_coco.py
DINO=configs/dino/dino-4scale_r50_8xb2-12e_coco.py

run() {  # run NAME COMMAND...: echo the command, keep its output in OUT_DIR/NAME.log
    local name=$1
    shift
    echo "[cpu-benchmarks] $name: $*  (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    "$@" 2>&1 | tee "$OUT_DIR/$name.log"
}

for step in "${STEPS[@]}"; do
    case $step in
    op)
        run op_decoder "$PY" $BENCH/benchmark_msda.py --device cpu --shapes decoder --repeat 9 \
            --json "$OUT_DIR/op_decoder.json"
        run op_scale4 "$PY" $BENCH/benchmark_msda.py --device cpu --scale 4 --repeat 9 \
            --json "$OUT_DIR/op_scale4.json" ;;
    backbone)
        run backbone "$PY" $BENCH/benchmark_backbone.py --clock cpu --iters 3 --warmup 1 \
            --json "$OUT_DIR/backbone.json" ;;
    dat_attention)
        run dat_attention_dat-t_s3 "$PY" $BENCH/benchmark_dat_attention.py --arch dat-t --stage 3 --flex
        run dat_attention_datpp-t_s1 "$PY" $BENCH/benchmark_dat_attention.py --arch dat++-t --stage 1 --flex
        run dat_attention_datpp-t_s3 "$PY" $BENCH/benchmark_dat_attention.py --arch dat++-t --stage 3 --flex ;;
    ddetr)
        run ddetr_512 "$PY" $BENCH/benchmark.py $DDETR --compare --img-size 512 512 ;;
    dino)
        run dino_512 "$PY" $BENCH/benchmark.py $DINO --compare --warmup 2 --iters 8 --img-size 512 512
        run dino_320_train "$PY" $BENCH/benchmark.py $DINO --compare --warmup 2 --iters 8 \
            --img-size 320 320 --train ;;
    dattention)
        run dattention_cost "$PY" $BENCH/benchmark_dattention.py --threads 1 --clock cpu --iters 5 \
            --warmup 1 --json "$OUT_DIR/dattention_cost.json" ;;
    compile)
        OMP_NUM_THREADS=1 run compile_320_train "$PY" $BENCH/benchmark.py $DDETR --device cpu \
            --clock cpu --compile --threads 1 --img-size 320 320 --iters 2 --warmup 1 --train \
            --train-warmup 2 --train-iters 3 --profile "$OUT_DIR/compile_320_profile"
        OMP_NUM_THREADS=1 run compile_512 "$PY" $BENCH/benchmark.py $DDETR --device cpu \
            --clock cpu --compile --threads 1 --img-size 512 512 --iters 4 --warmup 2 \
            --profile "$OUT_DIR/compile_512_profile"
        # the same without the two Inductor options benchmark.py holds (freezing, fallback_random)
        OMP_NUM_THREADS=1 run compile_320_train_plain "$PY" $BENCH/benchmark.py $DDETR --device cpu \
            --clock cpu --compile --threads 1 --img-size 320 320 --iters 2 --warmup 1 --train \
            --train-warmup 2 --train-iters 3 --compile-options freezing=False fallback_random=False
        OMP_NUM_THREADS=1 run compile_512_plain "$PY" $BENCH/benchmark.py $DDETR --device cpu \
            --clock cpu --compile --threads 1 --img-size 512 512 --iters 4 --warmup 2 \
            --compile-options freezing=False fallback_random=False ;;
    *)
        echo "error: unknown step '$step' (op backbone dat_attention ddetr dino dattention compile)" >&2
        exit 2 ;;
    esac
done
echo "[cpu-benchmarks] results in $OUT_DIR (machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores)"
