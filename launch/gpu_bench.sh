#!/usr/bin/env bash
# The prepared GPU benchmark (launch/gpu_bench.py's docstring says what it measures), for the
# device tool's H200 machine: its python3 has jax (CUDA), flax, optax, orbax, torch and
# transformers, but neither ml_collections nor gensim, and nothing can be installed there from a
# registry. Carry them as wheels, made here once (README "device" notes):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl ml_collections==1.1.0 gensim==4.4.0 smart_open==7.1.0
# then: run(command="bash launch/gpu_bench.sh", carry=[".whl"], timeout_s=540).
# Extra flags go to gpu_bench.py (--bert_batch=256 --remat=save_out --microbatches=2 ...).
# CPU dry run: bash launch/gpu_bench.sh --tiny
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_bench}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv \
  >"$OUT/nvidia_smi.csv" 2>&1 || true
# JAX children take 90% of the GPU (torch runs in other children, after them); TF logs off.
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 TF_CPP_MIN_LOG_LEVEL=3
$PY launch/gpu_bench.py --out="$OUT" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
