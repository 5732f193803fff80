"""launch/tpu_pod.sh and launch/slurm.sbatch against fake gcloud / srun / scontrol binaries, and
tlx.distributed's decision of when and how a process joins a multi-process job.

The exact commands are golden files under tests/golden/launch/; regenerate them deliberately
with TLX_REGEN_GOLDEN=1 (and read the diff)."""

import os
import pathlib
import signal
import subprocess
import time

import jax
import ml_collections
import pytest

from configs import common
from tlx import distributed
from tlx.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "launch"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TLX_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; TLX_REGEN_GOLDEN=1 rewrites it"


def _fake_bin(directory: pathlib.Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def _base_env(tmp_path: pathlib.Path, bin_dir: pathlib.Path) -> dict:
    keep = ("HOME", "LANG", "LC_ALL")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    env["TMPDIR"] = str(tmp_path)
    return env


# --- tpu_pod.sh ------------------------------------------------------------------------------


def _tpu_pod(tmp_path, *args, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    proc = subprocess.run(
        ["bash", str(REPO / "launch" / "tpu_pod.sh"), *args],
        env={**_base_env(tmp_path, bin_dir), "TPU_NAME": "tlx-v4", "ZONE": "us-central2-b", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc


TRAIN_FLAGS = ["--config=configs/bert/pretrain.py:size=base", "--workdir=gs://bucket/runs/bert"]


@pytest.mark.parametrize(
    "name,args,env",
    [
        ("tpu_setup.txt", ["setup"], {"REMOTE_SETUP": ".venv/bin/python -m tlx.data fetch"}),
        ("tpu_exec.txt", ["exec", ".venv/bin/python", "-m", "tlx.data", "list"], {}),
        (
            "tpu_run.txt",
            ["run", *TRAIN_FLAGS, "--config.train.profile_steps=10,20"],
            {"REMOTE_ENV": "TLX_DATA_DIR=/mnt/data"},
        ),
        (
            "tpu_babysit.txt",
            ["babysit", *TRAIN_FLAGS],
            {"DRY_RUN_STATE": "PREEMPTED", "SPOT": "1", "QUEUED": "1", "PROJECT": "my-proj"},
        ),
    ],
)
def test_tpu_pod_dry_run_commands(tmp_path, name, args, env):
    proc = _tpu_pod(tmp_path, *args, DRY_RUN="1", POLL_SECONDS="0", **env)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.replace(str(REPO), "<REPO>").replace(str(tmp_path), "<TMP>")
    _golden(name, text)


FAKE_GCLOUD = r"""
echo "$*" >> "$FAKE_DIR/calls"
count() {
  local n
  n=$(cat "$FAKE_DIR/$1" 2>/dev/null || echo 0)
  echo $((n + 1)) > "$FAKE_DIR/$1"
  echo "$n"
}
case "$*" in
  *"tpu-vm describe"*)
    n=$(count describes)
    states=($FAKE_STATES)
    echo "${states[$n]:-READY}"
    ;;
  *"tpu-vm ssh"*tlx.train*)
    n=$(count runs)
    statuses=($FAKE_STATUSES)
    exit "${statuses[$n]:-0}"
    ;;
esac
exit 0
"""


def _babysit(tmp_path, states: str, statuses: str, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    _fake_bin(bin_dir, "gcloud", FAKE_GCLOUD)
    _fake_bin(bin_dir, "tar", 'echo "tar $*" >> "$FAKE_DIR/calls"\n')
    proc = _tpu_pod(
        tmp_path,
        "babysit",
        *TRAIN_FLAGS,
        GCLOUD=str(bin_dir / "gcloud"),
        FAKE_DIR=str(tmp_path),
        FAKE_STATES=states,
        FAKE_STATUSES=statuses,
        POLL_SECONDS="0",
        **env,
    )
    calls = (tmp_path / "calls").read_text().splitlines()
    kinds = []
    for call in calls:
        words = call.split()
        if words[0] == "tar":
            kinds.append("tar")
        elif "tlx.train" in call:
            kinds.append("train")
        elif "--command=set" in call:
            kinds.append("setup")
        else:
            kinds.append(words[3])  # compute tpus tpu-vm VERB
    return proc, kinds


def test_babysit_recreates_a_preempted_slice_and_reruns_until_success(tmp_path):
    proc, kinds = _babysit(tmp_path, "PREEMPTED READY READY", "75 0")
    assert proc.returncode == 0, proc.stderr
    assert kinds == [
        "describe",  # PREEMPTED
        "delete",
        "create",
        "describe",  # READY: create waits for it
        "tar",
        "scp",
        "setup",
        "train",  # exits 75: preempted, checkpoint saved
        "describe",  # READY: no recreation
        "train",  # exits 0: done
    ]
    assert "preempted (75)" in proc.stderr and "training finished" in proc.stderr


def test_babysit_gives_up_after_max_attempts_and_stops_on_bad_input(tmp_path):
    proc, kinds = _babysit(tmp_path / "lost", "", "255 255 255 0", MAX_ATTEMPTS="3")
    assert proc.returncode == 255
    assert kinds.count("train") == 3 and "giving up after 3 attempts" in proc.stderr
    proc, kinds = _babysit(tmp_path / "bad", "", "2 0")
    assert proc.returncode == 2 and kinds.count("train") == 1


# --- slurm.sbatch ----------------------------------------------------------------------------

FAKE_SRUN = r"""
for a in "$@"; do echo "argv: $a"; done > "$FAKE_DIR/srun"
for v in SLURM_JOB_ID VIRTUAL_ENV; do echo "env: $v=${!v:-}"; done >> "$FAKE_DIR/srun"
touch "$FAKE_DIR/started"
while [[ -n "${FAKE_WAIT_FOR:-}" && ! -e "$FAKE_WAIT_FOR" ]]; do sleep 0.05; done
exit "${FAKE_STATUS:-0}"
"""


def _sbatch_env(tmp_path, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    _fake_bin(bin_dir, "srun", FAKE_SRUN)
    _fake_bin(bin_dir, "scontrol", 'echo "$*" >> "$FAKE_DIR/scontrol"\n')
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f"export VIRTUAL_ENV={venv}\n")
    return {
        **_base_env(tmp_path, bin_dir),
        "FAKE_DIR": str(tmp_path),
        "SLURM_JOB_ID": "1234",
        "SLURM_SUBMIT_DIR": str(REPO),
        "SLURM_JOB_NUM_NODES": "2",
        "TLX_VENV": str(venv),
        **env,
    }


def _sbatch(tmp_path, **env):
    return subprocess.run(
        ["bash", str(REPO / "launch" / "slurm.sbatch"), *TRAIN_FLAGS],
        env=_sbatch_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "name,env", [("slurm_per_gpu.txt", {}), ("slurm_per_node.txt", {"TLX_PROCS_PER_NODE": "1"})]
)
def test_sbatch_srun_command(tmp_path, name, env):
    proc = _sbatch(tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    _golden(name, (tmp_path / "srun").read_text().replace(str(tmp_path), "<TMP>"))
    assert not (tmp_path / "scontrol").exists()


def test_sbatch_requeues_on_preemption_only(tmp_path):
    proc = _sbatch(tmp_path / "a", FAKE_STATUS="75")
    assert proc.returncode == 75
    assert (tmp_path / "a" / "scontrol").read_text() == "requeue 1234\n"
    proc = _sbatch(tmp_path / "b", FAKE_STATUS="75", SLURM_RESTART_COUNT="20")
    assert proc.returncode == 75 and not (tmp_path / "b" / "scontrol").exists()
    assert "not requeueing" in proc.stderr
    proc = _sbatch(tmp_path / "c", FAKE_STATUS="2")
    assert proc.returncode == 2 and not (tmp_path / "c" / "scontrol").exists()


def test_sbatch_waits_through_sigterm_for_the_checkpoint(tmp_path):
    """SLURM's notice reaches the batch shell too: it must wait for srun's 75, then requeue."""
    go = tmp_path / "go"
    env = _sbatch_env(tmp_path, FAKE_STATUS="75", FAKE_WAIT_FOR=str(go))
    proc = subprocess.Popen(
        ["bash", str(REPO / "launch" / "slurm.sbatch"), *TRAIN_FLAGS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 30
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None  # still waiting for the step
    go.touch()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 75, stderr
    assert "SIGTERM; waiting" in stderr
    assert (tmp_path / "scontrol").read_text() == "requeue 1234\n"


# --- tlx.distributed: when and how a process joins ------------------------------------------


@pytest.fixture
def joined(monkeypatch):
    """Records jax.distributed.initialize's kwargs (and the CPU collectives set before it)."""
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    updates = []
    monkeypatch.setattr(jax.config, "update", lambda k, v: updates.append((k, v)))

    def join(environ, **overrides):
        cfg = common.base_config()
        for key, value in overrides.items():
            cfg.distributed[key] = value
        calls.clear()
        updates.clear()
        distributed.initialize(cfg, environ)
        if calls:
            assert updates == [("jax_cpu_collectives_implementation", "gloo")]
        return calls[0] if calls else None

    return join


TIMEOUTS = {"initialization_timeout": 300, "heartbeat_timeout_seconds": 100}
SLURM = {
    "SLURM_JOB_ID": "77",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
    "SLURM_STEP_NODELIST": "node[001-002]",
}


def test_no_launcher_stays_one_process(joined):
    assert joined({}) is None
    assert joined({"SLURM_JOB_ID": "77"}) is None  # salloc's shell: no srun step


def test_multiprocess_sh_env(joined):
    env = {"TLX_COORDINATOR": "localhost:1234", "TLX_NUM_PROCESSES": "2", "TLX_PROCESS_ID": "1"}
    assert joined(env) == {
        "coordinator_address": "localhost:1234",
        "num_processes": 2,
        "process_id": 1,
        "cluster_detection_method": "deactivate",
        **TIMEOUTS,
    }
    with pytest.raises(ConfigError, match="TLX_PROCESS_ID"):
        joined({**env, "TLX_PROCESS_ID": "one"})


def test_slurm_step_of_two_tasks_joins_via_jax_detection(joined):
    assert joined(SLURM) == {"cluster_detection_method": "slurm", **TIMEOUTS}
    assert joined(SLURM, initialization_timeout=60) == {
        "cluster_detection_method": "slurm",
        "initialization_timeout": 60,
        "heartbeat_timeout_seconds": 100,
    }
    assert joined(SLURM, join="never") is None
    assert joined(SLURM, cluster_detection="deactivate") is None


def test_single_task_slurm_job_stays_one_process(joined):
    assert joined({**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
    assert joined({**SLURM, "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}) is None


def test_local_device_ids(joined):
    got = joined({**SLURM, "SLURM_GPUS_ON_NODE": "4"}, local_device_ids="all")
    assert got["local_device_ids"] == [0, 1, 2, 3]
    got = joined({**SLURM, "CUDA_VISIBLE_DEVICES": "0,1"}, local_device_ids="all")
    assert got["local_device_ids"] == [0, 1]
    assert joined(SLURM, local_device_ids="2,3")["local_device_ids"] == [2, 3]
    with pytest.raises(ConfigError, match="SLURM_GPUS_ON_NODE"):
        joined(SLURM, local_device_ids="all")
    assert joined({}, local_device_ids="all") is None  # one process: nothing to count


def test_join_always_and_legacy_multihost(joined, monkeypatch):
    assert joined({}, join="always") == {"cluster_detection_method": None, **TIMEOUTS}
    assert joined({}, join="always", cluster_detection="gcetpu")["cluster_detection_method"] == (
        "gcetpu"
    )
    cfg = common.base_config()
    cfg.multihost = True
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.append(kw))
    seen = []
    distributed.initialize(cfg, {})
    assert seen == [{"cluster_detection_method": None, **TIMEOUTS}]


@pytest.mark.parametrize(
    "key,value",
    [
        ("join", "sometimes"),
        ("cluster_detection", "pbs"),
        ("local_device_ids", "0,x"),
        ("local_device_ids", 4),
        ("initialization_timeout", 0),
        ("heartbeat_timeout", "100"),
    ],
)
def test_bad_values_name_the_key(key, value):
    tree = common.base_config().to_dict()
    tree["distributed"][key] = value  # a plain dict: ConfigDict would refuse the wrong type
    with pytest.raises(ConfigError, match=f"distributed.{key}="):
        distributed.plan(ml_collections.ConfigDict(tree), {})
