# Sourced by the study scripts after they set root. Sets python (PYTHON, default .venv/bin/python),
# fit_args (FIT_ARGS) and sweep_args (SWEEP_ARGS, plus --wandb false under NO_WANDB=1).
# fit NAME DATA CONFIG [overrides...]: train configs/DATA/CONFIG.yaml into $root/NAME once (a finished
# component is reused on a re-run). test_evaluator DATA: report $root/evaluator's test accuracy.
python=${PYTHON:-.venv/bin/python}
read -r -a fit_args <<< "${FIT_ARGS:-}"
read -r -a sweep_args <<< "${SWEEP_ARGS:-}"
[ "${NO_WANDB:-0}" = 1 ] && sweep_args+=(--wandb false)
fit() {
  local name=$1 data=$2 config=$3; shift 3
  [ -f "$root/$name/checkpoints/last.ckpt" ] && { echo "reusing $root/$name"; return; }
  local logger=(--trainer.logger.init_args.save_dir "$root/$name")
  [ "${NO_WANDB:-0}" = 1 ] && logger=(--trainer.logger false)
  "$python" train.py fit --config "configs/$data/$config.yaml" --trainer.enable_progress_bar false \
    --trainer.default_root_dir "$root/$name" "${logger[@]}" "$@" "${fit_args[@]}"
}

test_evaluator() {
  "$python" train.py test --config "configs/$1/evaluator.yaml" --trainer.enable_progress_bar false \
    --ckpt_path "$root/evaluator/checkpoints/last.ckpt" --trainer.logger false \
    --trainer.default_root_dir "$root/evaluator" "${fit_args[@]}"
}
