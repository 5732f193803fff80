"""Token tagging tasks: CoNLL-2003 NER, WNUT-17 NER, UD English-EWT UPOS (+ a TFDS CoNLL-2003).

Sources yield raw sentences {"words": string [n], "tags": int32 [n]}; a preprocessor tokenizes
every word on its own and puts the word's tag on the word's FIRST piece only:

    words                 John   lives  in     Yellowknife
    input_ids      [CLS]  john   lives  in     yellow ##k    ##ni   ##fe   [SEP]  [PAD] ...
    labels         0      B-PER  O      O      B-LOC  0      0      0      0      0 ...
    label_weights  0      1      1      1      1      0      0      0      0      0 ...
    word_labels    B-PER  O      O      B-LOC  -1     -1 ...   (one per word)

Every feature is int32 [L], L = sequence_length["input_ids"]. Whole trailing words that do not
fit between [CLS] and [SEP] are dropped; `word_labels` still holds the gold tags of all words, so
an evaluator maps per-position predictions back to words with `words_from_pieces` and scores
truncated words as predicted `outside_id(labels)` ("O"; "X" for UPOS) instead of dropping them.
A sentence of more than L words keeps only its first L words' tags there (L = 128 holds every
CoNLL-2003 and WNUT-17 sentence; UD-EWT train has sentences of up to 159 words).

A word that tokenizes to nothing (e.g. U+200B) becomes one [UNK], so every word has a first piece.
framing="gpt" ends the pieces with GPT-1's extract token [MASK] instead of [SEP]; all else is
the same.
Tag names, the metrics' input, are `TaskInfo.labels[id]`. The file readers are in
tagging_readers.py, the metrics (and `words_from_pieces`) in tagging_metrics.py.
"""

import dataclasses
import functools
import pathlib
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from data_pipelines import paths, sources, vocabularies
from data_pipelines.tagging_metrics import entity_metrics, tag_accuracy
from data_pipelines.tagging_metrics import outside_id as outside_id  # re-exported
from data_pipelines.tagging_metrics import words_from_pieces as words_from_pieces  # re-exported
from data_pipelines.tagging_readers import (
    CONLL2003_TAGS,
    UPOS_TAGS,
    WNUT17_TAGS,
    Sentence,
    read_conll2003,
    read_conllu,
    read_wnut17,
)

SPLITS = ("train", "validation", "test")


def split_file(base: str, split: str, data_dir=None) -> pathlib.Path:
    corpus = CORPORA[base]
    if split not in corpus.split_files:
        raise ValueError(f"{base} split must be one of {tuple(corpus.split_files)}, got {split!r}")
    return paths.data_dir(data_dir) / corpus.info.data / corpus.split_files[split]


@functools.cache
def _parsed(base: str, path: str) -> tuple[list[Sentence], dict[str, np.ndarray]]:
    """Sentences of one file, and their flat arrays: read once per process."""
    corpus = CORPORA[base]
    sentences = corpus.reader(pathlib.Path(path), corpus.tags)
    tag_id = {t: i for i, t in enumerate(corpus.tags)}
    lengths = np.array([len(s.words) for s in sentences], np.int64)
    arrays = {
        "words": np.array([w for s in sentences for w in s.words], dtype=object),
        "tags": np.array([tag_id[t] for s in sentences for t in s.tags], np.int32),
        "row_splits": np.concatenate([[0], np.cumsum(lengths)]),
    }
    return sentences, arrays


def read_split(base: str, split: str, data_dir=None) -> list[Sentence]:
    """All sentences of a base task's split (cached per file)."""
    return list(_parsed(base, str(split_file(base, split, data_dir)))[0])


def source_dataset(split, shuffle_files, seed=None, shard_info=None, *, base, data_dir=None):
    """Raw {"words": string [n], "tags": int32 [n]} sentences of this host's shard."""
    a = _parsed(base, str(split_file(base, split, data_dir)))[1]
    salt = zlib.crc32(base.encode())
    order = sources.shard_order(len(a["row_splits"]) - 1, shuffle_files, seed, shard_info, salt)
    starts, limits = a["row_splits"][order], a["row_splits"][order + 1]
    lengths = limits - starts
    # Word indices of the selected sentences, in order: [sum(lengths)]
    index = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    index = index + np.arange(len(index))
    row_lengths = tf.constant(lengths, tf.int64)
    words = tf.constant(a["words"][index].tolist(), tf.string)
    return tf.data.Dataset.from_tensor_slices(
        {
            "words": tf.RaggedTensor.from_row_lengths(words, row_lengths),
            "tags": tf.RaggedTensor.from_row_lengths(a["tags"][index], row_lengths),
        }
    )


# ---------------------------------------------------------------------------- alignment


def word_pieces(vocab: seqio.Vocabulary, words: tf.Tensor, unk_id: int) -> tf.RaggedTensor:
    """int32 pieces of each word, [n, (pieces)]; a word with no pieces gets [unk_id]."""
    pieces = vocab.encode_tf(words)
    if not isinstance(pieces, tf.RaggedTensor):
        raise TypeError(f"{vocab}.encode_tf(words [n]) must give a RaggedTensor [n, (pieces)]")
    if pieces.ragged_rank > 1:
        pieces = pieces.merge_dims(1, -1)
    pieces = tf.cast(pieces, tf.int32).with_row_splits_dtype(tf.int64)
    empty = tf.cast(tf.equal(pieces.row_lengths(), 0), tf.int64)  # [n]
    unk = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.reduce_sum(empty)], tf.constant(unk_id, tf.int32)), empty
    )
    return tf.concat([pieces, unk], axis=1)


def align_batch(
    words: tf.RaggedTensor,
    tags: tf.RaggedTensor,
    *,
    vocab: seqio.Vocabulary,
    seq_len: int,
    framing: str = "bert",
) -> dict[str, tf.Tensor]:
    """Sentences' words [B, (n)] and tag ids [B, (n)] -> the tagging features, int32 [B, seq_len].

    Vectorised over the batch (one tokenizer call per batch: ~5x faster than per sentence). Whole
    trailing words that do not fit between [CLS] and [SEP] are dropped (a first word of more than
    seq_len - 2 pieces leaves no word kept).
    """
    special = vocabularies.special_ids(vocab)
    start_id, _, end_id = vocabularies.frame_ids(vocab, framing)
    words, tags = words.with_row_splits_dtype(tf.int64), tags.with_row_splits_dtype(tf.int64)
    batch = words.nrows()
    pieces = word_pieces(vocab, words.flat_values, special.unk)  # [W, (pieces)]
    num_pieces = pieces.row_lengths()  # [W], >= 1
    sentence = words.value_rowids()  # [W]
    total = tf.concat([[0], tf.cumsum(num_pieces)], axis=0)  # [W + 1] pieces before word w
    offset = tf.gather(total, words.row_starts())  # [B] pieces before each sentence
    end = total[1:] - tf.gather(offset, sentence)  # [W] pieces up to word w in its sentence
    keep = end <= seq_len - 2  # [W]; a prefix of each sentence, as every word has a piece
    first = end - num_pieces + 1  # [W] position of each word's first piece, after [CLS]
    piece_keep = tf.repeat(keep, num_pieces)  # [P]
    kept = tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(pieces.flat_values, piece_keep),
        tf.boolean_mask(tf.repeat(sentence, num_pieces), piece_keep),
        nrows=batch,
    )  # [B, (kept pieces)]

    def column(token_id):
        return tf.RaggedTensor.from_tensor(tf.fill([batch, 1], token_id)).with_row_splits_dtype(
            tf.int64
        )

    ids = tf.concat([column(start_id), kept, column(end_id)], axis=1)
    at_first = tf.stack([sentence[keep], first[keep]], axis=1)  # [kept words, 2]
    shape = tf.stack([batch, tf.constant(seq_len, tf.int64)])
    return {
        "input_ids": ids.to_tensor(special.pad, shape=[None, seq_len]),
        "input_mask": tf.sequence_mask(ids.row_lengths(), seq_len, tf.int32),
        "segment_ids": tf.zeros(tf.cast(shape, tf.int32), tf.int32),
        "labels": tf.scatter_nd(at_first, tf.cast(tags.flat_values[keep], tf.int32), shape),
        "label_weights": tf.scatter_nd(at_first, tf.ones_like(first[keep], tf.int32), shape),
        "word_labels": tf.cast(tags, tf.int32).to_tensor(-1, shape=[None, seq_len]),
    }


def align_words(
    words, tags, *, vocab: seqio.Vocabulary, seq_len: int, framing: str = "bert"
) -> dict[str, tf.Tensor]:
    """One sentence's words [n] and tag ids [n] -> the tagging features, each int32 [seq_len]."""

    def as_row(x):
        return tf.RaggedTensor.from_tensor(tf.convert_to_tensor(x)[tf.newaxis])

    features = align_batch(
        as_row(words), as_row(tags), vocab=vocab, seq_len=seq_len, framing=framing
    )
    return {k: v[0] for k, v in features.items()}


def make_tagging_preprocessor(vocab_spec: str, batch_size: int = 64, framing: str = "bert"):
    """Raw sentences -> fixed-length features of sequence_length["input_ids"] (see module doc)."""

    def align(ds: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
        vocab = vocabularies.get_vocabulary(vocab_spec)
        seq_len = sequence_length["input_ids"]

        def fn(ex):
            features = align_batch(
                ex["words"], ex["tags"], vocab=vocab, seq_len=seq_len, framing=framing
            )
            return {k: tf.ensure_shape(v, [None, seq_len]) for k, v in features.items()}

        return ds.ragged_batch(batch_size).map(fn, num_parallel_calls=tf.data.AUTOTUNE).unbatch()

    return align


def output_features(vocab: seqio.Vocabulary, num_tags: int) -> dict[str, seqio.Feature]:
    def feature(v):
        return seqio.Feature(v, add_eos=False, dtype=tf.int32, rank=1)

    flags, tag_ids = seqio.PassThroughVocabulary(2), seqio.PassThroughVocabulary(num_tags)
    return {
        "input_ids": feature(vocab),
        "input_mask": feature(flags),
        "segment_ids": feature(flags),
        "labels": feature(tag_ids),
        "label_weights": feature(flags),
        "word_labels": feature(tag_ids),
    }


# ---------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A tagging task's registry entry: what it is (info: tags = labels, metric, default
    seq_len, data folder), its split files under info.data, and the reader of one file."""

    info: sources.TaskInfo
    split_files: Mapping[str, str]
    reader: Callable[[pathlib.Path, Sequence[str]], list[Sentence]]

    @property
    def tags(self) -> tuple[str, ...]:
        return self.info.labels


CORPORA = {
    "conll2003_ner": Corpus(
        sources.TaskInfo(
            "tagging",
            CONLL2003_TAGS,
            entity_metrics,
            "f1",
            seq_len=128,
            title="CoNLL-2003 NER",
            data="tagging/conll2003",
        ),
        {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"},
        read_conll2003,
    ),
    "wnut17_ner": Corpus(
        sources.TaskInfo(
            "tagging",
            WNUT17_TAGS,
            entity_metrics,
            "f1",
            seq_len=64,
            title="WNUT-17 emerging-entity NER",
            data="tagging/wnut17",
        ),
        {"train": "train.conll", "validation": "dev.conll", "test": "test.conll"},
        read_wnut17,
    ),
    "ud_ewt_upos": Corpus(
        sources.TaskInfo(
            "tagging",
            UPOS_TAGS,
            tag_accuracy,
            "accuracy",
            seq_len=128,
            title="UD English-EWT UPOS",
            data="tagging/ud_ewt",
        ),
        {
            "train": "en_ewt-ud-train.conllu.gz",
            "validation": "en_ewt-ud-dev.conllu",
            "test": "en_ewt-ud-test.conllu",
        },
        read_conllu,
    ),
}


# The ClassLabel names of TFDS conll2003 `ner` (tensorflow_datasets 4.9:
# core/dataset_builders/conll/conll_dataset_builder_utils.NER_TAGS). Today they equal
# CONLL2003_TAGS; ids are still remapped by name, so a reordering upstream only needs this tuple.
TFDS_CONLL2003 = "conll2003:1.0.0"
TFDS_CONLL2003_NER_TAGS = (
    "O",
    "B-PER",
    "I-PER",
    "B-ORG",
    "I-ORG",
    "B-LOC",
    "I-LOC",
    "B-MISC",
    "I-MISC",
)
TFDS_CONLL2003_SPLITS = {"train": "train", "validation": "dev", "test": "test"}


def tfds_conll2003_to_raw(
    ds: tf.data.Dataset, source_tags: Sequence[str] = TFDS_CONLL2003_NER_TAGS
) -> tf.data.Dataset:
    """TFDS conll2003 examples {"tokens", "ner", ...} -> raw {"words", "tags" (our tag ids)}."""
    unknown = sorted(set(source_tags) - set(CONLL2003_TAGS))
    if unknown:
        raise ValueError(f"TFDS conll2003 tags {unknown} are not in {CONLL2003_TAGS}")
    remap = tf.constant([CONLL2003_TAGS.index(t) for t in source_tags], tf.int32)
    return ds.map(
        lambda ex: {"words": ex["tokens"], "tags": tf.gather(remap, ex["ner"])},
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _register(
    name: str, vocab_spec: str, *, base: str, info: sources.TaskInfo, framing: str = "bert"
) -> None:
    if base in CORPORA:
        source = sources.ShardedFunctionSource(
            functools.partial(source_dataset, base=base), splits=SPLITS
        )
        preprocessors = [make_tagging_preprocessor(vocab_spec, framing=framing)]
    else:
        source = seqio.TfdsDataSource(TFDS_CONLL2003, splits=TFDS_CONLL2003_SPLITS)
        preprocessors = [
            tfds_conll2003_to_raw,
            make_tagging_preprocessor(vocab_spec, framing=framing),
        ]
    seqio.TaskRegistry.add(
        name,
        source=source,
        preprocessors=preprocessors,
        output_features=output_features(vocabularies.get_vocabulary(vocab_spec), info.num_classes),
        metric_fns=[info.metric_fn],
        shuffle_buffer_size=1024,
    )


TFDS_INFO = dataclasses.replace(
    CORPORA["conll2003_ner"].info,
    title="conll2003_ner read from TFDS",
    data=f"tfds:{TFDS_CONLL2003}",
)
for _base, _info in [*((b, c.info) for b, c in CORPORA.items()), ("conll2003_ner_tfds", TFDS_INFO)]:
    sources.add_base(_base, _info, functools.partial(_register, base=_base, info=_info))
