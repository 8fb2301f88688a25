#!/usr/bin/env bash
# The built-in default job: build the shipped SFT data recipe and fine-tune SmolLM2-135M-Instruct on it (CPU, minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
RUN=${RUN:-runs/quickstart}
posttrain models fetch smollm2-135m-instruct
posttrain data build data_recipes/sft_default.yaml --out "$RUN/data"
posttrain data inspect "$RUN/data"
posttrain sft --config configs/sft_quickstart.yaml data="$RUN/data" output_dir="$RUN/sft"
