"""Embedding tables from word vectors; the word-vector files themselves are read and written by
data_pipelines.vector_files, whose names are importable from here too (`wordvec.load`,
`wordvec.save`, `wordvec.WordVectors`, `wordvec.load_source("glove6b")`, ...).

`embedding_matrix` turns any vectors into the initial embedding table of a word vocabulary.
"""

from collections.abc import Sequence

import jax
import numpy as np

from data_pipelines import vocabularies
from data_pipelines.vector_files import (
    FORMATS,
    WordVectors,
    detect_format,
    glove6b,
    glove6b_words,
    load,
    load_source,
    save,
)
from tlx.digests import flatten
from tlx.errors import TransferError
from tlx.models.migrate import unflatten

__all__ = [
    "FORMATS",
    "PAD",
    "WordVectors",
    "detect_format",
    "embedding_matrix",
    "glove6b",
    "glove6b_words",
    "load_into",
    "load",
    "load_source",
    "save",
]

# data_pipelines.words.SPECIALS[0], written out so that this module needs only
# data_pipelines.vector_files (words imports TensorFlow); a test holds the two equal.
PAD = "[PAD]"


def embedding_matrix(
    vectors: WordVectors,
    vocab_tokens: Sequence[str],
    rng_seed: int = 0,
    scale: float | None = None,
) -> tuple[np.ndarray, int]:
    """The initial embedding table of a vocabulary: ([len(vocab_tokens), D] float32, hits).

    Row i is the pretrained vector of vocab_tokens[i] where there is one (hits counts those),
    zeros for [PAD] (padding must not move the model), and otherwise (special tokens, words the
    vectors lack) a draw from N(0, scale^2), scale defaulting to the std of all pretrained values
    so the new rows look like the pretrained ones to the first layer.
    """
    if scale is None:
        if len(vectors) == 0:
            raise ValueError("embedding_matrix: no pretrained vectors to take the scale from")
        scale = float(vectors.vectors.std(dtype=np.float64))
    rng = np.random.default_rng(rng_seed)
    # All rows drawn up front, so the random rows do not depend on which words hit.
    table = rng.normal(0.0, scale, (len(vocab_tokens), vectors.dim)).astype(np.float32)  # [N, D]
    rows = np.array([vectors.index.get(t, -1) for t in vocab_tokens], np.int64)  # [N]
    hit = rows >= 0
    pad = np.array([t == PAD for t in vocab_tokens], bool)
    hit &= ~pad
    table[hit] = vectors.vectors[rows[hit]]
    table[pad] = 0.0
    return table, int(hit.sum())


def load_into(params, shardings, source: str, vocab_spec: str, where: str):
    """(params with the table at path `where` replaced by `source`'s vectors (tlx.wordvec:
    glove6b, a word2vec/GloVe file, a tlx run dir) aligned to the ids of data vocabulary
    `vocab_spec`, words found, vocabulary size). A missing or mis-shaped table is an error."""
    vocab = vocabularies.get_vocabulary(vocab_spec)
    tokens = vocabularies.id_to_token(vocab)
    matrix, hits = embedding_matrix(load_source(source), tokens)
    flat = flatten(params)
    if where not in flat:
        tables = [p for p in flat if p.endswith("embedding")]
        raise TransferError(
            f"transfer.vectors_param={where!r} is not a model parameter; tables: {tables}"
        )
    if tuple(flat[where].shape) != matrix.shape:
        raise TransferError(
            f"parameter {where}: model shape {tuple(flat[where].shape)} != {matrix.shape} "
            f"from init_vectors={source!r} ({len(tokens)} tokens of data.vocab={vocab_spec!r}"
            f" x {matrix.shape[1]}-dim vectors); set model.embed_dim / model.vocab_size"
        )
    flat[where] = jax.device_put(matrix.astype(flat[where].dtype), flatten(shardings)[where])
    return unflatten(flat), hits, len(tokens)
