"""Preemption (tlx.preemption): a SIGTERM makes every process save one step and exit 75, and the
rerun ends bit-identical to an uninterrupted run.

The single-process run is compared with tests/checkpointed_run.py's uninterrupted run (6 steps,
a checkpoint at every step: its state at the preempted step is there to compare); the
processes get SIGTERM when their metrics show progress (polled, not slept on).
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import pytest

from tlx import preemption
from tlx.errors import EXIT_PREEMPTED

REPO = pathlib.Path(__file__).resolve().parents[1]
_ckpt_run = sys.modules["tlx_tests_conftest"]._load_module(
    "tlx_tests_checkpointed_run", "checkpointed_run.py"
)  # tests/checkpointed_run.py
RUN, run = _ckpt_run.RUN, _ckpt_run.run  # run: a fixture (the uninterrupted reference)
CONFIG = "--config=configs/bert/pretrain.py:size=tiny,runlocal"
EVERY = 100  # regular checkpoints never come: the one saved is the preemption's
FLAGS = [CONFIG, f"--config.train.steps={RUN['train.steps']}", f"--config.checkpoint.every={EVERY}"]


_free_port = sys.modules["tlx_tests_conftest"].free_port  # tests/conftest.py


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith("SLURM_")}
    return {**env, "JAX_PLATFORMS": "cpu", **extra}


def _rows(workdir: pathlib.Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def _losses(workdir: pathlib.Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _rows(workdir) if "loss" in r}


def _digests(workdir: pathlib.Path, step: int) -> dict:
    meta = workdir / "checkpoints" / str(step) / "meta" / "metadata"
    return json.loads(meta.read_text())["digests"]


def _steps_saved(workdir: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _sigterm_when_training(proc: subprocess.Popen, workdir: pathlib.Path, pid_file=None) -> int:
    """Polls until the run has logged a train step, then sends SIGTERM to `proc` (or to the pid
    in `pid_file`); returns the step logged by then."""
    deadline = time.time() + 600
    while not _losses(workdir) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be preempted"
    pid = int(pid_file.read_text()) if pid_file else proc.pid
    logged = max(_losses(workdir))
    os.kill(pid, signal.SIGTERM)
    return logged


def _preempted_step(text: str) -> int:
    found = re.findall(r"^preempted at step (\d+); checkpoint saved$", text, re.MULTILINE)
    assert len(found) == 1, text[-3000:]
    return int(found[0])


# --- the Watch in this process -------------------------------------------------------------


def test_watch_stops_at_the_step_after_sigterm_and_restores_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    with preemption.Watch(3) as watch:
        assert signal.getsignal(signal.SIGTERM) is not previous
        assert not watch.reached(4)
        os.kill(os.getpid(), signal.SIGTERM)  # handled before the next bytecode
        assert watch.reached(5) and not watch.reached(6)
    assert signal.getsignal(signal.SIGTERM) is previous
    with preemption.Watch(6) as watch:  # the notice was consumed: a new run trains on
        assert not watch.reached(7)


def test_a_notice_during_setup_is_kept_for_the_loop():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        preemption.listen()
        assert not jax.config.jax_enable_preemption_service  # SIGTERM stays with Python
        os.kill(os.getpid(), signal.SIGTERM)  # compile, restore: before the loop
        with preemption.Watch(7) as watch:
            assert watch.reached(8)
    finally:
        signal.signal(signal.SIGTERM, previous)
        jax.config.update("jax_enable_preemption_service", True)


def test_two_processes_agree_on_a_notice_sent_before_one_loop_started():
    """JAX's own sync manager loses this one: its counter is 0 before the first call, so it
    picks step 1, which a run resumed at step 7 never reaches."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "tests/preemption_worker.py", str(i), str(port), "7", "30"],
            cwd=REPO,
            env=_env(PYTHONPATH=str(REPO)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for out in outs:
        assert "stopped at 8" in out, out[-3000:]


# --- tlx.train, one process and two ---------------------------------------------------------


def test_sigterm_saves_that_step_and_the_rerun_is_bit_identical(run, tmp_path):
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "tlx.train", f"--workdir={workdir}", *FLAGS]
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=8")  # as the reference
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    logged = _sigterm_when_training(proc, workdir)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == EXIT_PREEMPTED, out[-3000:]
    n = _preempted_step(out)
    assert logged < n < RUN["train.steps"] and n % EVERY != 0
    assert "received SIGTERM" in out and "error:" not in out
    assert _steps_saved(workdir) == [n]  # saved and finished (not a temporary directory)
    assert _digests(workdir, n) == _digests(run, n)  # the uninterrupted run's state at n

    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {workdir / 'checkpoints'} step {n}" in proc.stdout + proc.stderr
    last = RUN["train.steps"]
    assert _digests(workdir, last) == _digests(run, last)  # params and optimizer state
    final = json.loads((workdir / "final_metrics.json").read_text())
    assert final == json.loads((run / "final_metrics.json").read_text())
    # Losses: every logged step whose window (since the previous log) n does not split.
    log_every = 2  # runlocal's, the reference's
    ref, got = _losses(run), _losses(workdir)
    assert ref and all(got[s] == ref[s] for s in ref if not s - log_every < n < s), (got, ref)


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
    workdir = tmp_path / "multi"
    cmd = ["bash", "launch/multiprocess.sh", "2", f"--workdir={workdir}", *FLAGS]
    env = _env(PORT=str(_free_port()), LOCAL_DEVICES="2", PYTHON=sys.executable)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    _sigterm_when_training(proc, workdir, pid_file=workdir / "process_1.pid")
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == EXIT_PREEMPTED, out  # multiprocess.sh passes 75 through
    assert "all 2 processes preempted" in out
    logs = [(workdir / f"process_{i}.log").read_text() for i in range(2)]
    n = _preempted_step(logs[0])
    assert _preempted_step(logs[1]) == n and n < RUN["train.steps"]
    assert "received SIGTERM" in logs[1] and "received SIGTERM" not in logs[0]
    assert _steps_saved(workdir) == [n]

    env["PORT"] = str(_free_port())
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log0 = (workdir / "process_0.log").read_text()
    assert f"step {n}" in log0 and "resumed from" in log0
    final = json.loads((workdir / "final_metrics.json").read_text())
    assert final["step"] == RUN["train.steps"]
    assert _steps_saved(workdir)[-1] == RUN["train.steps"]


@pytest.fixture(autouse=True)
def _no_stray_notice():
    """A test that leaves a notice behind would stop the next in-process run."""
    yield
    assert not preemption._NOTICE.is_set()
