#!/usr/bin/env bash
# Train every component a guidance sweep needs (denoiser, a weaker guide for autoguidance, noisy
# classifier, evaluator), report the evaluator's test accuracy, then run configs/<data>/sweep.yaml.
# Denoisers train on fixed time budgets; finished components are reused on a re-run.
#   bash scripts/guidance_study.sh digits           # about 20 minutes on 2 CPU cores
#   bash scripts/guidance_study.sh fashion_mnist    # about 50 minutes on 2 CPU cores
# Environment: ROOT (output folder, default runs/study/<data>), PYTHON, NUM_SAMPLES, DENOISER_TIME and
# GUIDE_TIME (DD:HH:MM:SS), FIT_ARGS (extra train.py options for every fit, e.g. for a GPU),
# NO_WANDB=1 (train and sweep without W&B), SWEEP_ARGS (extra evaluate.py options).
set -euo pipefail
data=${1:-digits}
root=${ROOT:-runs/study/$data}
case $data in
  digits) denoiser_time=00:00:04:00; guide_time=00:00:00:20; samples=500 ;;
  fashion_mnist) denoiser_time=00:00:10:00; guide_time=00:00:01:00; samples=300 ;;
  *) echo "unknown data set '$data': use digits or fashion_mnist" >&2; exit 2 ;;
esac
denoiser_time=${DENOISER_TIME:-$denoiser_time}
guide_time=${GUIDE_TIME:-$guide_time}
samples=${NUM_SAMPLES:-$samples}

source "$(dirname "$0")/fit.sh"

fit denoiser "$data" denoiser --trainer.max_epochs -1 --trainer.max_time "$denoiser_time"
fit guide "$data" denoiser --trainer.max_epochs -1 --trainer.max_time "$guide_time" \
  --budget.min_steps 0  # a deliberately weak guide: no step minimum
fit noisy_classifier "$data" noisy_classifier
fit evaluator "$data" evaluator
test_evaluator "$data"
"$python" evaluate.py --config "configs/$data/sweep.yaml" --out "$root/sweep" --num_samples "$samples" \
  --denoiser "$root/denoiser/checkpoints/last.ckpt" --guide "$root/guide/checkpoints/last.ckpt" \
  --classifier "$root/noisy_classifier/checkpoints/last.ckpt" \
  --evaluator "$root/evaluator/checkpoints/last.ckpt" "${sweep_args[@]}"
