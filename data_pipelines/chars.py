"""ELMo's character ids: every word id becomes MAX_CHARS = 50 character ids for the char CNN.

Character vocabulary (CHAR_VOCAB_SIZE = 261):
  0         padding: the positions after a token's end-of-word, and all of a [PAD] token
  1..256    UTF-8 byte value + 1 (non-ASCII words take one id per byte: "café" -> 5 ids)
  257, 258  begin-of-word, end-of-word: every token is [BOW, bytes + 1 ..., EOW, 0 ...]
  259, 260  begin-, end-of-sentence: the single "character" of [CLS] and [SEP], which frame
            sentences as ELMo's <S> and </S> do
Tokens longer than 48 bytes keep their first 48, so BOW and EOW always fit.

The ids are a pure function of the token string, so a whole word vocabulary maps to one [V, 50]
table (`char_table`, built once per vocabulary spec by `vocab_char_table`), and a task only
gathers rows (`add_char_ids`). A task variant registered with `char_ids=True`
(tasks.get_task_name) ends its preprocessors with `make_char_ids_preprocessor`, so its examples
carry `char_ids` [L, 50] beside `input_ids` [L] (output feature `char_ids_feature`).

Unlike allennlp's ELMoCharacterMapper (which pads inside a token with a 261st id and shifts the
sentence / word markers), padding here is 0 everywhere: a released ELMo char-embedding table
needs its rows permuted to load.
"""

import functools
from collections.abc import Callable, Sequence

import numpy as np
import seqio
import tensorflow as tf

from data_pipelines import vocabularies
from data_pipelines.words import SPECIALS

MAX_CHARS = 50
PAD_CHAR = 0
BOW_CHAR, EOW_CHAR = 257, 258
BOS_CHAR, EOS_CHAR = 259, 260
CHAR_VOCAB_SIZE = 261
_MAX_BYTES = MAX_CHARS - 2


def _framed(chars: Sequence[int]) -> np.ndarray:
    ids = np.zeros(MAX_CHARS, np.int32)
    ids[0], ids[len(chars) + 1] = BOW_CHAR, EOW_CHAR
    ids[1 : len(chars) + 1] = chars
    return ids


def _byte_ids(token: str) -> np.ndarray:
    return np.frombuffer(token.encode("utf-8")[:_MAX_BYTES], np.uint8).astype(np.int32) + 1


# The word vocabularies' specials (data_pipelines.words.SPECIALS); no other token is special.
_SPECIAL_IDS = {
    "[PAD]": np.zeros(MAX_CHARS, np.int32),
    "[UNK]": _framed(_byte_ids("<unk>")),
    "[CLS]": _framed([BOS_CHAR]),
    "[SEP]": _framed([EOS_CHAR]),
    "[MASK]": _framed(_byte_ids("<mask>")),
}
assert set(_SPECIAL_IDS) == set(SPECIALS)


def token_char_ids(token: str) -> np.ndarray:
    """One token -> its [50] int32 character ids."""
    if token in _SPECIAL_IDS:
        return _SPECIAL_IDS[token].copy()
    return _framed(_byte_ids(token))


def char_table(tokens: Sequence[str]) -> np.ndarray:
    """[V, 50] int32: row i holds token_char_ids(tokens[i]). All tokens' bytes are gathered
    from one joined buffer, so 400k words take about a second rather than a Python loop each."""
    encoded = [t.encode("utf-8")[:_MAX_BYTES] for t in tokens]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))  # [V]
    rows = np.arange(len(encoded))
    table = np.zeros((len(encoded), MAX_CHARS), np.int32)
    table[:, 0] = BOW_CHAR
    # Every byte of every token at once: its row, and its column after that row's BOW.
    byte_rows = np.repeat(rows, lengths)  # [total bytes]
    byte_cols = np.arange(byte_rows.size) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1
    table[byte_rows, byte_cols] = np.frombuffer(b"".join(encoded), np.uint8).astype(np.int32) + 1
    table[rows, lengths + 1] = EOW_CHAR
    for i, token in enumerate(tokens):
        if token in _SPECIAL_IDS:
            table[i] = _SPECIAL_IDS[token]
    return table


def add_char_ids(
    ds: tf.data.Dataset, table: np.ndarray, key: str = "input_ids", out: str = "char_ids"
) -> tf.data.Dataset:
    """Adds `out` = table[ex[key]] ([..., 50] int32) to each example dict, batched or not."""
    table = tf.constant(np.asarray(table, np.int32))  # captured once, not re-embedded per call

    def fn(ex):
        return {**ex, out: tf.gather(table, tf.cast(ex[key], tf.int32))}

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


@functools.cache
def vocab_char_table(vocab_spec: str) -> np.ndarray:
    """char_table of every id of a vocabulary spec (vocabularies.get_vocabulary), built once per
    spec and read-only (400k words of words:glove6b take about a second)."""
    tokens = vocabularies.id_to_token(vocabularies.get_vocabulary(vocab_spec))
    table = char_table(tokens)
    table.setflags(write=False)
    return table


def make_char_ids_preprocessor(
    vocab_spec: str, key: str = "input_ids", out: str = "char_ids"
) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """A seqio preprocessor adding `out` = the characters of each id of `key` ([..., 50] int32).

    It must come after the preprocessor that makes `key` final (padding, packing, masking): the
    characters are those of the ids the model reads. The table is built on first use, when a
    dataset is made, not when the task is registered."""

    def add_chars(ds: tf.data.Dataset) -> tf.data.Dataset:
        return add_char_ids(ds, vocab_char_table(vocab_spec), key, out)

    return add_chars


def char_ids_feature() -> seqio.Feature:
    """The output feature of `char_ids`: int32 [L, MAX_CHARS] ids below CHAR_VOCAB_SIZE."""
    return seqio.Feature(
        seqio.PassThroughVocabulary(CHAR_VOCAB_SIZE), add_eos=False, dtype=tf.int32, rank=2
    )
