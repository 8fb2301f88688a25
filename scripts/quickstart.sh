#!/usr/bin/env bash
# The built-in default job: the whole Kanana-2 recipe on SmolLM2-135M-Instruct with the shipped data, on 2 CPU cores in
# about 20 minutes: data -> mid-training -> SFT -> a rejection-sampling round -> reward model -> Chat (DPO) and Logic
# (GRPO) tracks at once -> merge -> calibration -> evaluation. Prints one table of every stage's before -> after; the
# table is also in $RUN/summary.md, the plots in $RUN/plots. Re-running skips finished stages; a killed run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
RUN=${RUN:-runs/quickstart}
posttrain pipeline --config configs/kanana2.yaml run_dir="$RUN"
