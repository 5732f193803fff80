"""Sentence and sentence-pair classification tasks (placeholder: sst2 only, being extended)."""

import seqio

from data_pipelines import sources, sst2, vocabularies


def _register_sst2(name: str, vocab_spec: str) -> None:
    seqio.TaskRegistry.add(
        name,
        source=sources.ShardedFunctionSource(sst2.source_dataset, splits=tuple(sst2.SPLIT_FILES)),
        preprocessors=[sst2.make_classification_preprocessor(vocab_spec)],
        output_features=sst2.output_features(vocabularies.get_vocabulary(vocab_spec)),
        metric_fns=[sst2.accuracy],
        shuffle_buffer_size=1024,
    )


sources.add_base(
    "sst2",
    sources.TaskInfo("sentence", ("negative", "positive"), sst2.accuracy, "accuracy"),
    _register_sst2,
)
