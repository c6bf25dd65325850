#!/usr/bin/env bash
# The GPU check of issue 13: one table for the CIFAR-10 recipe's U-Net on one GPU, in under 8 minutes
# (training images/s eager vs compiled, Lightning Trainer.fit vs a plain loop; CFG sampling images/s
# at batch 1000; the recompiles; a sampling run under torch.cuda.set_sync_debug_mode("error"); peak
# memory). Exits non-zero when that sampling run synchronises.
#   scripts/gpu_check.sh            # on a GPU
#   scripts/gpu_check.sh --smoke    # the same code on the CPU with a tiny net (what tests run)
# PYTHON overrides the interpreter (default: .venv/bin/python when present, else python).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
export WANDB_MODE=${WANDB_MODE:-disabled}
exec timeout 480 "$python" benchmarks/gpu_check.py "$@"
