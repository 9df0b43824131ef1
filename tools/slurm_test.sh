#!/usr/bin/env bash
# Testing on a slurm cluster, one task per GPU (PyTorch DDP through srun).
#   GPUS=16 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
PYTHON=${PYTHON:-python}

cd "$(dirname "$0")/.."
# the repository root on the path lets configs import `projects.*` through custom_imports
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 $SRUN_ARGS \
    "$PYTHON" -u tools/test.py "$CONFIG" "$CHECKPOINT" --launcher slurm "$@"
