#!/bin/bash
# Rebuild this directory from the runs (issue 4): copies the training and evaluation metrics (no generated text)
# and renders the comparison with `tasft report`. Run from the repository root after the commands in README.md.
set -euo pipefail
R=runs/methods
D=docs/results/methods
RUNS=(base sft ta-sft-emd ta-sft-emd_lb ta-sft-nlcl ta-sft-ga stl kto ta-sft-emd-contrastive)
for m in "${RUNS[@]}"; do
  mkdir -p $D/eval/$m
  cp $R/eval/$m/metrics.json $R/eval/$m/report.md $D/eval/$m/
  if [ -f $R/$m/metrics.json ]; then
    mkdir -p $D/train/$m
    cp $R/$m/metrics.json $R/$m/config.yaml $R/$m/log.jsonl $D/train/$m/
  fi
done
tasft report "${RUNS[@]/#/$R/eval/}" --out $D/report
