#!/usr/bin/env bash
# Post-hoc EMA study (Karras et al. 2024, EDM2 sec. 3): does the best EMA length move with the guidance scale
# on Fashion-MNIST? Trains the denoiser once with callbacks.PostHocEMA (configs/trainer/posthoc_ema.yaml:
# profiles sigma_rel 0.05 and 0.10, 16 snapshots over the run), a weak guide the same way (autoguidance,
# its own EMA length) and the evaluator; then sweeps sigma_rel x scale for cfg and autoguidance from the
# snapshots (each length rebuilt once, cached in <run>/posthoc_ema/reconstructed), and the same rows with the
# recipe's fixed EMA (EMAWeightAveraging 0.995, in last.ckpt) as the baseline. Prints the best length per
# (method, scale) and each frontier.csv (sigma_rel and scale chosen jointly per method).
#   bash scripts/ema_study.sh                       # the full study (CPU: about an hour of training)
# Environment: ROOT (default runs/ema_study), PYTHON, DENOISER_STEPS (4000), GUIDE_STEPS (600),
# EMA_LENGTHS, GUIDE_EMA_LENGTH (0.05), CFG_SCALES, AG_SCALES, NUM_SAMPLES (500), FIT_ARGS, NO_WANDB=1,
# SWEEP_ARGS (e.g. "--seed_sets 3" for intervals over seed sets, "--features inception").
set -euo pipefail
root=${ROOT:-runs/ema_study}
source "$(dirname "$0")/fit.sh"
ckpt() { echo "$root/$1/checkpoints/last.ckpt"; }
overlay=(--config configs/trainer/posthoc_ema.yaml --trainer.max_epochs -1)

fit denoiser fashion_mnist denoiser "${overlay[@]}" --trainer.max_steps "${DENOISER_STEPS:-4000}"
fit guide fashion_mnist denoiser "${overlay[@]}" --trainer.max_steps "${GUIDE_STEPS:-600}" \
  --budget.min_steps 0  # a deliberately weak guide: no step minimum
fit evaluator fashion_mnist evaluator --trainer.max_epochs 3

rows=(--config configs/fashion_mnist/sweep.yaml --methods '[cfg,autoguidance]'
  --scales "{cfg: ${CFG_SCALES:-[0.0,1.0,1.5,2.0,3.0,5.0]}, autoguidance: ${AG_SCALES:-[1.0,1.5,2.0,3.0]}}"
  --num_samples "${NUM_SAMPLES:-500}" --evaluator "$(ckpt evaluator)")
"$python" evaluate.py "${rows[@]}" --out "$root/posthoc" --denoiser "$root/denoiser/posthoc_ema" \
  --ema_lengths "${EMA_LENGTHS:-[0.025,0.05,0.075,0.1,0.15,0.2]}" \
  --guide "$root/guide/posthoc_ema" --guide_ema_length "${GUIDE_EMA_LENGTH:-0.05}" "${sweep_args[@]}"
"$python" evaluate.py "${rows[@]}" --out "$root/fixed_ema" --denoiser "$(ckpt denoiser)" \
  --guide "$(ckpt guide)" "${sweep_args[@]}"

"$python" - "$root" <<'EOF'
import json, sys
from pathlib import Path

root = Path(sys.argv[1])
rows = json.loads((root / "posthoc" / "sweep.json").read_text())
print("best EMA length (lowest FID) per method and scale:")
for method in dict.fromkeys(row["method"] for row in rows):
    for scale in sorted({row["scale"] for row in rows if row["method"] == method}):
        cell = [row for row in rows if (row["method"], row["scale"]) == (method, scale) and row["fid"] is not None]
        best = min(cell, key=lambda row: row["fid"])
        print(f"  {method} s={scale:g}: sigma_rel {best['ema']:g} (FID {best['fid']:.2f}, "
              f"accuracy {best['class_accuracy']}, recall {best['recall']})")
for name in ("posthoc", "fixed_ema"):
    print(f"{name}/frontier.csv:\n{(root / name / 'frontier.csv').read_text()}")
EOF
