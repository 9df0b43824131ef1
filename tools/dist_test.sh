#!/usr/bin/env bash
# Multi-GPU testing on one or more nodes with torchrun (PyTorch DDP).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on every node.
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}

cd "$(dirname "$0")/.."
# the repository root on the path lets configs import `projects.*` through custom_imports
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    tools/test.py "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
