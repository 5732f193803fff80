"""Multi-controller JAX: 2 processes x 2 devices train exactly like 1 process x 4 devices, whether
launch/multiprocess.sh or (faked) SLURM starts them."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS = [
    "--config=configs/bert/pretrain.py:size=tiny,runlocal",
    "--config.train.steps=3",
    "--config.train.log_every=1",
    "--config.train.eval_every=3",
    "--config.checkpoint.every=3",
]


_free_port = sys.modules["tlx_tests_conftest"].free_port  # tests/conftest.py


def _losses(workdir: pathlib.Path) -> list[float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith("SLURM_")}
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> pathlib.Path:
    """The reference: 1 process x 4 devices, FLAGS; run once for every test of this module."""
    workdir = tmp_path_factory.mktemp("single")
    proc = subprocess.run(
        [sys.executable, "-m", "tlx.train", f"--workdir={workdir}", *FLAGS],
        cwd=REPO,
        env={**_env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_losses(workdir)) == 3
    return workdir


def test_two_processes_match_one_process(tmp_path, single):
    env = _env()
    multi = tmp_path / "multi"
    proc = subprocess.run(
        ["bash", "launch/multiprocess.sh", "2", f"--workdir={multi}", *FLAGS],
        cwd=REPO,
        env={**env, "PORT": str(_free_port()), "LOCAL_DEVICES": "2", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log0 = (multi / "process_0.log").read_text()
    assert "process_count=2 devices=4 local_devices=2" in log0

    multi_losses, single_losses = _losses(multi), _losses(single)
    assert len(multi_losses) == len(single_losses) == 3
    np.testing.assert_allclose(multi_losses, single_losses, rtol=1e-5)
    # And both runs checkpointed the same global state.
    assert (multi / "checkpoints" / "3").is_dir() and (single / "checkpoints" / "3").is_dir()


def test_slurm_autodetection_joins_two_processes(tmp_path, single):
    """Two `python -m tlx.train` with the environment `srun -N2 -n2` gives its tasks: they find
    each other through jax's SlurmCluster alone (coordinator: the first host of
    SLURM_STEP_NODELIST, 127.0.0.1) and train like the 1-process reference."""
    workdir = tmp_path / "slurm"
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "2",
        "SLURM_STEP_NODELIST": "127.0.0.[1-2]",
        "SLURM_LOCALID": "0",  # one task per (fake) node
        "JAX_COORDINATOR_PORT": str(_free_port()),
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    procs = []
    for rank in range(2):
        log = open(tmp_path / f"task_{rank}.log", "w")
        cmd = [sys.executable, "-m", "tlx.train", f"--workdir={workdir}", *FLAGS]
        env = {**_env(), **slurm, "SLURM_PROCID": str(rank)}
        procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log), log))
    for proc, log in procs:
        try:
            proc.wait(timeout=600)
        finally:
            proc.kill()
            log.close()
    logs = [(tmp_path / f"task_{rank}.log").read_text() for rank in range(2)]
    for (proc, _), text in zip(procs, logs):
        assert proc.returncode == 0, text[-3000:]
    assert "distributed: a SLURM step of 2 tasks (job 4242)" in logs[0]
    assert "process_index=0 process_count=2 devices=4 local_devices=2" in logs[0]
    assert "process_index=1 process_count=2 devices=4 local_devices=2" in logs[1]
    np.testing.assert_allclose(_losses(workdir), _losses(single), rtol=1e-5)
    assert (workdir / "checkpoints" / "3").is_dir()
