# Two commands set up a fresh machine:
#   make train   installs into .venv and runs the embedded default fine-tune (`launcher train`)
#   make test    installs into .venv, starts the local SLURM cluster, runs the test suite
# Extra Hydra overrides for `make train`: make train ARGS="method=lora train.max_steps=200"

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ARGS    ?=
PYTEST_ARGS ?=

.PHONY: install train test slurm-up slurm-down clean-outputs

$(STAMP): setup.cfg pyproject.toml
	bash .ci/install-env.sh "$(PY)" "$(VENV)"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/launcher train $(ARGS)

slurm-up:
	bash slurm/start-cluster.sh

slurm-down:
	bash slurm/stop-cluster.sh

test: $(STAMP)
	@if [ -x slurm/start-cluster.sh ] || [ -f slurm/start-cluster.sh ]; then bash slurm/start-cluster.sh; fi
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
