"""ELMo character ids: the byte mapping, truncation, the specials, the vectorised vocabulary
table and the tf.data gather."""

import time

import numpy as np
import tensorflow as tf

from data_pipelines import chars
from data_pipelines.words import SPECIALS


def _expect(*middle):
    ids = np.zeros(chars.MAX_CHARS, np.int32)
    ids[: len(middle) + 2] = [chars.BOW_CHAR, *middle, chars.EOW_CHAR]
    return ids


def test_bytes_shifted_by_one_and_framed():
    np.testing.assert_array_equal(chars.token_char_ids("ab"), _expect(ord("a") + 1, ord("b") + 1))
    cafe = chars.token_char_ids("café")  # é is two UTF-8 bytes: c3 a9
    np.testing.assert_array_equal(cafe, _expect(100, 98, 103, 0xC3 + 1, 0xA9 + 1))
    assert cafe.dtype == np.int32 and cafe.shape == (50,)
    assert chars.CHAR_VOCAB_SIZE == 261 and max(chars.BOW_CHAR, chars.EOS_CHAR) == 260


def test_truncation_keeps_first_48_bytes():
    long = "".join(chr(ord("a") + i % 26) for i in range(70))
    ids = chars.token_char_ids(long)
    assert ids[0] == chars.BOW_CHAR and ids[49] == chars.EOW_CHAR
    np.testing.assert_array_equal(ids[1:49], np.frombuffer(long[:48].encode(), np.uint8) + 1)
    exact = chars.token_char_ids("x" * 48)
    assert exact[49] == chars.EOW_CHAR and (exact[1:49] == ord("x") + 1).all()
    assert chars.token_char_ids("x" * 47)[48:].tolist() == [chars.EOW_CHAR, 0]


def test_specials():
    np.testing.assert_array_equal(chars.token_char_ids("[PAD]"), np.zeros(50, np.int32))
    np.testing.assert_array_equal(chars.token_char_ids("[CLS]"), _expect(chars.BOS_CHAR))
    np.testing.assert_array_equal(chars.token_char_ids("[SEP]"), _expect(chars.EOS_CHAR))
    np.testing.assert_array_equal(chars.token_char_ids("[UNK]"), chars.token_char_ids("<unk>"))
    np.testing.assert_array_equal(chars.token_char_ids("[MASK]"), chars.token_char_ids("<mask>"))
    # The brackets make a literal "[cls]" (lower-case, not a special) ordinary bytes.
    assert chars.token_char_ids("[cls]")[1] == ord("[") + 1


def test_table_equals_per_token_and_is_fast():
    words = ["the", "café", "naïve", "x" * 60, "", "日本", "[CLS]", "don't"]
    tokens = list(SPECIALS) + words
    table = chars.char_table(tokens)
    assert table.shape == (len(tokens), 50) and table.dtype == np.int32
    np.testing.assert_array_equal(table, np.stack([chars.token_char_ids(t) for t in tokens]))
    big = list(SPECIALS) + ["ñ" * (i % 30) + str(i) for i in range(400_000)]  # up to 65 bytes
    start = time.perf_counter()
    big_table = chars.char_table(big)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"char_table of 400k tokens took {elapsed:.1f}s"
    for i in (0, 2, 5, 34, 1234, 399_999):
        np.testing.assert_array_equal(big_table[i], chars.token_char_ids(big[i]))


def test_add_char_ids_matches_numpy_gather():
    table = chars.char_table(list(SPECIALS) + ["a", "bb", "café"])
    ids = np.array([[2, 5, 6, 7, 3, 0], [2, 7, 3, 0, 0, 0]], np.int32)
    ds = tf.data.Dataset.from_tensor_slices({"input_ids": ids, "other": ids * 2})
    rows = list(chars.add_char_ids(ds, table).as_numpy_iterator())
    for row, want in zip(rows, ids, strict=True):
        assert row["char_ids"].shape == (6, 50) and row["char_ids"].dtype == np.int32
        np.testing.assert_array_equal(row["char_ids"], table[want])
        np.testing.assert_array_equal(row["other"], want * 2)
    (batch,) = chars.add_char_ids(ds.batch(2), table, out="chars").as_numpy_iterator()
    np.testing.assert_array_equal(batch["chars"], table[ids])
