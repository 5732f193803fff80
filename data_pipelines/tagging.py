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
Tag names, the metrics' input, are `TaskInfo.labels[id]`.
"""

import dataclasses
import functools
import pathlib
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import seqio
import tensorflow as tf
from seqeval import metrics as seqeval_metrics

from data_pipelines import datafiles, paths, sources, vocabularies

CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
WNUT17_TAGS = (
    "O",
    *(
        f"{bio}-{kind}"
        for kind in ("corporation", "creative-work", "group", "location", "person", "product")
        for bio in "BI"
    ),
)
UPOS_TAGS = (
    *("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM"),
    *("PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"),
)
SPLITS = ("train", "validation", "test")


class Sentence(NamedTuple):
    words: tuple[str, ...]
    tags: tuple[str, ...]


# ---------------------------------------------------------------------------- readers

_BOUNDARY = object()  # a line that ends the current sentence
_SKIP = object()  # a line that carries no token


class _BadLine(Exception):
    """Raised by a line parser; `_read_sentences` turns it into a FormatError (file:line)."""


def _read_sentences(
    path: str | pathlib.Path, tags: Sequence[str], parse: Callable[[str], object]
) -> list[Sentence]:
    """Sentences of a one-token-per-line file; `parse(line)` -> (word, tag), _BOUNDARY or _SKIP."""
    path = pathlib.Path(path)
    known = frozenset(tags)
    sentences, words, labels = [], [], []
    for line_no, line in datafiles.lines(path):
        line = line.rstrip("\r\n")
        try:
            parsed = parse(line)
            if parsed is not _BOUNDARY and parsed is not _SKIP and parsed[1] not in known:
                raise _BadLine(f"unknown tag {parsed[1]!r} (known: {' '.join(tags)})")
        except _BadLine as e:
            raise datafiles.bad(path, line_no, f"{e}; line is {line[:80]!r}") from None
        if parsed is _SKIP:
            continue
        if parsed is _BOUNDARY:
            if words:
                sentences.append(Sentence(tuple(words), tuple(labels)))
                words, labels = [], []
            continue
        words.append(parsed[0])
        labels.append(parsed[1])
    if words:
        sentences.append(Sentence(tuple(words), tuple(labels)))
    if not sentences:
        raise datafiles.no_records(path, "tagged sentences")
    return sentences


def _parse_conll2003(line: str):
    fields = line.split()
    if not fields or fields[0] == "-DOCSTART-":  # a document separator is never a sentence
        return _BOUNDARY
    if len(fields) != 2:
        raise _BadLine(f"expected 'token TAG', got {len(fields)} column(s)")
    return fields[0], fields[1]


def _parse_wnut17(line: str):
    line = line.replace("\ufeff", "")  # upstream dev.conll has stray byte-order marks
    if not line.strip():
        return _BOUNDARY
    fields = line.split("\t")
    if len(fields) != 2 or not fields[0]:
        raise _BadLine(f"expected 'token<TAB>TAG', got {len(fields)} column(s)")
    return fields[0], fields[1]


def _parse_conllu(line: str):
    if not line.strip():
        return _BOUNDARY
    if line.startswith("#"):
        return _SKIP
    fields = line.split("\t")
    if len(fields) != 10:
        raise _BadLine(f"expected 10 tab-separated CoNLL-U columns, got {len(fields)}")
    token_id = fields[0]
    if "-" in token_id or "." in token_id:  # multiword token range / empty node: not a word
        return _SKIP
    if not token_id.isdigit():
        raise _BadLine(f"bad token ID {token_id!r}")
    return fields[1], fields[3]  # FORM, UPOS


def read_conll2003(path: str | pathlib.Path, tags: Sequence[str] = CONLL2003_TAGS):
    """`token TAG` lines, blank line between sentences, `-DOCSTART- O` lines skipped."""
    return _read_sentences(path, tags, _parse_conll2003)


def read_wnut17(path: str | pathlib.Path, tags: Sequence[str] = WNUT17_TAGS):
    """`token<TAB>TAG` lines, blank line between sentences; U+FEFF removed everywhere."""
    return _read_sentences(path, tags, _parse_wnut17)


def read_conllu(path: str | pathlib.Path, tags: Sequence[str] = UPOS_TAGS):
    """CoNLL-U (optionally .gz): FORM and UPOS of each word; multiword and empty nodes skipped."""
    return _read_sentences(path, tags, _parse_conllu)


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


# ---------------------------------------------------------------------------- evaluation


def outside_id(labels: Sequence[str]) -> int:
    """The tag id a truncated (unpredicted) word gets: "O" for NER, "X" (other) for UPOS."""
    for name in ("O", "X"):
        if name in labels:
            return list(labels).index(name)
    raise ValueError(f"no 'O' or 'X' tag in {labels}")


def words_from_pieces(
    pred_ids, label_weights, word_labels, outside_id: int
) -> tuple[list[int], list[int]]:
    """Per-position predictions [L] -> (gold tag ids, predicted tag ids) of the sentence's words.

    The k-th position with label_weight 1 is word k's prediction; the words after the kept ones
    (truncated from the input) are predicted `outside_id`.
    """
    pred_ids, label_weights, word_labels = map(np.asarray, (pred_ids, label_weights, word_labels))
    if not pred_ids.shape == label_weights.shape == word_labels.shape:
        raise ValueError(
            f"shapes differ: pred_ids {pred_ids.shape}, label_weights {label_weights.shape}, "
            f"word_labels {word_labels.shape}"
        )
    gold = word_labels[word_labels >= 0]
    kept = pred_ids[label_weights > 0]
    if len(kept) > len(gold):
        raise ValueError(f"{len(kept)} first pieces but only {len(gold)} words")
    pred = np.concatenate([kept, np.full(len(gold) - len(kept), outside_id, kept.dtype)])
    return gold.tolist(), pred.tolist()


def _as_names(sentences) -> list[list[str]]:
    return [[t.decode() if isinstance(t, bytes) else str(t) for t in s] for s in sentences]


def _checked(targets, predictions) -> tuple[list[list[str]], list[list[str]]]:
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} target sentences but {len(predictions)} predicted")
    for i, (t, p) in enumerate(zip(targets, predictions)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} gold tags but {len(p)} predicted")
    return _as_names(targets), _as_names(predictions)


def _token_accuracy(targets: list[list[str]], predictions: list[list[str]]) -> float:
    total = sum(len(t) for t in targets)
    correct = sum(a == b for t, p in zip(targets, predictions) for a, b in zip(t, p))
    return correct / total if total else 0.0


def entity_metrics(targets, predictions) -> dict[str, float]:
    """Entity-level precision/recall/F1 (seqeval, conlleval-compatible) and token accuracy, as
    fractions in [0, 1] (tables show them x 100, in percent).

    targets, predictions: one list of tag names per sentence.
    """
    targets, predictions = _checked(targets, predictions)
    scores = {
        name: float(fn(targets, predictions, zero_division=0))
        for name, fn in (
            ("precision", seqeval_metrics.precision_score),
            ("recall", seqeval_metrics.recall_score),
            ("f1", seqeval_metrics.f1_score),
        )
    }
    return scores | {"token_accuracy": _token_accuracy(targets, predictions)}


def tag_accuracy(targets, predictions) -> dict[str, float]:
    """Word-level tag accuracy, a fraction in [0, 1]; targets, predictions: one list of tag
    names per sentence."""
    return {"accuracy": _token_accuracy(*_checked(targets, predictions))}


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
