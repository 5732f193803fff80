"""Per-process batches from a registered SeqIO task, by index (data_pipelines.indexed).

The training batch at step s is global stream positions [s B, (s + 1) B) of the task's split
(an epoch a seeded permutation of its examples), and process p of P holds rows
[p B / P, (p + 1) B / P) of it: a function of (task, seed, examples consumed, B), computed
directly. So a run's global batches do not depend on how many hosts read them, and a resume
at any step costs the same (no replay). Evaluation reads the split once, in order, padded.
"""

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np

import data_pipelines
from data_pipelines import indexed
from tlx.errors import ConfigError


def _local_rows(global_batch: int) -> tuple[int, int]:
    """[lo, hi): this process' rows of every global batch."""
    procs, p = jax.process_count(), jax.process_index()
    if global_batch % procs:
        raise ConfigError(f"train.batch_size={global_batch} is not divisible by {procs} processes")
    per = global_batch // procs
    return p * per, (p + 1) * per


def examples(cfg: ml_collections.ConfigDict, split: str, shuffle: bool) -> indexed.Examples:
    """The run's split as random-access examples (built once per process)."""
    return indexed.examples(cfg.data.task_name, split, cfg.data.seq_len, cfg.seed, shuffle)


def data_fingerprint(cfg: ml_collections.ConfigDict) -> dict:
    """What the training stream is a function of, as saved in checkpoints and checked on resume."""
    return {
        "task": cfg.data.task_name,
        "seed": int(cfg.seed),
        "fingerprint": examples(cfg, "train", True).fingerprint(),
    }


def train_batches(
    cfg, global_batch: int, start_example: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Endless local training batches from global stream position `start_example` on.

    Positions count examples, not batches, so a run resumed with another batch size continues
    the same example sequence."""
    ex = examples(cfg, "train", True)
    lo, hi = _local_rows(global_batch)
    weight = np.ones(hi - lo, np.float32)
    g = start_example
    while True:
        batch = indexed.global_rows(ex, g + lo, g + hi)
        batch["example_weight"] = weight
        yield batch
        g += global_batch


def example_batch(cfg, global_batch: int) -> dict[str, np.ndarray]:
    """Zeros shaped like one local training batch, from the task's spec (reads no data)."""
    lo, hi = _local_rows(global_batch)
    spec = data_pipelines.get_dataset(
        cfg.data.task_name, split="train", seq_len=cfg.data.seq_len, seed=cfg.seed,
        shuffle=False, num_epochs=1,
    ).element_spec  # fmt: skip
    batch = {k: np.zeros((hi - lo, *s.shape), s.dtype.as_numpy_dtype) for k, s in spec.items()}
    batch["example_weight"] = np.ones((hi - lo,), np.float32)
    return batch


def eval_batches(cfg, global_batch: int, split: str) -> tuple[Iterator[dict], int]:
    """(iterator of local eval batches, number of steps). `train.eval_steps=-1` covers the
    whole split once: positions past its end are padding (example_weight 0), as are whole
    batches after it; every process runs the same number of steps, so collectives stay in
    lockstep."""
    ex = examples(cfg, split, False)
    n = len(ex)
    lo, hi = _local_rows(global_batch)
    steps = cfg.train.eval_steps
    if steps < 0:
        steps = math.ceil(n / global_batch)

    def batches():
        g = 0
        while True:
            at = np.arange(g + lo, g + hi)
            real = at < n
            batch = ex.take(np.where(real, at, 0))
            for v in batch.values():
                v[~real] = 0
            batch["example_weight"] = real.astype(np.float32)
            yield batch
            g += global_batch

    return batches(), steps


def split_size(cfg, split: str) -> int:
    """Number of examples in a split of the run's task (its first epoch's, for word2vec)."""
    return len(examples(cfg, split, False))


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
