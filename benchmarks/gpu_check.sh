#!/usr/bin/env bash
# The GPU check on a lent GPU machine, from the repository root (benchmarks/README.md, "GPU check"):
#
#   bash benchmarks/gpu_check.sh --fetch-wheels      # HERE, once, with network: TRL, Liger and their missing needs
#   bash benchmarks/gpu_check.sh --budget-s 450 --out "$OUT"   # THERE: every other option goes to gpu_check.py
#
# No virtual environment is built there: that machine cannot reach a package index, and the project's
# .venv (CPU torch, Python 3.11, 2.5 minutes to install) does not travel. Its own python3 (3.12) already
# holds CUDA torch, transformers, peft, safetensors, tensorboard, matplotlib, pyyaml, tqdm and scipy, which
# is all the training, online, ASR, sampling and greedy-TTS parts import (lpo_speech runs from this
# checkout through PYTHONPATH; tests/test_gpu_check.py runs the check with every other module hidden).
# Only the run_all part's TRL and Liger rows need more: their wheels (trl, datasets, dill, multiprocess,
# liger-kernel; a few MB, pure Python) travel in build/device-wheels (ignored by git, so the run must
# carry it) and are installed into /tmp without the index. Without them those rows read "not installed".
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=build/device-wheels
PY=${PYTHON:-python3}

if [ "${1:-}" = "--fetch-wheels" ]; then
  # Pure-Python wheels for the device's CPython 3.12; versions TRL 1.16.0 accepts with pyarrow 21+;
  # liger-kernel needs only torch and triton, which the image has.
  mkdir -p "$WHEELS"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" trl==1.16.0 datasets==4.7.0 dill==0.4.0 multiprocess==0.70.18 liger-kernel==0.8.5
  ls -l "$WHEELS"
  exit 0
fi

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site \
    "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
