"""Pieces every SeqIO task shares: the sharded source, the downstream-task registry.

A downstream module (classification.py, tagging.py) describes each of its base tasks in one
registry entry holding a `TaskInfo` and calls `add_base(name, info, register)` at import;
`tasks.get_task_name` then registers the (base, vocab) variant on demand. Everything else reads
the task from `downstream_info(name)`: the configs its kind, classes and default seq_len, the
models and objectives its kind, `tlx.evaluate` its metric, the launchers and
`python -m tlx.tasks list` the list of tasks (`tasks.downstream_tasks()`).
"""

import dataclasses
from collections.abc import Callable

import numpy as np
import seqio


class ShardedFunctionSource(seqio.FunctionDataSource):
    """A FunctionDataSource whose dataset_fn gets the ShardInfo, so a host builds only its shard.

    seqio's own FunctionDataSource refuses shard_info and shards the full example stream instead.
    """

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **unused):
        return self._dataset_fn(
            split=split, shuffle_files=shuffle, seed=seed, shard_info=shard_info
        )


def shard_order(n: int, shuffle: bool, seed, shard_info, salt: int) -> np.ndarray:
    """Indices of this shard: a seed-shuffled global order (if asked), every num_shards-th."""
    order = np.arange(n)
    if shuffle:
        order = np.random.default_rng([(seed or 0) & 0xFFFFFFFF, salt]).permutation(order)
    if shard_info is not None:
        order = order[shard_info.index :: shard_info.num_shards]
    return order


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What a model, objective and evaluator need to know about a downstream task.

    kind: 'sentence' | 'pair' (features input_ids, input_mask, segment_ids, label) or
      'tagging' (input_ids, input_mask, segment_ids, labels, label_weights, word_labels).
    labels: class / tag names; index = label id.
    metric_fn: seqio-style (targets, predictions) -> {name: value}. Classification: lists of
      label ids. Tagging: lists (one per sentence) of word-level tag-name lists.
    primary_metric: the key of metric_fn's result that picks the best dev checkpoint.
    splits: the splits the task provides ('validation' is always the dev split).
    seq_len: the configs' default sequence length, one that holds (nearly) every example in
      BERT WordPiece pieces (the tests report the truncation rate).
    title: what the data is, in a few words (`python -m tlx.tasks list`, the README table).
    data: where the examples come from: a folder under $TLX_DATA_DIR, or `tfds:NAME` for a
      TFDS dataset (downloaded on first use: network needed).
    """

    kind: str
    labels: tuple[str, ...]
    metric_fn: Callable[[list, list], dict[str, float]]
    primary_metric: str
    splits: tuple[str, ...] = ("train", "validation", "test")
    seq_len: int = 128
    title: str = ""
    data: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def needs_network(self) -> bool:
        return self.data.startswith("tfds:")


# base name -> (TaskInfo, register(name, vocab_spec) -> None)
DOWNSTREAM: dict[str, tuple[TaskInfo, Callable[[str, str], None]]] = {}


def add_base(name: str, info: TaskInfo, register: Callable[[str, str], None]) -> None:
    if info.kind not in ("sentence", "pair", "tagging"):
        raise ValueError(f"task {name}: unknown kind {info.kind!r}")
    if info.primary_metric == "" or info.seq_len < 3 or not info.labels:
        raise ValueError(f"task {name}: needs labels, a primary metric and a seq_len >= 3")
    if name in DOWNSTREAM:
        raise ValueError(f"task {name} is registered twice")
    DOWNSTREAM[name] = (info, register)
