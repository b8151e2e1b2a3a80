#!/usr/bin/env bash
# Create the virtual environment and install the project into it (idempotent): what training needs, pip only.
# The browser and font that only the web UI's browser tests need are .ci/install-test-extras.sh (make test).
# torch: the CPU build where there is no NVIDIA GPU (torch==2.13.0, which pip takes from local disk on the
# project's CPU machines), the default CUDA build where there is one.
set -euo pipefail
PY="${1:-python3}"
VENV="${2:-.venv}"
# pip extras of setup.cfg: make train takes deepspeed (parallelism=zero*) and optimizers (method.optimizer's
# libraries); make test adds dev and ui.
EXTRAS="${3:-deepspeed,optimizers}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[install] NVIDIA GPU found: installing the CUDA build of torch"
    "$VENV/bin/python" -m pip install -q "torch>=2.4"
  else
    echo "[install] no NVIDIA GPU: installing the CPU build of torch 2.13.0"
    "$VENV/bin/python" -m pip install -q "torch==2.13.0" \
      || "$VENV/bin/python" -m pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
echo "[install] installing launcher and its dependencies (extras: $EXTRAS)"
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
"$VENV/bin/python" -c "import torch, transformers, peft, hydra, submitit; print('[install] torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
