# make demo: set up .venv and train + sample the digits denoiser (about 4 minutes on 2 CPU cores)
# make test: set up .venv and run the fast test suite
VENV ?= .venv
PYTHON := $(VENV)/bin/python
DEMO_DIR ?= runs/demo
DEMO_TIME ?= 00:00:03:00
export WANDB_DIR ?= $(CURDIR)/runs
export MPLCONFIGDIR ?= $(CURDIR)/runs/.matplotlib

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(PYTHON) train.py fit --config configs/digits/denoiser.yaml \
		--trainer.default_root_dir $(DEMO_DIR) --trainer.logger.init_args.save_dir $(DEMO_DIR) \
		--trainer.max_epochs -1 --trainer.max_time $(DEMO_TIME)
	$(PYTHON) -m lightning_diffusion sample $(DEMO_DIR)/checkpoints/last.ckpt --out $(DEMO_DIR) \
		--scales 0 1 2 3 5 --per_class 10 --check_labels
	@echo "demo outputs: $(DEMO_DIR)/samples.png, $(DEMO_DIR)/samples_s*.npz, $(DEMO_DIR)/checkpoints/last.ckpt"

test: setup
	$(PYTHON) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs lightning_logs wandb
