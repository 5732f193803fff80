"""tlx data pipelines: vocabularies, the pretraining corpus, and the registered seqio tasks."""

from data_pipelines import tasks  # noqa: F401  (registers bert_pretrain and the downstream tasks)
from data_pipelines.tasks import downstream_info, get_dataset, get_task_name

__all__ = ["downstream_info", "get_dataset", "get_task_name"]
