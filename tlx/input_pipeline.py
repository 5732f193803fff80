"""Per-process batches from a registered SeqIO task.

The stream is split into `num_shards` data shards (default: one per process). Process p reads
only shards [p*k, (p+1)*k), k = num_shards / process_count, and its local batch is the
concatenation of one sub-batch per shard. So a run's global batches are a function of
(task, seed, num_shards) alone, not of how many hosts read them: 2 processes x 1 shard and
1 process x 2 shards see identical data.
"""

import functools
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf

import data_pipelines
from tlx.errors import ConfigError


def _shard_plan(cfg: ml_collections.ConfigDict, global_batch: int) -> tuple[list[int], int, int]:
    procs, p = jax.process_count(), jax.process_index()
    shards = cfg.data.num_shards or procs
    if shards % procs:
        raise ConfigError(f"data.num_shards={shards} is not a multiple of {procs} processes")
    if global_batch % shards:
        raise ConfigError(
            f"train.batch_size={global_batch} is not divisible by {shards} data shards "
            f"(data.num_shards, default one per process)"
        )
    k = shards // procs
    return list(range(p * k, (p + 1) * k)), shards, global_batch // shards


def _dataset(cfg, split: str, seed: int, shard: int, num_shards: int, repeat: bool, shuffle: bool):
    """The task's examples, with every feature its variant makes (ELMo's `char_ids` [L, 50] are
    the task option `data.options.char_ids`, added by the task itself: data_pipelines.chars)."""
    return data_pipelines.get_dataset(
        cfg.data.task_name,
        split=split,
        seq_len=cfg.data.seq_len,
        seed=seed,
        shuffle=shuffle,
        shard_index=shard,
        num_shards=num_shards,
        num_epochs=None if repeat else 1,
    )


def data_shards(cfg, global_batch: int) -> int:
    """The number of data shards the stream is split into (the stream depends on it)."""
    return _shard_plan(cfg, global_batch)[1]


def train_batches(
    cfg, global_batch: int, start_example: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled local batches, after the first `start_example` examples (global).

    The skip is counted in examples of each shard's stream, not in batches, so a run resumed
    with another batch size continues the same example sequence."""
    shards, num_shards, per_shard = _shard_plan(cfg, global_batch)
    if start_example % num_shards:
        raise ValueError(f"{start_example} examples consumed do not split over {num_shards} shards")
    skip = start_example // num_shards
    parts = [
        _dataset(cfg, "train", cfg.seed, s, num_shards, repeat=True, shuffle=True)
        .skip(skip)
        .batch(per_shard, drop_remainder=True)
        for s in shards
    ]
    ds = tf.data.Dataset.zip(tuple(parts)).map(
        lambda *xs: {k: tf.concat([x[k] for x in xs], 0) for k in xs[0]}
    )
    ds = ds.prefetch(tf.data.AUTOTUNE)
    for batch in ds.as_numpy_iterator():
        batch["example_weight"] = np.ones(len(next(iter(batch.values()))), np.float32)
        yield batch


def example_batch(cfg, global_batch: int) -> dict[str, np.ndarray]:
    """Zeros shaped like one local training batch, from the dataset's spec (reads no data)."""
    shards, num_shards, per_shard = _shard_plan(cfg, global_batch)
    spec = _dataset(cfg, "train", cfg.seed, shards[0], num_shards, True, False).element_spec
    local = per_shard * len(shards)
    batch = {k: np.zeros((local, *s.shape), s.dtype.as_numpy_dtype) for k, s in spec.items()}
    batch["example_weight"] = np.ones((local,), np.float32)
    return batch


def _padded(it, per_shard: int, spec) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-size batches from a finite stream; after it ends, all-padding batches forever."""
    zeros = {k: np.zeros(s.shape, s.dtype.as_numpy_dtype) for k, s in spec.items()}
    while True:
        rows = [x for _, x in zip(range(per_shard), it)]
        rows += [zeros] * (per_shard - len(rows))
        batch = {k: np.stack([r[k] for r in rows]) for k in spec}
        batch["example_weight"] = np.array([r is not zeros for r in rows], np.float32)
        yield batch


@functools.cache
def _local_split_size(task_name, split, seq_len, seed, shards: tuple[int, ...], num_shards) -> int:
    """Largest of this process's shard sizes; counted once per run, not at every evaluation."""
    return max(
        sum(1 for _ in data_pipelines.get_dataset(
            task_name, split=split, seq_len=seq_len, seed=seed, shuffle=False, shard_index=s,
            num_shards=num_shards, num_epochs=1))
        for s in shards
    )  # fmt: skip


def eval_batches(cfg, global_batch: int, split: str) -> tuple[Iterator[dict], int]:
    """(iterator of local eval batches, number of steps). `train.eval_steps=-1` covers the
    whole split once (padding examples carry example_weight 0); every process runs the same
    number of steps so collectives stay in lockstep."""
    shards, num_shards, per_shard = _shard_plan(cfg, global_batch)
    parts = [
        _dataset(cfg, split, cfg.seed, s, num_shards, repeat=False, shuffle=False) for s in shards
    ]
    steps = cfg.train.eval_steps
    if steps < 0:
        local = _local_split_size(
            cfg.data.task_name, split, cfg.data.seq_len, cfg.seed, tuple(shards), num_shards
        )
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            local = int(np.max(multihost_utils.process_allgather(np.array(local))))
        steps = math.ceil(local / per_shard)
    iters = [_padded(p.as_numpy_iterator(), per_shard, p.element_spec) for p in parts]

    def merged():
        for subs in zip(*iters, strict=True):
            yield {k: np.concatenate([s[k] for s in subs]) for k in subs[0]}

    return merged(), steps


def split_size(cfg, split: str) -> int:
    """Number of examples in a split of the run's task (all shards), counted once per run."""
    return _local_split_size(cfg.data.task_name, split, cfg.data.seq_len, cfg.seed, (0,), 1)


class Prefetch:
    """`fn(x)` for the first `limit` items x of `source`, computed `size` items ahead on one
    background thread, so the next batch is read and placed on device (`fn`:
    partitioning.global_batch, a per-process placement, no collective: safe on every process
    of a multi-controller run) while the current step runs. One thread consuming `source` in
    order keeps the stream deterministic; items beyond `limit` are never read. An exception
    in the thread is raised by `next()`; `close()` (or leaving the `with`) stops the thread on
    any exit, KeyboardInterrupt included. `size` <= 0 computes each item on demand instead."""

    _END = object()

    def __init__(self, source: Iterator, fn: Callable, size: int, limit: int):
        self._source, self._fn, self._left = iter(source), fn, limit
        self._queue: queue.Queue = queue.Queue(maxsize=max(size, 1))
        self._stop = threading.Event()
        self._thread = None
        if size > 0:
            self._thread = threading.Thread(target=self._produce, name="tlx-prefetch", daemon=True)
            self._thread.start()

    def _produce(self) -> None:
        try:
            while self._left > 0 and not self._stop.is_set():
                self._left -= 1
                if not self._put((True, self._fn(next(self._source)))):
                    return
            self._put((True, self._END))
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer, raised there
            self._put((False, e))

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        if self._thread is None:
            if self._left <= 0:
                raise StopIteration
            self._left -= 1
            return self._fn(next(self._source))
        ok, value = self._queue.get()
        if not ok:
            raise value
        if value is self._END:
            self._queue.put((True, self._END))  # a later next() ends too
            raise StopIteration
        return value

    def close(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            deadline = time.monotonic() + timeout  # a read that never returns: leave it (daemon)
            while self._thread.is_alive() and time.monotonic() < deadline:
                try:  # unblock a put; what was prefetched is dropped
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            if self._thread.is_alive():
                return
        closer = getattr(self._source, "close", None)
        if closer is not None:  # a generator: finalises tf.data's iterator now, not at exit
            closer()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
