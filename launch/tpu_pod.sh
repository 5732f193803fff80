#!/usr/bin/env bash
# tlx.train on every worker of a Cloud TPU VM slice, from a machine with gcloud.
#
#   TPU_NAME=tlx-v4 ZONE=us-central2-b launch/tpu_pod.sh create
#   TPU_NAME=tlx-v4 ZONE=us-central2-b launch/tpu_pod.sh setup    # code + .venv on every worker
#   TPU_NAME=tlx-v4 ZONE=us-central2-b launch/tpu_pod.sh run --config=configs/bert/pretrain.py:size=base \
#       --workdir=runs/bert_base --config.checkpoint.directory=gs://BUCKET/runs/bert_base
#   TPU_NAME=tlx-v4 ZONE=us-central2-b SPOT=1 launch/tpu_pod.sh babysit --config=... --workdir=runs/x \
#       --config.checkpoint.directory=gs://...
#   TPU_NAME=tlx-v4 ZONE=us-central2-b launch/tpu_pod.sh exec .venv/bin/python -m tlx.data list
#   TPU_NAME=tlx-v4 ZONE=us-central2-b launch/tpu_pod.sh delete
#
# setup packs the work tree (no .git, .venv, runs), copies it to every worker (tpu-vm scp
# --worker=all), unpacks it in ~/$REMOTE_DIR and installs `pip install -e '.[tpu]'` into a venv
# there. run starts `python -m tlx.train FLAGS --config.distributed.join=always` on all workers
# at once (tpu-vm ssh --worker=all); jax.distributed finds the pod's workers itself. Put the
# checkpoints on gs:// (--config.checkpoint.directory) so every worker sees them; the workdir
# (metrics, best/) stays a local path.
#
# babysit reruns until the training exits 0: it polls `tpu-vm describe`; a missing, PREEMPTED or
# otherwise broken slice is deleted, recreated (SPOT=1: spot; QUEUED=1: as a queued resource)
# and set up again; then it runs. Exit 75 (preempted: a checkpoint was saved, rerunning resumes)
# or any other failure (a lost worker, ssh 255) is retried; 2 (bad input) and 3 (diverged) stop
# it, since a rerun would fail the same way. It gives up after MAX_ATTEMPTS runs.
#
# Env: TPU_NAME, ZONE (required); PROJECT; ACCELERATOR_TYPE (v4-32); RUNTIME_VERSION
# (tpu-ubuntu2204-base); SPOT=1; QUEUED=1; REMOTE_DIR (tlx, under the workers' home);
# REMOTE_PYTHON (python3.11, the venv's interpreter; installed with apt when missing);
# REMOTE_ENV (e.g. "TLX_DATA_DIR=/mnt/data JAX_COORDINATOR_PORT=8476", set for the run);
# REMOTE_SETUP (a command setup ends with on every worker, e.g. fetching the data:
# ".venv/bin/python -m tlx.data fetch"; babysit reruns it on a recreated slice);
# MAX_ATTEMPTS (10); POLL_SECONDS (60); READY_TIMEOUT (seconds to wait for READY, 3600);
# GCLOUD (the gcloud binary); DRY_RUN=1 prints each command instead of running it (the state
# then reads DRY_RUN_STATE, default READY, and every command succeeds).
set -uo pipefail

usage() {
  echo "usage: TPU_NAME=NAME ZONE=ZONE $0 create|setup|run|babysit|exec|delete [tlx.train flags...]" >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
sub=$1
shift
[[ -n "${TPU_NAME:-}" && -n "${ZONE:-}" ]] || usage

gcloud_bin="${GCLOUD:-gcloud}"
accelerator="${ACCELERATOR_TYPE:-v4-32}"
runtime="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
remote_dir="${REMOTE_DIR:-tlx}"
remote_python="${REMOTE_PYTHON:-python3.11}"
max_attempts="${MAX_ATTEMPTS:-10}"
poll="${POLL_SECONDS:-60}"
ready_timeout="${READY_TIMEOUT:-3600}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="${TMPDIR:-/tmp}/tlx-code-${TPU_NAME}.tgz"
where=(--zone="$ZONE")
[[ -n "${PROJECT:-}" ]] && where+=(--project="$PROJECT")

log() { echo "tpu_pod: $*" >&2; }

# Runs (or, with DRY_RUN=1, prints) one command; every effect on the world goes through here.
x() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    local a out=""
    for a in "$@"; do
      if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=" $a"; else out+=" '${a//\'/\'\\\'\'}'"; fi
    done
    echo "${out:1}"
    return 0
  fi
  "$@"
}

gcloud_tpu() { x "$gcloud_bin" compute tpus tpu-vm "$@"; }
gcloud_qr() { x "$gcloud_bin" alpha compute tpus queued-resources "$@"; }

# Sets STATE: READY, CREATING, PREEMPTED, ... or MISSING. DRY_RUN: DRY_RUN_STATE once, then READY.
STATE=""
dry_states=0
read_state() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    x "$gcloud_bin" compute tpus tpu-vm describe "$TPU_NAME" "${where[@]}" --format='value(state)'
    STATE=READY
    ((dry_states++ == 0)) && STATE="${DRY_RUN_STATE:-READY}"
    return 0
  fi
  STATE="$("$gcloud_bin" compute tpus tpu-vm describe "$TPU_NAME" "${where[@]}" \
    --format='value(state)' 2>/dev/null)" || STATE=MISSING
  [[ -n "$STATE" ]] || STATE=MISSING
}

wait_ready() {
  local waited=0
  while true; do
    read_state
    [[ "$STATE" == READY ]] && return 0
    if ((waited >= ready_timeout)); then
      log "$TPU_NAME not READY after ${waited}s (state $STATE)"
      return 1
    fi
    log "$TPU_NAME is $STATE; waiting ${poll}s"
    sleep "$poll"
    waited=$((waited + poll))
  done
}

create() {
  local spot=()
  [[ "${SPOT:-0}" == 1 ]] && spot=(--spot)
  if [[ "${QUEUED:-0}" == 1 ]]; then
    gcloud_qr create "$TPU_NAME" --node-id="$TPU_NAME" "${where[@]}" \
      --accelerator-type="$accelerator" --runtime-version="$runtime" "${spot[@]}" || return
  else
    gcloud_tpu create "$TPU_NAME" "${where[@]}" --accelerator-type="$accelerator" \
      --version="$runtime" "${spot[@]}" || return
  fi
  wait_ready
}

delete() {
  if [[ "${QUEUED:-0}" == 1 ]]; then
    gcloud_qr delete "$TPU_NAME" "${where[@]}" --force --quiet
  else
    gcloud_tpu delete "$TPU_NAME" "${where[@]}" --quiet
  fi
}

setup() {
  x tar -czf "$bundle" --exclude=./.git --exclude=./.venv --exclude=./runs \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='.*_cache' -C "$repo" . || return
  gcloud_tpu scp "$bundle" "$TPU_NAME:/tmp/tlx-code.tgz" --worker=all "${where[@]}" || return
  local cmd
  cmd="set -e; mkdir -p ~/$remote_dir; tar -xzf /tmp/tlx-code.tgz -C ~/$remote_dir; cd ~/$remote_dir"
  cmd+="; command -v $remote_python >/dev/null || (sudo apt-get update -q"
  cmd+=" && sudo apt-get install -yq $remote_python $remote_python-venv)"
  cmd+="; test -x .venv/bin/python || $remote_python -m venv .venv"
  cmd+="; .venv/bin/pip install -q --upgrade pip; .venv/bin/pip install -q -e '.[tpu]'"
  [[ -n "${REMOTE_SETUP:-}" ]] && cmd+="; $REMOTE_SETUP"
  gcloud_tpu ssh "$TPU_NAME" --worker=all "${where[@]}" --command="$cmd"
}

run() {
  local args="" a
  for a in "$@"; do args+=" $(printf '%q' "$a")"; done
  local cmd="cd ~/$remote_dir && ${REMOTE_ENV:+$REMOTE_ENV }.venv/bin/python -m tlx.train$args"
  cmd+=" --config.distributed.join=always"
  gcloud_tpu ssh "$TPU_NAME" --worker=all "${where[@]}" --command="$cmd"
}

# Any command on every worker, in ~/$REMOTE_DIR (e.g. `exec .venv/bin/python -m tlx.data fetch`).
remote_exec() {
  local cmd="" a
  for a in "$@"; do cmd+=" $(printf '%q' "$a")"; done
  gcloud_tpu ssh "$TPU_NAME" --worker=all "${where[@]}" --command="cd ~/$remote_dir &&$cmd"
}

# One attempt: bring the slice up (recreate and set it up again if needed), then run.
babysit() {
  local attempt status=1
  for ((attempt = 1; attempt <= max_attempts; attempt++)); do
    read_state
    case "$STATE" in
      READY) ;;
      CREATING | STARTING | RESTARTING | REPAIRING)
        wait_ready || continue
        ;;
      MISSING)
        log "$TPU_NAME does not exist: creating it"
        { create && setup; } || { sleep "$poll"; continue; }
        ;;
      *)
        log "$TPU_NAME is $STATE: deleting and recreating it"
        delete
        { create && setup; } || { sleep "$poll"; continue; }
        ;;
    esac
    log "attempt $attempt of $max_attempts: training"
    run "$@"
    status=$?
    case $status in
      0)
        log "training finished"
        return 0
        ;;
      2 | 3)
        log "training exited $status (2: bad input, 3: diverged); a rerun would do the same"
        return $status
        ;;
      75) log "training was preempted (75) and saved a checkpoint; rerunning resumes it" ;;
      *) log "training failed with status $status (a lost worker?); retrying" ;;
    esac
    sleep "$poll"
  done
  log "giving up after $max_attempts attempts; last status $status"
  return $status
}

case "$sub" in
  create) create ;;
  delete) delete ;;
  setup) setup ;;
  run) run "$@" ;;
  babysit) babysit "$@" ;;
  exec) remote_exec "$@" ;;
  *) usage ;;
esac
