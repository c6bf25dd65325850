#!/usr/bin/env bash
# Cascaded diffusion vs a base model at the final resolution on Fashion-MNIST (32x32), with the same
# number of optimizer steps in all: the 32x32 denoiser gets STEPS, the cascade's 16x16 base and its
# 16 -> 32 upsampler STEPS/2 each. Then the upsampler's PSNR and consistency on the validation split,
# and sweeps of cfg (32x32 base) vs cascade at each sampling-time augmentation level.
#   bash scripts/cascade_study.sh
# Environment: ROOT (default runs/study/cascade), PYTHON, STEPS (default 1500), AUG_LEVELS (default
# "0 0.05 0.1 0.2 0.3"), NUM_SAMPLES, EVALUATOR_EPOCHS (default 5), FIT_ARGS, NO_WANDB=1, SWEEP_ARGS,
# FITS_ONLY=1 (train, skip the evaluation).
set -euo pipefail
root=${ROOT:-runs/study/cascade}
steps=${STEPS:-1500}
samples=${NUM_SAMPLES:-500}
read -r -a aug_levels <<< "${AUG_LEVELS:-0 0.05 0.1 0.2 0.3}"
source "$(dirname "$0")/fit.sh"

fit base32 fashion_mnist denoiser --trainer.max_epochs -1 --trainer.max_steps "$steps"
fit base16 fashion_mnist denoiser16 --trainer.max_epochs -1 --trainer.max_steps $((steps / 2))
fit upsampler fashion_mnist upsampler --trainer.max_epochs -1 --trainer.max_steps $((steps / 2))
fit evaluator fashion_mnist evaluator --trainer.max_epochs "${EVALUATOR_EPOCHS:-5}"
test_evaluator fashion_mnist
[ "${FITS_ONLY:-0}" = 1 ] && exit 0
for aug in 0 0.1; do
  "$python" -m lightning_diffusion upsampler-fidelity "$root/upsampler/checkpoints/last.ckpt" --aug_level "$aug" \
    | tee "$root/upsampler_fidelity_aug$aug.json"
done
methods='[cfg,cascade]'
for aug in "${aug_levels[@]}"; do
  "$python" evaluate.py --config configs/fashion_mnist/cascade_sweep.yaml --out "$root/sweep_aug$aug" \
    --num_samples "$samples" --methods "$methods" --aug_level "$aug" \
    --denoiser "$root/base32/checkpoints/last.ckpt" --evaluator "$root/evaluator/checkpoints/last.ckpt" \
    --cascade "[$root/base16/checkpoints/last.ckpt,$root/upsampler/checkpoints/last.ckpt]" "${sweep_args[@]}"
  methods='[cascade]'  # the 32x32 base does not depend on the augmentation level: sweep it once
done
