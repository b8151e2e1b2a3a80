#!/usr/bin/env bash
# Create the virtual environment and install the project into it (idempotent).
# torch: the CPU build where there is no NVIDIA GPU (torch==2.13.0, which pip takes from local disk on the
# project's CPU machines), the default CUDA build where there is one.
set -euo pipefail
PY="${1:-python3}"
VENV="${2:-.venv}"
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
echo "[install] installing launcher and its dependencies"
"$VENV/bin/python" -m pip install -q -e ".[dev,deepspeed,ui]"
# The web UI's browser tests drive Debian's Chromium through Playwright (no browser download); they skip without it.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[install] installing chromium for the web UI's browser tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# A CJK font, so that the Chinese page (and its README screenshot) shows characters rather than empty boxes.
if [ -x /usr/bin/chromium ] && ! fc-list :lang=zh 2>/dev/null | grep -q . && [ "$(id -u)" = "0" ] \
    && command -v apt-get >/dev/null 2>&1; then
  echo "[install] installing a CJK font (fonts-wqy-microhei) for the web UI's Chinese screenshots"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null
fi
"$VENV/bin/python" -c "import torch, transformers, peft, hydra, submitit; print('[install] torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
