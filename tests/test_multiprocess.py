"""Multi-controller JAX: 2 processes x 2 devices train exactly like 1 process x 4 devices."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS = [
    "--config=configs/bert/pretrain.py:size=tiny,runlocal",
    "--config.train.steps=3",
    "--config.train.log_every=1",
    "--config.train.eval_every=3",
    "--config.checkpoint.every=3",
    "--config.data.num_shards=2",  # two data shards in both runs: same global batches
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _losses(workdir: pathlib.Path) -> list[float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_two_processes_match_one_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
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

    single = tmp_path / "single"
    proc = subprocess.run(
        [sys.executable, "-m", "tlx.train", f"--workdir={single}", *FLAGS],
        cwd=REPO,
        env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    multi_losses, single_losses = _losses(multi), _losses(single)
    assert len(multi_losses) == len(single_losses) == 3
    np.testing.assert_allclose(multi_losses, single_losses, rtol=1e-5)
    # And both runs checkpointed the same global state.
    assert (multi / "checkpoints" / "3").is_dir() and (single / "checkpoints" / "3").is_dir()
