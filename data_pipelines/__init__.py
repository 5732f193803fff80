"""tlx data pipelines: vocabularies, the pretraining corpus, and the registered seqio tasks."""

from data_pipelines import tasks  # noqa: F401  (registers bert_pretrain and sst2)
from data_pipelines.tasks import get_dataset, get_task_name

__all__ = ["get_dataset", "get_task_name"]
