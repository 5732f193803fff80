"""Causal-LM (GPT) rows: pretraining-corpus documents, chunked, packed several to a row.

    document  = its sentences' ids, then eos ([SEP], see vocabularies.gpt_ids)
    chunks    = consecutive pieces of at most seq_len tokens; no token is dropped
    rows      = chunks packed first-fit, several documents' chunks to a row of L tokens:

    input_ids     a1 a2 a3 eos b1 b2 eos c1 c2 pad pad
    document_ids  1  1  1  1   2  2  2   3  3  0   0
    positions     0  1  2  3   0  1  2   0  1  0   0

Every feature is int32 [L]; padding only at the end. There are no targets: the model predicts
the next token within the same document_id, so padding and document ends carry no loss. A chunk
is its own document for document_ids and positions (with rows as long as chunks, as get_dataset
gives, two chunks of one document never share a row: only the last can be short).

Stages: the source chunks the split (same corpus, split and token cache as bert_pretrain), orders
the chunks (seed-permuted for training, document order unshuffled) and keeps every
num_shards-th; the packing preprocessor then fills rows from windows of PACK_WINDOW chunks.
Sharding before packing keeps shards disjoint and balanced within one chunk. seq_len is an
option, as for bert_pretrain, because chunks are cut in the source, which never sees seqio's
`sequence_length`; `tasks.get_dataset` routes to the variant for the asked length.
"""

import dataclasses
import functools
import logging

import numpy as np
import seqio
import tensorflow as tf

from data_pipelines import bert_pretrain, corpus, sources, vocabularies

FEATURES = ("input_ids", "document_ids", "positions")
# Rows are packed from windows of this many consecutive chunks: long documents make nearly all
# chunks full, so a row gets a second document only where several documents' last chunks meet
# in one window. seqio's trim_and_pack_dataset only appends to the newest row (next-fit), so a
# short last chunk followed by a full chunk always leaves its row part padding (train split at
# L=128, bert_uncased: 0.58% padding next-fit, 0.13% first-fit).
PACK_WINDOW = 1024
SHUFFLE_BUFFER = 1024
_SALT = 0xC0A5A1  # the chunk permutation's stream, distinct from other sources'


@dataclasses.dataclass(frozen=True)
class CausalLMOptions:
    seq_len: int = 128  # longest chunk; the rows' length L may be larger, never smaller
    # Corpus source names, or "tfds:NAME[:SPLIT]" (see corpus.read_source).
    sources: tuple[str, ...] = corpus.DEFAULT_SOURCES
    eval_fraction: float = 0.05

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        if self.seq_len < 1:
            raise ValueError(f"seq_len={self.seq_len} must be positive")
        if not 0.0 <= self.eval_fraction <= 1.0:
            raise ValueError(f"eval_fraction={self.eval_fraction} is not in [0, 1]")


def chunk_documents(
    docs: list[bert_pretrain.TokenizedDoc], seq_len: int, eos: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ids [T], bounds [C + 1]): chunk c is ids[bounds[c]:bounds[c + 1]], in document order."""
    ids, bounds, total = [], [0], 0
    for doc in docs:
        tokens = np.concatenate([*doc, [eos]]).astype(np.int32)
        ids.append(tokens)
        ends = np.append(np.arange(seq_len, len(tokens), seq_len), len(tokens))
        bounds.extend(total + ends)
        total += len(tokens)
    flat = np.concatenate(ids) if ids else np.zeros([0], np.int32)
    return flat, np.array(bounds, np.int64)


def load_chunks(
    vocab: seqio.Vocabulary, split: str, options: CausalLMOptions, data_dir=None
) -> tuple[np.ndarray, np.ndarray]:
    """The split's chunks (see chunk_documents) under the vocabulary, from the token cache."""
    docs = bert_pretrain.load_tokenized(
        vocab, split, options.sources, options.eval_fraction, data_dir
    )
    if not docs:
        raise ValueError(
            f"split {split!r} of sources {options.sources} has no documents "
            f"(eval_fraction={options.eval_fraction})"
        )
    flat, bounds = chunk_documents(docs, options.seq_len, vocabularies.gpt_ids(vocab).eos)
    logging.info("causal_lm %s: %d documents, %d tokens", split, len(docs), len(flat))
    return flat, bounds


def source_dataset(split, shuffle_files, seed=None, shard_info=None, *, vocab_spec, options):
    """{"input_ids": int32 [n <= seq_len]} chunks of this host's shard."""
    flat, bounds = load_chunks(vocabularies.get_vocabulary(vocab_spec), split, options)
    order = sources.shard_order(len(bounds) - 1, shuffle_files, seed, shard_info, _SALT)
    starts, lengths = bounds[order], bounds[order + 1] - bounds[order]
    # Token indices of the selected chunks, in order: [sum(lengths)]
    index = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    index = index + np.arange(len(index))
    chunks = tf.RaggedTensor.from_row_lengths(flat[index], lengths)
    return tf.data.Dataset.from_tensor_slices({"input_ids": chunks})


# ---------------------------------------------------------------------------- packing


def first_fit(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each chunk goes to the first row, oldest first, with room left; a new row if none has.

    Returns, per chunk: its row, its offset in the row, and its number there (1, 2, ...).
    """
    row, offset, number = (np.zeros(len(lengths), np.int64) for _ in range(3))
    used = np.zeros(len(lengths), np.int64)  # tokens in each row opened so far
    count = np.zeros(len(lengths), np.int64)  # chunks in each row
    num_rows = 0
    for i, n in enumerate(lengths):
        room = np.flatnonzero(used[:num_rows] + n <= capacity)
        r = room[0] if len(room) else num_rows
        num_rows += not len(room)
        count[r] += 1
        row[i], offset[i], number[i] = r, used[r], count[r]
        used[r] += n
    return row, offset, number


def pack(ids: np.ndarray, lengths: np.ndarray, seq_len: int, pad: int) -> dict[str, np.ndarray]:
    """Chunks (flat ids [T], lengths [C], each <= seq_len) -> rows: FEATURES, int32 [R, seq_len]."""
    if len(lengths) and lengths.max() > seq_len:
        raise ValueError(f"a chunk of {lengths.max()} tokens does not fit a row of {seq_len}")
    row, offset, number = first_fit(lengths, seq_len)
    num_rows = int(row.max()) + 1 if len(row) else 0
    chunk_of = np.repeat(np.arange(len(lengths)), lengths)  # [T]
    position = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # [T]
    at = (row[chunk_of], offset[chunk_of] + position)
    out = {
        "input_ids": np.full([num_rows, seq_len], pad, np.int32),
        "document_ids": np.zeros([num_rows, seq_len], np.int32),
        "positions": np.zeros([num_rows, seq_len], np.int32),
    }
    out["input_ids"][at] = ids
    out["document_ids"][at] = number[chunk_of]
    out["positions"][at] = position
    return out


def make_packing_preprocessor(vocab_spec: str, options: CausalLMOptions):
    """Chunks -> packed rows of L = sequence_length["input_ids"] tokens (see module doc)."""

    def pack_rows(ds: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
        seq_len = sequence_length["input_ids"]
        if seq_len < options.seq_len:
            raise ValueError(
                f"rows of {seq_len} tokens would cut chunks of up to {options.seq_len}: "
                "use the task variant for this length (tasks.get_dataset finds it)"
            )
        pad = vocabularies.gpt_ids(vocabularies.get_vocabulary(vocab_spec)).pad

        def fn(batch):
            chunks = batch["input_ids"]
            rows = tf.numpy_function(
                lambda ids, lengths: tuple(pack(ids, lengths, seq_len, pad).values()),
                [chunks.flat_values, chunks.row_lengths()],
                [tf.int32] * len(FEATURES),
                stateful=False,
            )
            return {k: tf.ensure_shape(v, [None, seq_len]) for k, v in zip(FEATURES, rows)}

        return ds.ragged_batch(PACK_WINDOW).map(fn, num_parallel_calls=tf.data.AUTOTUNE).unbatch()

    return pack_rows


def output_features(vocab: seqio.Vocabulary, seq_len: int) -> dict[str, seqio.Feature]:
    def feature(v):
        return seqio.Feature(v, add_eos=False, dtype=tf.int32, rank=1)

    return {
        "input_ids": feature(vocab),
        "document_ids": feature(seqio.PassThroughVocabulary(seq_len + 1)),
        "positions": feature(seqio.PassThroughVocabulary(seq_len)),
    }


def register(name: str, vocab_spec: str, options: CausalLMOptions) -> None:
    seqio.TaskRegistry.add(
        name,
        source=sources.ShardedFunctionSource(
            functools.partial(source_dataset, vocab_spec=vocab_spec, options=options),
            splits=corpus.SPLITS,
        ),
        preprocessors=[make_packing_preprocessor(vocab_spec, options)],
        output_features=output_features(vocabularies.get_vocabulary(vocab_spec), options.seq_len),
        shuffle_buffer_size=SHUFFLE_BUFFER,
    )
