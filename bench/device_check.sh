#!/usr/bin/env bash
# The GPU check (issue 16), for a CUDA machine that reaches no package registry: ≤ 8 minutes, writes
# $OUT/device_check/device_check.{json,md}. It needs torch, transformers, peft and accelerate there; trl, pot and
# gguf travel as wheels in .whl/ (make them here with
#   pip download --no-deps --dest .whl trl pot gguf
# and carry .whl). tasft itself runs from src/ (no install). Random weights: no checkpoint travels.
#   bash bench/device_check.sh            # OUT defaults to ./device_check_out
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-device_check_out}"
if ls .whl/*.whl >/dev/null 2>&1; then
  pip install --quiet --no-index --no-deps --find-links .whl .whl/*.whl || echo "device_check: wheels not installed"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
timeout 470 python bench/device_check.py --out "$OUT/device_check" "$@"
