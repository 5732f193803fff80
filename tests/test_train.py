"""The training loop end to end on the real corpus: metrics, checkpoints, transfer, failures."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs.bert import finetune, pretrain
from tlx import best, checkpoint, input_pipeline, metrics, train
from tlx.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]


_cfg = sys.modules["tlx_tests_conftest"].config_with  # tests/conftest.py


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pretrain")
    # Two evaluations, and a second evaluator (the objective on one train batch) beside `eval`.
    # Steps 2..3 traced (tlx.metrics.ProfileWindow): test_profile_steps_write_a_trace.
    over = {"train.eval_every": 2, "train.profile_steps": "2,3"}
    cfg = _cfg(pretrain, "size=tiny,runlocal", **over)
    cfg.evals.on_train = {"type": "objective", "split": "train", "steps": 1}
    final = train.train_and_evaluate(cfg, str(workdir))
    return workdir, final


def _params_at(workdir, step):
    mngr = ocp.CheckpointManager(
        str(pathlib.Path(workdir) / "checkpoints"),
        item_handlers={"params": ocp.StandardCheckpointHandler()},
    )
    return mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))["params"]


def test_pretrain_writes_metrics_tensorboard_and_checkpoints(pretrained):
    workdir, final = pretrained
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4]
    for key in ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "lr", "tokens_per_sec"):
        assert np.isfinite(train_rows[-1][key]), key
    assert any("eval/mlm_accuracy" in r for r in rows)
    assert 0.0 <= final["eval/nsp_accuracy"] <= 1.0
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
        2,
        4,
    ]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))


def test_throughput_counts_real_tokens_and_model_flops(pretrained):
    workdir, _ = pretrained
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    row = [r for r in rows if "loss" in r][-1]
    # 8 rows x 64 positions a step; BERT's short sequences (short_seq_prob) leave padding.
    assert row["padded_tokens_per_sec"] * row["step_time"] == pytest.approx(8 * 64)
    assert 0 < row["tokens_per_sec"] < row["padded_tokens_per_sec"]
    assert row["tflops_per_device"] > 0
    assert "mfu" not in row  # a CPU has no entry in tlx.flops.PEAK_TFLOPS: no made-up MFU


def test_checkpoint_meta_records_the_precision_policy(pretrained):
    mngr = ocp.CheckpointManager(
        str(pretrained[0] / "checkpoints"), item_handlers={"meta": ocp.JsonCheckpointHandler()}
    )
    meta = mngr.restore(4, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    assert meta["precision"] == {"dtype": "float32", "param_dtype": "float32", "remat": "none"}


def test_profile_steps_write_a_trace(pretrained):
    traces = list((pretrained[0] / "profile").rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_configured_evaluators_log_under_their_names_and_keep_the_lowest_loss(pretrained):
    workdir, final = pretrained
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert [r["step"] for r in rows if "on_train/loss" in r] == [2, 4]
    assert np.isfinite(final["on_train/loss"]) and final["on_train/loss"] != final["eval/loss"]
    best = json.loads((workdir / "best_metrics.json").read_text())  # best_metric: eval/loss, min
    losses = [r["eval/loss"] for r in evals]
    assert (best["metric"], best["mode"]) == ("eval/loss", "min")
    assert best["value"] == min(losses) and best["step"] == evals[losses.index(min(losses))]["step"]
    assert final["best/loss"] == best["value"] and final["best/step"] == best["step"]
    assert [p.name for p in (workdir / "best").iterdir() if p.name.isdigit()] == [str(best["step"])]


def test_a_best_checkpoint_from_before_fractions_reads_in_todays_units():
    old = {"step": 8, "metric": "accuracy", "value": 77.5,
           "metrics": {"loss": 0.6, "accuracy": 77.5, "f1": 50.0, "num_examples": 872}}  # fmt: skip
    new = best._fractions(old)
    assert new["metric"] == "eval/accuracy" and new["value"] == 0.775 and new["units"] == "fraction"
    assert new["metrics"] == {"loss": 0.6, "accuracy": 0.775, "f1": 0.5, "num_examples": 872}
    assert best._fractions(new) == new  # today's meta is left as it is


def test_finetune_loads_encoder_and_freezing_keeps_it(pretrained, tmp_path):
    pre_dir, _ = pretrained
    cfg = _cfg(
        finetune,
        "task=sst2,size=tiny,runlocal",
        **{"transfer.init_from": str(pre_dir), "optim.frozen": ["encoder/.*"]},
    )
    final = train.train_and_evaluate(cfg, str(tmp_path))
    assert 0.0 <= final["eval/accuracy"] <= 1.0
    before, after = _params_at(pre_dir, 4), _params_at(tmp_path, 4)
    jax.tree.map(np.testing.assert_array_equal, before["encoder"], after["encoder"])
    assert "mlm_head" not in after and "head" in after


def test_finetune_size_mismatch_names_the_parameter(pretrained, tmp_path):
    pre_dir, _ = pretrained
    cfg = _cfg(finetune, "task=sst2,size=mini,runlocal", **{"transfer.init_from": str(pre_dir)})
    with pytest.raises(checkpoint.TransferError, match="encoder/layers/layer_0/.*shape"):
        train.train_and_evaluate(cfg, str(tmp_path))


def test_nan_loss_stops_and_keeps_the_last_checkpoint(pretrained, tmp_path):
    shutil.copytree(pretrained[0], tmp_path, dirs_exist_ok=True)  # checkpoints at 2 and 4
    cfg = _cfg(
        pretrain,
        "size=tiny,runlocal",
        **{
            "train.steps": 6,
            "optim.lr": float("nan"),
            "checkpoint.allow_changes": ["optim.lr"],
        },
    )
    with pytest.raises(FloatingPointError, match="Last good checkpoint: step 4"):
        train.train_and_evaluate(cfg, str(tmp_path))
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 4]
    params = _params_at(tmp_path, 4)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def _cli(workdir, *flags, env=None, check=True):
    cmd = [
        sys.executable,
        "-m",
        "tlx.train",
        "--config=configs/bert/pretrain.py:size=tiny,runlocal",
        f"--workdir={workdir}",
        *flags,
    ]
    run_env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stderr[-3000:]}")
    return proc


def _kill_at_checkpoint(workdir, step: int, *flags) -> int:
    """Starts a run and SIGKILLs it (no cleanup, as a preempted job dies) as soon as its
    checkpoint for `step` is committed; returns the run's exit status."""
    config = "--config=configs/bert/pretrain.py:size=tiny,runlocal"
    cmd = [sys.executable, "-m", "tlx.train", config, f"--workdir={workdir}", *flags]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    committed = pathlib.Path(workdir) / "checkpoints" / str(step)  # renamed in when complete
    deadline = time.time() + 600
    while not committed.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.kill()
    _, stderr = proc.communicate()
    assert committed.is_dir(), stderr[-2000:]
    return proc.returncode


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    total = 16  # 12 steps after the kill point: the run is still training when it is killed
    flags = [
        f"--config.train.steps={total}",
        f"--config.train.eval_every={total}",
        "--config.checkpoint.every=4",
        "--config.train.log_every=2",
    ]
    _cli(tmp_path / "straight", *flags)
    assert _kill_at_checkpoint(tmp_path / "resumed", 4, *flags) == -9
    assert not (tmp_path / "resumed" / "checkpoints" / str(total)).exists()
    resumed = _cli(tmp_path / "resumed", *flags)
    assert "resumed from" in resumed.stdout
    a, b = _params_at(tmp_path / "straight", total), _params_at(tmp_path / "resumed", total)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_unknown_config_key_is_rejected(tmp_path):
    proc = _cli(tmp_path, "--config.train.stepz=3", check=False)
    assert proc.returncode != 0
    assert "stepz" in proc.stderr


@pytest.mark.parametrize("size", [0, 1, 3])
def test_prefetch_keeps_order_and_reads_no_further_than_the_limit(size):
    read = []

    def source():
        for i in range(100):
            read.append(i)
            yield i

    with input_pipeline.Prefetch(source(), lambda x: x * 10, size, limit=7) as feed:
        assert list(feed) == [i * 10 for i in range(7)]
        assert next(feed, None) is None  # stays ended
    assert read == list(range(7))


def test_prefetch_raises_the_producers_error_and_stops_on_the_consumers():
    def broken():
        yield 1
        raise OSError("disk gone")

    feed = input_pipeline.Prefetch(broken(), lambda x: x, 2, limit=5)
    with feed, pytest.raises(OSError, match="disk gone"):
        list(feed)
    assert not feed._thread.is_alive()
    feed = input_pipeline.Prefetch(iter(range(1000)), lambda x: x, 2, limit=1000)
    with pytest.raises(KeyboardInterrupt), feed:
        next(feed)
        time.sleep(0.1)  # the thread now blocks on a full queue
        raise KeyboardInterrupt
    assert not feed._thread.is_alive()


def test_real_tokens_per_task_mask():
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    assert metrics.real_tokens({"input_mask": mask}) == 3
    assert metrics.real_tokens({"input_mask": mask, "decoder_mask": mask[:, :2]}) == 6
    assert metrics.real_tokens({"document_ids": np.array([[1, 1, 2, 0]])}) == 3
    # word2vec: C = 2 centres between W = 1 context words each side; -1 = no sentence
    w2v = {"sentence": np.array([[0, 0, -1, -1]]), "window": np.ones((1, 2))}
    assert metrics.real_tokens(w2v) == 1
    assert metrics.real_tokens({"weight": np.array([[0.5, 0.0, 1.0]])}) == 2
    assert metrics.real_tokens({"tokens": mask}) is None


def test_throughput_mfu_needs_a_peak_and_profile_steps_are_checked():
    cfg = _cfg(pretrain, "size=tiny,runlocal")
    out = metrics.Throughput(cfg, 1e12, 8).summary(steps=2, seconds=4.0, tokens=100)
    assert out["tflops_per_device"] == pytest.approx(8 * 1e12 / 2.0 / jax.device_count() / 1e12)
    assert out["tokens_per_sec"] == 25.0 and "mfu" not in out  # CPU: no peak
    cfg.train.peak_tflops_per_device = 0.5
    out = metrics.Throughput(cfg, 1e12, 8).summary(steps=2, seconds=4.0, tokens=None)
    assert out["mfu"] == pytest.approx(out["tflops_per_device"] / 0.5)
    assert "tokens_per_sec" not in out
    for bad in ("3", "3,2", "0,2", "a,b"):
        with pytest.raises(ConfigError, match="profile_steps"):
            metrics.ProfileWindow(bad, "/tmp/unused")
