"""Pieces every SeqIO task shares: the sharded source, the downstream-task registry.

A downstream module (classification.py, tagging.py) describes each of its base tasks with a
`TaskInfo` and calls `add_base(name, info, register)` at import; `tasks.get_task_name` then
registers the (base, vocab) variant on demand, and models, objectives and `tlx.evaluate` read
the task's kind, labels and metric from `downstream_info(name)`.
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
    """

    kind: str
    labels: tuple[str, ...]
    metric_fn: Callable[[list, list], dict[str, float]]
    primary_metric: str
    splits: tuple[str, ...] = ("train", "validation", "test")

    @property
    def num_classes(self) -> int:
        return len(self.labels)


# base name -> (TaskInfo, register(name, vocab_spec) -> None)
DOWNSTREAM: dict[str, tuple[TaskInfo, Callable[[str, str], None]]] = {}


def add_base(name: str, info: TaskInfo, register: Callable[[str, str], None]) -> None:
    if info.kind not in ("sentence", "pair", "tagging"):
        raise ValueError(f"task {name}: unknown kind {info.kind!r}")
    DOWNSTREAM[name] = (info, register)
