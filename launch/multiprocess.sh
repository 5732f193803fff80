#!/usr/bin/env bash
# Run tlx.train as N local processes of one JAX multi-controller job (jax.distributed, gloo CPU
# collectives): the same code path as a TPU pod or a multi-node GPU cluster, on one machine.
#
#   launch/multiprocess.sh 2 --config=configs/bert/pretrain.py:size=tiny --workdir=runs/mp
#
# Env: LOCAL_DEVICES (host CPU devices per process, default 2), PORT (coordinator, default 12355),
# PYTHON (default .venv/bin/python if present). Logs: WORKDIR/process_<i>.log, pids:
# WORKDIR/process_<i>.pid. Exit status: 0 if every process succeeded; 75 (tlx.errors.EXIT_PREEMPTED)
# if every process was preempted and saved its checkpoint (run the same command again to resume);
# else 1. A SIGTERM to this script is forwarded to every process (each then saves and exits 75).
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
termed=0     # a SIGTERM arrived: forwarded to every process started, now and later
interrupted=0
forward() {
  termed=1
  interrupted=1
  kill -TERM "${pids[@]}" 2>/dev/null || true
}
trap forward TERM
for ((i = 0; i < n; i++)); do
  TLX_COORDINATOR="localhost:${port}" TLX_NUM_PROCESSES="$n" TLX_PROCESS_ID="$i" \
    XLA_FLAGS="--xla_force_host_platform_device_count=${devices} ${XLA_FLAGS:-}" \
    JAX_PLATFORMS=cpu "$python" -m tlx.train "$@" >"$workdir/process_$i.log" 2>&1 &
  pids+=($!)
  echo $! >"$workdir/process_$i.pid"
  if ((termed)); then kill -TERM $! 2>/dev/null || true; fi # TERM came during the launch
done
preempted=0
failed=0
for i in "${!pids[@]}"; do
  # `wait` returns early (status > 128) when the TERM trap runs: wait again for the real status
  # (bash keeps an exited child's status for the next `wait`; 127: already collected, keep rc).
  rc=""
  while true; do
    interrupted=0
    wait "${pids[$i]}" && s=0 || s=$?
    if [[ $s -eq 127 && -n "$rc" ]]; then break; fi
    rc=$s
    ((interrupted && s > 128)) || break
  done
  if [[ $rc -eq 75 ]]; then
    echo "process $i preempted: $(grep -m1 '^preempted at step' "$workdir/process_$i.log" || true)" >&2
    preempted=$((preempted + 1))
  elif [[ $rc -ne 0 ]]; then
    echo "process $i failed (exit status $rc); see $workdir/process_$i.log" >&2
    tail -n 20 "$workdir/process_$i.log" >&2
    failed=$((failed + 1))
  fi
done
if [[ $failed -gt 0 ]]; then
  exit 1
elif [[ $preempted -eq $n ]]; then
  echo "all $n processes preempted and checkpointed; run the same command again to resume" >&2
  exit 75
elif [[ $preempted -gt 0 ]]; then
  echo "$preempted of $n processes preempted, the others finished: check $workdir" >&2
  exit 1
fi
exit 0
