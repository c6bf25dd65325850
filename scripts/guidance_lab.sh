#!/usr/bin/env bash
# The guidance lab: train what the methods need on CPU budgets, then sweep every method in one evaluate.py call.
#   bash scripts/guidance_lab.sh fashion_mnist   # 13 method rows (configs/fashion_mnist/lab_sweep.yaml)
#   bash scripts/guidance_lab.sh shapes          # the fair GLIDE table and the composition rows
# fashion_mnist trains the denoiser, a weaker guide (autoguidance), the noisy classifier and the evaluator.
# shapes trains the text denoiser, two contrastive encoders (seed 0 guides, seed 1 scores) and the evaluator;
# it picks clip_interval's interval on the held-out val split (configs/shapes/interval_selection.yaml, best
# attribute accuracy), sweeps cfg vs clip vs clip_interval on the test split for each seed in SEEDS, then
# composes two captions (AND) and a negative one (NOT) with composed_cfg next to cfg on the scene caption.
# Environment: ROOT (default runs/lab/<data>), PYTHON, NUM_SAMPLES, SEEDS (default "0 1"), DENOISER_TIME,
# GUIDE_TIME, DENOISER_STEPS, CLIP_STEPS, FIT_ARGS, NO_WANDB=1, SWEEP_ARGS (as in guidance_study.sh).
set -euo pipefail
data=${1:-fashion_mnist}
root=${ROOT:-runs/lab/$data}
source "$(dirname "$0")/fit.sh"
ckpt() { echo "$root/$1/checkpoints/last.ckpt"; }

case $data in
  fashion_mnist)
    fit denoiser fashion_mnist denoiser --trainer.max_epochs -1 --trainer.max_time "${DENOISER_TIME:-00:00:10:00}"
    fit guide fashion_mnist denoiser --trainer.max_epochs -1 --trainer.max_time "${GUIDE_TIME:-00:00:01:00}" \
      --budget.min_steps 0  # a deliberately weak guide: no step minimum
    fit noisy_classifier fashion_mnist noisy_classifier --trainer.max_epochs -1 --trainer.max_time 00:00:06:00
    fit evaluator fashion_mnist evaluator --trainer.max_epochs 3
    "$python" evaluate.py --config configs/fashion_mnist/lab_sweep.yaml --out "$root/lab" \
      --num_samples "${NUM_SAMPLES:-200}" --denoiser "$(ckpt denoiser)" --guide "$(ckpt guide)" \
      --classifier "$(ckpt noisy_classifier)" --evaluator "$(ckpt evaluator)" "${sweep_args[@]}"
    ;;
  shapes)
    samples=${NUM_SAMPLES:-300}
    fit denoiser shapes denoiser --trainer.max_epochs -1 --trainer.max_steps "${DENOISER_STEPS:-1500}"
    fit contrastive_encoder shapes contrastive_encoder --trainer.max_epochs -1 --trainer.max_steps "${CLIP_STEPS:-800}"
    fit clip_scorer shapes contrastive_encoder --seed_everything 1 --trainer.max_epochs -1 \
      --trainer.max_steps "${CLIP_STEPS:-800}"
    fit evaluator shapes evaluator --trainer.max_epochs -1 --trainer.max_time 00:00:04:00
    models=(--denoiser "$(ckpt denoiser)" --evaluator "$(ckpt evaluator)"
      --contrastive "$(ckpt contrastive_encoder)" --clip_scorer "$(ckpt clip_scorer)")
    "$python" evaluate.py --config configs/shapes/interval_selection.yaml --out "$root/interval_selection" \
      --num_samples "$samples" "${models[@]}" "${sweep_args[@]}"
    interval=$("$python" scripts/best_interval.py "$root/interval_selection/sweep.json")
    echo "clip_interval: interval $interval chosen on the val split"
    for seed in ${SEEDS:-0 1}; do
      "$python" evaluate.py --config configs/shapes/sweep.yaml --out "$root/glide_seed$seed" --seed "$seed" \
        --num_samples "$samples" --interval "$interval" "${models[@]}" "${sweep_args[@]}"
    done
    for mode in and not; do
      "$python" evaluate.py --config configs/shapes/compose_sweep.yaml --out "$root/compose_$mode" \
        --compose "$mode" --num_samples "$samples" "${models[@]}" "${sweep_args[@]}"
    done
    ;;
  *) echo "unknown data set '$data': use fashion_mnist or shapes" >&2; exit 2 ;;
esac
