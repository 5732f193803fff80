"""SST-2 sentence classification ($TLX_DATA_DIR/classification/sst2, `label<space>text` lines)."""

import pathlib

import numpy as np
import seqio
import tensorflow as tf

from data_pipelines import paths, vocabularies
from data_pipelines.corpus import CorpusFormatError

SPLIT_FILES = {
    "train": "stsa.binary.train",
    "validation": "stsa.binary.dev",
    "test": "stsa.binary.test",
}
NUM_CLASSES = 2


def read_sst2(path: str | pathlib.Path) -> tuple[list[int], list[str]]:
    """(labels, texts) of one split file; raises naming the file and line on malformed input."""
    labels, texts = [], []
    path = pathlib.Path(path)
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            label, _, text = line.partition(" ")
            if label not in ("0", "1") or not text.strip():
                raise CorpusFormatError(
                    f"{path}:{line_no}: expected '<0|1> <sentence>', got {line[:60]!r}"
                )
            labels.append(int(label))
            texts.append(text.strip())
    return labels, texts


def split_file(split: str, data_dir=None) -> pathlib.Path:
    if split not in SPLIT_FILES:
        raise ValueError(f"sst2 split must be one of {tuple(SPLIT_FILES)}, got {split!r}")
    return paths.data_dir(data_dir) / "classification" / "sst2" / SPLIT_FILES[split]


def source_dataset(split, shuffle_files, seed=None, shard_info=None, data_dir=None):
    """Raw {"text", "label"} examples of this host's shard; shuffled by `seed` if asked."""
    labels, texts = read_sst2(split_file(split, data_dir))
    order = np.arange(len(labels))
    if shuffle_files:
        order = np.random.default_rng([(seed or 0) & 0xFFFFFFFF, 0x5572]).permutation(order)
    if shard_info is not None:
        order = order[shard_info.index :: shard_info.num_shards]
    return tf.data.Dataset.from_tensor_slices(
        {
            "text": tf.constant([texts[i] for i in order], tf.string),
            "label": tf.constant([labels[i] for i in order], tf.int32),
        }
    )


def make_classification_preprocessor(vocab_spec: str):
    """`[CLS] text [SEP]`, truncated and zero-padded to sequence_length["input_ids"]."""

    def encode(ds: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
        vocab = vocabularies.get_vocabulary(vocab_spec)
        special = vocabularies.special_ids(vocab)
        seq_len = sequence_length["input_ids"]

        def fn(ex):
            ids = vocab.encode_tf(ex["text"])[: seq_len - 2]  # [n]
            ids = tf.concat([[special.cls], tf.cast(ids, tf.int32), [special.sep]], axis=0)
            pad = [[0, seq_len - tf.shape(ids)[0]]]
            mask = tf.ones_like(ids)
            return {
                "input_ids": tf.ensure_shape(
                    tf.pad(ids, pad, constant_values=special.pad), [seq_len]
                ),
                "input_mask": tf.ensure_shape(tf.pad(mask, pad), [seq_len]),
                "segment_ids": tf.zeros([seq_len], tf.int32),
                "label": ex["label"],
            }

        return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)

    return encode


def accuracy(targets, predictions) -> dict[str, float]:
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    if targets.shape != predictions.shape:
        raise ValueError(f"targets {targets.shape} and predictions {predictions.shape} differ")
    return {"accuracy": 100.0 * float(np.mean(targets == predictions))}


def output_features(vocab: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    def feature(v, rank=1):
        return seqio.Feature(v, add_eos=False, dtype=tf.int32, rank=rank)

    flags = seqio.PassThroughVocabulary(2)
    return {
        "input_ids": feature(vocab),
        "input_mask": feature(flags),
        "segment_ids": feature(flags),
        "label": feature(seqio.PassThroughVocabulary(NUM_CLASSES), rank=0),
    }
