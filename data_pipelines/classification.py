"""Sentence and sentence-pair classification tasks: one `TaskData` entry each in DATASETS.

Files under $TLX_DATA_DIR (see its SOURCE.txt files):
  sst2     classification/sst2/stsa.binary.{train,dev,test}  `<0|1> <sentence>` lines
  sst5     classification/sst5/stsa.fine.{train,dev,test}    `<0..4> <sentence>` lines
  trec     classification/trec/TREC.{train,test}.label.txt   `COARSE:fine <question>` lines
  ag_news  classification/ag_news/test.csv  `"<1..4>","<title>","<description>"` CSV rows
  mrpc     pair_classification/mrpc/msr_paraphrase_{train,test}.txt  TSV, BOM, CRLF, no quoting
  rte      pair_classification/rte/{train,validation}.jsonl  {"sentence1","sentence2","label"}
Raw examples use GLUE's field names, {"sentence", "label"} or {"sentence1", "sentence2", "label"},
so the `<task>_tfds` variants (GLUE from TFDS, needs the network) share every later step.
The readers of those formats are in classification_readers.py; the features the raw examples
become (`[CLS] a [SEP] b [SEP]`, input_mask, segment_ids, label) in classification_features.py.
This module holds the registry, the splits and carves, the metrics, the seqio registration and
the GLUE-style mixture.
Splits a task lacks are carved from one of its files (`TaskData.carve`): trec and mrpc cut
"validation" from train; ag_news, one file, cuts validation and test and trains on the rest.
A carve takes the rows of smallest content hash (not numpy's RNG), so it is the same for every
run seed, user and numpy version.
"""

import dataclasses
import functools
import hashlib
import pathlib
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import seqio
import sklearn.metrics
import tensorflow as tf

from data_pipelines import paths, sources, vocabularies
from data_pipelines.classification_features import (
    make_encode_preprocessor,
    make_task_id_preprocessor,
    make_tfds_fields_preprocessor,
    output_features,
    text_fields,
)
from data_pipelines.classification_features import (
    truncated_pair_lengths as truncated_pair_lengths,  # re-exported
)
from data_pipelines.classification_readers import (
    MRPC_LABELS,
    RTE_LABELS,
    SST2_LABELS,
    TREC_LABELS,
    Row,
    read_class_csv,
    read_mrpc,
    read_rte,
    read_sst,
    read_trec,
)

SHUFFLE_BUFFER = 1024


# ---------------------------------------------------------------------------- metrics


def _label_arrays(targets, predictions) -> tuple[np.ndarray, np.ndarray]:
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    if targets.shape != predictions.shape or targets.ndim != 1:
        raise ValueError(f"targets {targets.shape} and predictions {predictions.shape} differ")
    return targets, predictions


def accuracy(targets, predictions) -> dict[str, float]:
    """Accuracy as a fraction in [0, 1] (tables show it x 100, in percent)."""
    targets, predictions = _label_arrays(targets, predictions)
    return {"accuracy": float(np.mean(targets == predictions))}


def accuracy_and_f1(targets, predictions) -> dict[str, float]:
    """Accuracy, F1 of class 1, and their mean (GLUE's MRPC score); fractions in [0, 1]."""
    targets, predictions = _label_arrays(targets, predictions)
    acc = float(np.mean(targets == predictions))
    f1 = float(sklearn.metrics.f1_score(targets, predictions, zero_division=0))
    return {"accuracy": acc, "f1": f1, "accuracy_and_f1": (acc + f1) / 2}


# ---------------------------------------------------------------------------- datasets


@dataclasses.dataclass(frozen=True)
class TaskData:
    """A classification task's registry entry: what it is, where its files are, how to read them.

    info: kind, labels, metric, splits, default seq_len, title and data folder (sources.TaskInfo).
    files: key -> file name under info.data; a key is a split, or the file a carve cuts.
    reader: (path, info.labels) -> rows.
    carve: (file key, {split: size}): those splits are cut from that file in order (size: a
      count, or a fraction of its rows) and "train" is what remains; see `carve`.
    tfds_name: also register `<task>_tfds`, the same task read from this TFDS dataset.
    """

    info: sources.TaskInfo
    files: Mapping[str, str]
    reader: Callable[[str | pathlib.Path, Sequence[str]], list[Row]]
    carve: tuple[str, Mapping[str, float]] | None = None
    tfds_name: str | None = None

    def __post_init__(self):
        if self.carve and (self.carve[0] not in self.files or "train" in self.carve[1]):
            raise ValueError(
                f"{self.info.data}: carve {self.carve} must cut a file of {dict(self.files)} "
                "into splits other than train (train is what remains)"
            )
        missing = [s for s in self.info.splits if s not in self.files and not self.carved(s)]
        if missing:
            raise ValueError(f"{self.info.data}: splits {missing} have no file and no carve")

    def carved(self, split: str) -> bool:
        return self.carve is not None and split in ("train", *self.carve[1])

    @property
    def folder(self) -> str:
        return self.info.data

    def read(self, path: str | pathlib.Path) -> list[Row]:
        return self.reader(path, self.info.labels)

    def file_of(self, split: str) -> str:
        """The file key `split` is read from (the carved file for a carved split)."""
        return self.carve[0] if self.carved(split) else split


DATASETS: dict[str, TaskData] = {
    "sst2": TaskData(
        sources.TaskInfo(
            "sentence",
            SST2_LABELS,
            accuracy,
            "accuracy",
            seq_len=64,
            title="SST-2 sentences",
            data="classification/sst2",
        ),
        {"train": "stsa.binary.train", "validation": "stsa.binary.dev", "test": "stsa.binary.test"},
        read_sst,
        tfds_name="glue/sst2:2.0.0",
    ),
    "sst5": TaskData(
        sources.TaskInfo(
            "sentence",
            ("very negative", "negative", "neutral", "positive", "very positive"),
            accuracy,
            "accuracy",
            seq_len=64,
            title="SST-5 sentences",
            data="classification/sst5",
        ),
        {"train": "stsa.fine.train", "validation": "stsa.fine.dev", "test": "stsa.fine.test"},
        read_sst,
    ),
    "trec": TaskData(
        sources.TaskInfo(
            "sentence",
            TREC_LABELS,
            accuracy,
            "accuracy",
            seq_len=32,
            title="TREC question type, coarse",
            data="classification/trec",
        ),
        {"train": "TREC.train.label.txt", "test": "TREC.test.label.txt"},
        read_trec,
        carve=("train", {"validation": 0.1}),
    ),
    "ag_news": TaskData(
        sources.TaskInfo(
            "sentence",
            ("World", "Sports", "Business", "Sci/Tech"),  # the data's classes.txt
            accuracy,
            "accuracy",
            seq_len=128,
            title="AG News topic, title + description",
            data="classification/ag_news",
        ),
        {"all": "test.csv"},  # only AG News' 7,600-row test set ships
        read_class_csv,
        carve=("all", {"validation": 800, "test": 800}),  # train: the other 6,000
    ),
    "mrpc": TaskData(
        sources.TaskInfo(
            "pair",
            MRPC_LABELS,
            accuracy_and_f1,
            "accuracy_and_f1",
            seq_len=128,
            title="MSR paraphrase",
            data="pair_classification/mrpc",
        ),
        {"train": "msr_paraphrase_train.txt", "test": "msr_paraphrase_test.txt"},
        read_mrpc,
        carve=("train", {"validation": 408}),  # GLUE's dev size; GLUE's dev ids are not in the data
        tfds_name="glue/mrpc:2.0.0",
    ),
    "rte": TaskData(
        sources.TaskInfo(
            "pair",
            RTE_LABELS,
            accuracy,
            "accuracy",
            ("train", "validation"),
            seq_len=128,
            title="GLUE RTE entailment",
            data="pair_classification/rte",
        ),
        {"train": "train.jsonl", "validation": "validation.jsonl"},
        read_rte,
        tfds_name="glue/rte:2.0.0",
    ),
}


def _salt(task: str) -> int:
    return zlib.crc32(task.encode())


def carve(rows: Sequence[Row], sizes: Mapping[str, float], salt: int) -> dict[str, list[Row]]:
    """{split: rows} for each split of `sizes` (a count, or a fraction of all the rows), cut in
    that order from the rows of smallest content hash, and "train": the rest; each in file
    order. A function of the rows' content and `salt` only: the same for every run seed."""
    digests = [hashlib.sha256(f"{salt}\t{r.label}\t{r.texts}".encode()).digest() for r in rows]
    ranked = sorted(range(len(rows)), key=lambda i: (digests[i], i))
    out, start = {}, 0
    for split, size in sizes.items():
        n = int(size) if size >= 1 else round(size * len(rows))
        out[split] = [rows[i] for i in sorted(ranked[start : start + n])]
        start += n
    if start >= len(rows):
        raise ValueError(f"carving {dict(sizes)} from {len(rows)} rows leaves no train rows")
    train = set(ranked[start:])
    out["train"] = [r for i, r in enumerate(rows) if i in train]
    return out


def split_files(task: str, split: str, data_dir=None) -> list[pathlib.Path]:
    """The file `split_rows(task, split)` reads (the carved file for a carved split)."""
    dataset = DATASETS[task]
    if split not in dataset.info.splits:
        raise ValueError(f"task {task!r} has splits {dataset.info.splits}, not {split!r}")
    return [paths.data_dir(data_dir) / dataset.folder / dataset.files[dataset.file_of(split)]]


def split_rows(task: str, split: str, data_dir=None) -> list[Row]:
    """The rows of one split of a file-backed task, in file order."""
    dataset = DATASETS[task]
    (path,) = split_files(task, split, data_dir)
    rows = dataset.read(path)
    return carve(rows, dataset.carve[1], _salt(task))[split] if dataset.carved(split) else rows


def source_dataset(split, shuffle_files, seed=None, shard_info=None, *, task: str, data_dir=None):
    """Raw examples of this host's shard of `split`; a seed-shuffled order if asked."""
    rows = split_rows(task, split, data_dir)
    order = sources.shard_order(len(rows), shuffle_files, seed, shard_info, _salt(task))
    columns = {
        name: tf.constant([rows[i].texts[j] for i in order], tf.string)
        for j, name in enumerate(text_fields(DATASETS[task].info.kind))
    }
    columns["label"] = tf.constant([rows[i].label for i in order], tf.int32)
    return tf.data.Dataset.from_tensor_slices(columns)


# ---------------------------------------------------------------------------- registration


def _register(
    name: str,
    vocab_spec: str,
    *,
    task: str,
    framing: str = "bert",
    extra=(),
    num_classes=None,
    num_tasks=None,
):
    info = DATASETS[task].info
    seqio.TaskRegistry.add(
        name,
        source=sources.ShardedFunctionSource(
            functools.partial(source_dataset, task=task), splits=info.splits
        ),
        preprocessors=[make_encode_preprocessor(vocab_spec, info.kind, framing), *extra],
        output_features=output_features(
            vocabularies.get_vocabulary(vocab_spec), num_classes or info.num_classes, num_tasks
        ),
        metric_fns=[info.metric_fn],
        shuffle_buffer_size=SHUFFLE_BUFFER,
    )


def _register_tfds(name: str, vocab_spec: str, *, task: str, framing: str = "bert") -> None:
    info = DATASETS[task].info
    seqio.TaskRegistry.add(
        name,
        # GLUE's test labels are hidden (-1), so only train and validation.
        source=seqio.TfdsDataSource(DATASETS[task].tfds_name, splits=("train", "validation")),
        preprocessors=[
            make_tfds_fields_preprocessor(info.kind),
            make_encode_preprocessor(vocab_spec, info.kind, framing),
        ],
        output_features=output_features(vocabularies.get_vocabulary(vocab_spec), info.num_classes),
        metric_fns=[info.metric_fn],
        shuffle_buffer_size=SHUFFLE_BUFFER,
    )


for _task, _dataset in DATASETS.items():
    sources.add_base(_task, _dataset.info, functools.partial(_register, task=_task))
    if _dataset.tfds_name:
        tfds_info = dataclasses.replace(
            _dataset.info,
            splits=("train", "validation"),  # GLUE's test labels are hidden
            title=f"{_task} read from TFDS",
            data=f"tfds:{_dataset.tfds_name}",
        )
        sources.add_base(
            f"{_task}_tfds",
            tfds_info,
            functools.partial(_register_tfds, task=_task),
        )


# ---------------------------------------------------------------------------- mixture

DEFAULT_MIXTURE_TASKS = ("sst2", "trec", "mrpc", "rte")
_MIXTURES: dict[str, tuple[str, ...]] = {}
_MIXTURE_VOCABS: dict[str, str] = {}  # mixture name -> its members' vocabulary spec


def num_train_examples(task: str) -> int:
    return len(split_rows(task, "train"))


def get_mixture_name(
    tasks: Sequence[str] = DEFAULT_MIXTURE_TASKS,
    rates: Mapping[str, float] | None = None,
    vocab: str = vocabularies.DEFAULT_VOCAB,
    framing: str = "bert",
) -> str:
    """Registers (once) a seqio Mixture of `tasks` and returns its name.

    Members add a scalar `task_id` (index in `tasks`); labels stay task-local. rates=None samples
    proportionally to each task's train size; else a {task: rate} dict. The defaults give
    `glue_mix`, anything else `glue_mix__<hash>`.
    """
    if framing not in vocabularies.FRAMINGS:
        raise ValueError(f"framing must be one of {vocabularies.FRAMINGS}, got {framing!r}")
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in DATASETS]
    if unknown or len(set(tasks)) != len(tasks) or not tasks:
        raise ValueError(f"mixture tasks must be distinct, from {tuple(DATASETS)}; got {tasks}")
    if rates is not None:
        if set(rates) != set(tasks) or any(rates[t] <= 0 for t in tasks):
            raise ValueError(f"rates must give a positive rate for each of {tasks}, got {rates}")
        rates = {t: float(rates[t]) for t in tasks}
    defaults = (DEFAULT_MIXTURE_TASKS, None, vocabularies.DEFAULT_VOCAB, "bert")
    if (tasks, rates, vocab, framing) == defaults:
        name = "glue_mix"
    else:
        key = repr((tasks, sorted(rates.items()) if rates else None, vocab))
        if framing != "bert":  # so the bert-framed mixtures keep their names
            key += f"framing={framing}"
        name = f"glue_mix__{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    if name in seqio.MixtureRegistry.names():
        return name
    if rates is None:
        rates = {t: float(num_train_examples(t)) for t in tasks}
    num_classes = max(DATASETS[t].info.num_classes for t in tasks)  # one label vocab for all
    members = []
    for task_id, task in enumerate(tasks):
        member = f"{name}.{task}"
        if member not in seqio.TaskRegistry.names():
            _register(
                member,
                vocab,
                task=task,
                framing=framing,
                extra=[make_task_id_preprocessor(task_id)],
                num_classes=num_classes,
                num_tasks=len(tasks),
            )
        members.append((member, rates[task]))
    seqio.MixtureRegistry.add(name, members)
    _MIXTURES[name] = tasks
    _MIXTURE_VOCABS[name] = vocab
    return name


def mixture_vocab(name: str) -> str:
    """The vocabulary spec of a mixture from get_mixture_name."""
    mixture_tasks(name)  # raises for an unknown name
    return _MIXTURE_VOCABS[name]


def mixture_tasks(name: str) -> tuple[str, ...]:
    """The base tasks of a mixture from get_mixture_name, in task_id order."""
    if name not in _MIXTURES:
        raise ValueError(
            f"{name!r} is not a mixture from get_mixture_name; known: {sorted(_MIXTURES)}"
        )
    return _MIXTURES[name]
