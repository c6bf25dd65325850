#!/usr/bin/env bash
# Guidance distillation study on Fashion-MNIST (Meng et al. 2023) on a CPU budget: the CFG teacher, its
# stage-1 student (the scale as a condition, one pass per step) and stage-2 progressive rounds (16, 8, 4
# DDIM steps), in one sweep table (sweep.csv: FID, class accuracy, recall, NFE, seconds per row) with the
# training cost of each model next to the teacher's (training_cost.csv).
#   bash scripts/distill_study.sh                   # about 40 minutes on 2 CPU cores
# Rows: cfg_10/cfg_20 (the teacher with its best sampler, UniPC on the log-SNR grid, at 10 and 20 steps:
# 20 and 40 network passes at s > 1), distilled_10/distilled_20 (the stage-1 student, same sampler and
# steps: 10 and 20 passes), progressive_8 and progressive_4 (stage-2 rounds, DDIM at their own steps);
# scales 1, 2, 3, 5 everywhere, the same noise for every row (seed 0).
# Environment: ROOT (default runs/study/distill), PYTHON, NUM_SAMPLES, NUM_REAL, TEACHER_TIME, DISTILL_TIME and
# ROUND_TIME (DD:HH:MM:SS), FIT_ARGS (extra train.py options for every fit), NO_WANDB=1, SWEEP_ARGS.
set -euo pipefail
data=fashion_mnist
root=${ROOT:-runs/study/distill}
teacher_time=${TEACHER_TIME:-00:00:10:00}
distill_time=${DISTILL_TIME:-00:00:05:00}
round_time=${ROUND_TIME:-00:00:02:00}
samples=${NUM_SAMPLES:-300}
num_real=${NUM_REAL:-1000}
mkdir -p "$root"

source "$(dirname "$0")/fit.sh"

cost="$root/training_cost.csv"
[ -f "$cost" ] || echo "model,seconds" > "$cost"
timed_fit() {  # timed_fit NAME CONFIG [overrides...]: fit once, and record its wall seconds
  local name=$1 start; start=$(date +%s)
  [ -f "$root/$name/checkpoints/last.ckpt" ] && { echo "reusing $root/$name"; return; }
  fit "$@"
  echo "$name,$(( $(date +%s) - start ))" >> "$cost"
}
ckpt() { echo "$root/$1/checkpoints/last.ckpt"; }

timed_fit teacher "$data" denoiser --trainer.max_epochs -1 --trainer.max_time "$teacher_time"
fit evaluator "$data" evaluator
timed_fit distilled "$data" distilled --model.init_args.teacher "$(ckpt teacher)" \
  --trainer.max_epochs -1 --trainer.max_time "$distill_time"
timed_fit progressive_16 "$data" distilled_progressive --model.init_args.teacher "$(ckpt distilled)" \
  --model.init_args.steps 16 --trainer.max_epochs -1 --trainer.max_time "$round_time"
timed_fit progressive_8 "$data" distilled_progressive --model.init_args.teacher "$(ckpt progressive_16)" \
  --model.init_args.steps null --trainer.max_epochs -1 --trainer.max_time "$round_time"
timed_fit progressive_4 "$data" distilled_progressive --model.init_args.teacher "$(ckpt progressive_8)" \
  --model.init_args.steps null --trainer.max_epochs -1 --trainer.max_time "$round_time"

sweep() {  # sweep STUDENT METHODS SAMPLER...: rows into the one table $root/sweep (finished rows are kept)
  local student=$1 methods=$2; shift 2
  "$python" evaluate.py --out "$root/sweep" --denoiser "$(ckpt teacher)" --evaluator "$(ckpt evaluator)" \
    --student "$(ckpt "$student")" --methods "$methods" --scales '[1, 2, 3, 5]' --num_samples "$samples" \
    --batch_size 100 --num_real "$num_real" --real_split test --seed 0 "$@" "${sweep_args[@]}"
}
best=(--sampler.name unipc --sampler.grid logsnr --sampler.sigma_max 80 --sampler.sigma_min 0.05)
for steps in 10 20; do
  sweep distilled "[{method: cfg, label: cfg_$steps}, {method: distilled, label: distilled_$steps}]" \
    "${best[@]}" --sampler.steps "$steps"
done
for steps in 8 4; do
  sweep "progressive_$steps" "[{method: distilled, label: progressive_$steps}]" \
    --sampler.name ddim --sampler.steps "$steps"
done
echo "sweep table: $root/sweep/sweep.csv; training cost: $cost"
cat "$root/sweep/sweep.csv" "$cost"
