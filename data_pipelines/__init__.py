"""tlx data pipelines: vocabularies, the pretraining corpus, and the registered seqio tasks."""

from data_pipelines import tasks  # noqa: F401  (registers bert_pretrain and the downstream tasks)
from data_pipelines.tasks import (
    downstream_info,
    downstream_tasks,
    get_dataset,
    get_task_name,
    task_dimensions,
)

__all__ = ["downstream_info", "downstream_tasks", "get_dataset", "get_task_name", "task_dimensions"]
