#!/usr/bin/env bash
# The GLIDE comparison on procedural shapes (16x16): train the text-conditional denoiser, two noise-aware
# contrastive encoders (seed 0 guides, seed 1 scores) and the attribute evaluator, then sweep
# classifier-free guidance vs CLIP guidance on seen and on held-out colour-shape combinations.
#   bash scripts/glide_study.sh
# Environment: ROOT (default runs/study/shapes), PYTHON, NUM_SAMPLES, DENOISER_STEPS and CLIP_STEPS
# (optimizer steps: budgets that do not depend on what else runs on the machine), FIT_ARGS,
# NO_WANDB=1, SWEEP_ARGS (as in guidance_study.sh), FITS_ONLY=1 (train, skip the sweeps).
set -euo pipefail
root=${ROOT:-runs/study/shapes}
denoiser_steps=${DENOISER_STEPS:-3000}
clip_steps=${CLIP_STEPS:-1500}
samples=${NUM_SAMPLES:-500}
source "$(dirname "$0")/fit.sh"

fit denoiser shapes denoiser --trainer.max_epochs -1 --trainer.max_steps "$denoiser_steps"
fit contrastive_encoder shapes contrastive_encoder --trainer.max_epochs -1 --trainer.max_steps "$clip_steps"
fit clip_scorer shapes contrastive_encoder --seed_everything 1 --trainer.max_epochs -1 \
  --trainer.max_steps "$clip_steps"
fit evaluator shapes evaluator
test_evaluator shapes
[ "${FITS_ONLY:-0}" = 1 ] && exit 0
held_out='{"class_path": "lightning_diffusion.data.Shapes", "init_args": {"image_size": 16, "combinations": "held_out"}}'
for split in seen held_out; do
  source_args=()
  [ "$split" = held_out ] && source_args=(--source "$held_out")
  "$python" evaluate.py --config configs/shapes/sweep.yaml --out "$root/sweep_$split" --num_samples "$samples" \
    --denoiser "$root/denoiser/checkpoints/last.ckpt" --evaluator "$root/evaluator/checkpoints/last.ckpt" \
    --contrastive "$root/contrastive_encoder/checkpoints/last.ckpt" \
    --clip_scorer "$root/clip_scorer/checkpoints/last.ckpt" "${source_args[@]}" "${sweep_args[@]}"
done
