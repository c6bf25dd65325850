#!/usr/bin/env bash
# The DALL-E 2 (unCLIP) study on one data set (DATA=shapes or fashion_mnist): train the two contrastive
# encoders (seed 0 embeds and guides, seed 1 scores), the GLIDE-style text denoiser, the evaluator, the
# unCLIP decoder and the prior; then measure the prior against baselines without one, draw image
# variations, and sweep unCLIP against the text denoiser on one table.
#   bash scripts/unclip_study.sh                     # shapes (16x16)
#   DATA=fashion_mnist bash scripts/unclip_study.sh  # captioned Fashion-MNIST (32x32)
# Environment: ROOT (default runs/study/$DATA), PYTHON, NUM_SAMPLES, optimizer-step budgets DENOISER_STEPS
# (text denoiser and decoder alike), CLIP_STEPS, PRIOR_STEPS; FIT_ARGS, NO_WANDB=1, SWEEP_ARGS,
# FITS_ONLY=1 (train, skip the evaluation).
set -euo pipefail
data=${DATA:-shapes}
root=${ROOT:-runs/study/$data}
denoiser_steps=${DENOISER_STEPS:-3000}
clip_steps=${CLIP_STEPS:-1500}
prior_steps=${PRIOR_STEPS:-3000}
samples=${NUM_SAMPLES:-500}
variation_args=()
source "$(dirname "$0")/fit.sh"
[ "${NO_WANDB:-0}" = 1 ] && variation_args+=(--no_wandb)
case "$data" in
  shapes) text_config=denoiser ;;
  fashion_mnist) text_config=text_denoiser ;;
  *) echo "DATA must be shapes or fashion_mnist, got $data" >&2; exit 2 ;;
esac
steps=(--trainer.max_epochs -1 --trainer.max_steps)
encoder="$root/contrastive_encoder/checkpoints/last.ckpt"

fit contrastive_encoder "$data" contrastive_encoder "${steps[@]}" "$clip_steps"
fit clip_scorer "$data" contrastive_encoder --seed_everything 1 "${steps[@]}" "$clip_steps"
fit denoiser "$data" "$text_config" "${steps[@]}" "$denoiser_steps"
fit evaluator "$data" evaluator
test_evaluator "$data"
fit unclip_decoder "$data" unclip_decoder --model.init_args.encoder "$encoder" "${steps[@]}" "$denoiser_steps"
fit prior "$data" prior --model.init_args.encoder "$encoder" "${steps[@]}" "$prior_steps"
[ "${FITS_ONLY:-0}" = 1 ] && exit 0
"$python" -m lightning_diffusion prior-quality "$root/prior/checkpoints/last.ckpt" --scales 1 3 \
  --candidates 1 2 4 --sampler.steps 25 --out "$root/prior_quality.json"
"$python" -m lightning_diffusion variations "$root/unclip_decoder/checkpoints/last.ckpt" --scale 3 \
  --sampler.steps 25 "${variation_args[@]}"
"$python" evaluate.py --config "configs/$data/unclip_sweep.yaml" --out "$root/unclip_sweep" \
  --num_samples "$samples" --denoiser "$root/denoiser/checkpoints/last.ckpt" \
  --evaluator "$root/evaluator/checkpoints/last.ckpt" --clip_scorer "$root/clip_scorer/checkpoints/last.ckpt" \
  --unclip "[$root/prior/checkpoints/last.ckpt, $root/unclip_decoder/checkpoints/last.ckpt]" "${sweep_args[@]}"
