#!/usr/bin/env bash
# `make gpu-smoke` on a GPU machine with no package index (torch, transformers, peft, accelerate installed):
#   here:  make gpu-smoke-files          # .gpu-smoke/: SmolLM2's tokenizer + wheels for Python 3.12 (25 MB)
#   there: bash scripts/gpu_smoke_offline.sh    # with .gpu-smoke copied beside the repository
# It installs the wheels into /tmp/site, then runs make gpu-smoke's two commands (the checks, then the gpu
# tests), each under a time limit (SMOKE_LIMIT, TEST_LIMIT seconds), writing their output to $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=$(command -v python3)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu-smoke/wheels/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD  # the repository is not pip-installed there
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/preflight.txt"
python3 -c "import sys, torch, transformers, accelerate, peft, trl, datasets, deepspeed; print(sys.version.split()[0], *(f'{m.__name__} {m.__version__}' for m in (torch, transformers, accelerate, peft, trl, datasets, deepspeed)), torch.cuda.get_device_name(0))" 2>&1 | tee -a "$OUT/preflight.txt"
# make gpu-smoke's two commands with this machine's python (its `install` prerequisite needs a package index)
start=$(date +%s)
set -o pipefail
timeout ${SMOKE_LIMIT:-330} "$PY" scripts/gpu_smoke.py 2>&1 | tee "$OUT/gpu_smoke.txt"; echo "gpu_smoke.py exit $? in $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu_smoke.txt"
start=$(date +%s)
timeout ${TEST_LIMIT:-200} "$PY" -m pytest -m gpu tests/scripts/test_gpu_smoke.py -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.txt"; echo "pytest -m gpu exit $? in $(( $(date +%s) - start )) s" | tee -a "$OUT/pytest_gpu.txt"
tar czf "$OUT/logs.tgz" runs/gpu_smoke/*.log /tmp/pytest-of-*/pytest-*/gpu-smoke*/*.log 2>/dev/null
echo done
