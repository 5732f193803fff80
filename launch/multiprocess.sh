#!/usr/bin/env bash
# Run tlx.train as N local processes of one JAX multi-controller job (jax.distributed, gloo CPU
# collectives): the same code path as a TPU pod or a multi-node GPU cluster, on one machine.
#
#   launch/multiprocess.sh 2 --config=configs/bert/pretrain.py:size=tiny --workdir=runs/mp
#
# Env: LOCAL_DEVICES (host CPU devices per process, default 2), PORT (coordinator, default 12355),
# PYTHON (default .venv/bin/python if present). Logs: WORKDIR/process_<i>.log; exits non-zero if
# any process fails.
set -euo pipefail
if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 NUM_PROCESSES --config=... --workdir=DIR [flags...]" >&2
  exit 2
fi
n=$1
shift
workdir=""
for arg in "$@"; do
  case "$arg" in --workdir=*) workdir="${arg#--workdir=}" ;; esac
done
[[ -n "$workdir" ]] || { echo "$0: --workdir=DIR is required" >&2; exit 2; }
mkdir -p "$workdir"
python="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
port="${PORT:-12355}"
devices="${LOCAL_DEVICES:-2}"

pids=()
for ((i = 0; i < n; i++)); do
  TLX_COORDINATOR="localhost:${port}" TLX_NUM_PROCESSES="$n" TLX_PROCESS_ID="$i" \
    XLA_FLAGS="--xla_force_host_platform_device_count=${devices} ${XLA_FLAGS:-}" \
    JAX_PLATFORMS=cpu "$python" -m tlx.train "$@" >"$workdir/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; see $workdir/process_$i.log" >&2
    tail -n 20 "$workdir/process_$i.log" >&2
    status=1
  fi
done
exit $status
