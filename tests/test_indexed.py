"""The training stream by index (data_pipelines.indexed, tlx.input_pipeline): a resumed stream
is exactly the uninterrupted one, any process count reads the same global batches, a resume
computes only the rows it returns, epochs are permutations, and a data change is an error."""

import sys

import jax
import numpy as np
import pytest

from configs.bert import pretrain as bert_pretrain_config
from configs.gpt import pretrain as gpt_pretrain_config
from data_pipelines import indexed
from tlx import config_checks, input_pipeline, steps
from tlx.errors import ConfigError

_cfg = sys.modules["tlx_tests_conftest"].config_with  # tests/conftest.py


def _resolved(module, arg, **overrides):
    cfg = _cfg(module, arg, **overrides)
    cfg.data.task_name = steps.resolve_task(cfg)
    return cfg


@pytest.fixture(scope="module")
def bert():
    return _resolved(bert_pretrain_config, "size=tiny,runlocal")


def _take(it, n):
    return [next(it) for _ in range(n)]


def _equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_at_step_s_gives_the_uninterrupted_batches(bert):
    n = len(input_pipeline.examples(bert, "train", True))
    batch = 32
    whole = _take(input_pipeline.train_batches(bert, batch, 0), 6)
    for s in (1, 4):
        resumed = _take(input_pipeline.train_batches(bert, batch, s * batch), 6 - s)
        for a, b in zip(whole[s:], resumed, strict=True):
            _equal(a, b)
    # Across an epoch boundary, masks included: the batches around position n are the same
    # whether the stream started at 0 or was resumed right before them.
    s = n // batch - 1
    whole = _take(input_pipeline.train_batches(bert, batch, 0), s + 3)[s:]
    resumed = _take(input_pipeline.train_batches(bert, batch, s * batch), 3)
    for a, b in zip(whole, resumed, strict=True):
        _equal(a, b)


def test_one_two_and_four_processes_read_the_same_global_batches(bert, monkeypatch):
    reference = _take(input_pipeline.train_batches(bert, 16, 48), 3)
    for procs in (2, 4):
        local = []
        for p in range(procs):
            monkeypatch.setattr(jax, "process_count", lambda procs=procs: procs)
            monkeypatch.setattr(jax, "process_index", lambda p=p: p)
            local.append(_take(input_pipeline.train_batches(bert, 16, 48), 3))
        for step in range(3):
            joined = {
                k: np.concatenate([local[p][step][k] for p in range(procs)])
                for k in reference[step]
            }
            _equal(reference[step], joined)


def test_resuming_late_computes_only_the_rows_it_returns(bert, monkeypatch):
    """O(1) resume: the first batch at step 100,000 builds 32 rows, as at step 10 (no replay)."""
    ex = input_pipeline.examples(bert, "train", True)
    counted = []
    real_rows = type(ex).rows

    def rows(self, index, epoch):
        counted.append(len(index))
        return real_rows(self, index, epoch)

    monkeypatch.setattr(type(ex), "rows", rows)
    for step in (10, 100_000):
        counted.clear()
        batch = next(input_pipeline.train_batches(bert, 32, step * 32))
        assert sum(counted) == 32 and batch["input_ids"].shape[0] == 32


def test_an_epoch_visits_every_example_once_in_a_new_order(bert):
    ex = input_pipeline.examples(bert, "train", True)
    n = len(ex)
    first, second = ex.order(0), ex.order(1)
    assert sorted(first.tolist()) == list(range(n)) == sorted(second.tolist())
    assert (first != second).mean() > 0.9
    # The same instance in two epochs: same sentence pair, new masks.
    i = int(first[0])
    where = int(np.flatnonzero(second == i)[0])
    a, b = indexed.global_rows(ex, 0, 1), indexed.global_rows(ex, n + where, n + where + 1)
    np.testing.assert_array_equal(a["segment_ids"], b["segment_ids"])
    assert not np.array_equal(a["masked_lm_positions"], b["masked_lm_positions"])


def test_seed_changes_the_order_and_the_masks():
    a = _resolved(bert_pretrain_config, "size=tiny,runlocal", seed=0)
    b = _resolved(bert_pretrain_config, "size=tiny,runlocal", seed=1)
    x = next(input_pipeline.train_batches(a, 16, 0))["input_ids"]
    y = next(input_pipeline.train_batches(b, 16, 0))["input_ids"]
    assert not np.array_equal(x, y)


def test_eval_batches_cover_the_split_once_with_padding(bert):
    bert.train.eval_steps = -1
    ex = input_pipeline.examples(bert, "validation", False)
    n = len(ex)
    batches, steps_ = input_pipeline.eval_batches(bert, 64, "validation")
    assert steps_ == -(-n // 64)
    got = _take(batches, steps_ + 1)  # one more: all padding
    weights = np.concatenate([b["example_weight"] for b in got])
    assert len(weights) > n and weights[:n].all() and not weights[n:].any()
    direct = indexed.global_rows(ex, 0, n)
    for k in direct:
        full = np.concatenate([b[k] for b in got])
        np.testing.assert_array_equal(full[:n], direct[k], err_msg=k)
        assert not full[n:].any(), k  # padding rows are zeros


@pytest.mark.parametrize(
    "module,arg",
    [
        (bert_pretrain_config, "size=tiny,runlocal"),
        (gpt_pretrain_config, "size=tiny,runlocal"),
    ],
)
def test_example_batch_has_the_training_batch_shapes(module, arg):
    cfg = _resolved(module, arg)
    real = next(input_pipeline.train_batches(cfg, 8, 0))
    zeros = input_pipeline.example_batch(cfg, 8)
    assert real.keys() == zeros.keys()
    for k in real:
        assert (real[k].shape, real[k].dtype) == (zeros[k].shape, zeros[k].dtype), k


def test_a_data_change_under_a_resumed_run_is_an_error(bert, tmp_path):
    saved = input_pipeline.data_fingerprint(bert)
    config_checks.check_data(saved, dict(saved), str(tmp_path))  # unchanged: fine
    ex = input_pipeline.examples(bert, "train", True)
    changed = indexed.Arrays({k: v.copy() for k, v in ex.arrays.items()}, 0, True)
    changed.arrays["input_ids"][0, 1] += 1  # one token of one example
    now = {**saved, "fingerprint": changed.fingerprint()}
    with pytest.raises(ConfigError, match="training data changed.*fingerprint"):
        config_checks.check_data(saved, now, str(tmp_path))
    with pytest.raises(ConfigError, match="seed 0 -> 1"):
        config_checks.check_data(saved, {**saved, "seed": 1}, str(tmp_path))


def test_mixture_samples_members_by_rate():
    members = [
        indexed.Arrays({"x": np.full((10, 1), 0)}, 0, True),
        indexed.Arrays({"x": np.full((30, 1), 1)}, 0, True),
    ]
    mix = indexed.Mixture(members, [1.0, 3.0], seed=0)
    x = indexed.global_rows(mix, 0, 8000)["x"][:, 0]
    assert abs(x.mean() - 0.75) < 0.02  # binomial sd 0.005
    np.testing.assert_array_equal(x[4000:4100], indexed.global_rows(mix, 4000, 4100)["x"][:, 0])


def test_word2vec_epochs_of_varying_size_map_positions_to_rows():
    calls = []

    def build(e):
        calls.append(e)
        return {"x": np.arange(3 + e)[:, None] + 100 * e}

    ex = indexed.EpochRows(build, lambda e: 3 + e, "d")
    x = indexed.global_rows(ex, 0, 12)["x"][:, 0]  # epochs of 3, 4, 5 rows
    np.testing.assert_array_equal(x, [0, 1, 2, 100, 101, 102, 103, 200, 201, 202, 203, 204])
    np.testing.assert_array_equal(indexed.global_rows(ex, 6, 8)["x"][:, 0], [103, 200])
    assert calls.count(1) == 1 and calls.count(2) == 1  # an epoch is built once, when entered
