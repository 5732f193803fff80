"""ELMo character ids: the byte mapping, truncation, the specials, the vectorised vocabulary
table, the tf.data gather, and the `char_ids=True` task variants (tasks.get_task_name) that
add them, on the real data."""

import itertools
import time

import numpy as np
import pytest
import tensorflow as tf

import data_pipelines
from configs.elmo import pretrain as elmo_pretrain
from data_pipelines import chars, tasks, vocabularies
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


# ---------------------------------------------------------------------------- task variants


def _rows(task_name, split, seq_len, n, **kw):
    ds = data_pipelines.get_dataset(
        task_name, split=split, seq_len=seq_len, seed=0, shuffle=False, num_epochs=1, **kw
    )
    return ds.element_spec, list(itertools.islice(ds.as_numpy_iterator(), n))


def _assert_spelled(rows, vocab_spec, seq_len):
    """Each row's char_ids are token_char_ids of its input tokens' vocabulary pieces."""
    tokens = vocabularies.id_to_token(vocabularies.get_vocabulary(vocab_spec))
    for row in rows:
        assert row["char_ids"].shape == (seq_len, chars.MAX_CHARS)
        assert row["char_ids"].dtype == np.int32
        want = np.stack([chars.token_char_ids(tokens[i]) for i in row["input_ids"]])
        np.testing.assert_array_equal(row["char_ids"], want)


def _assert_same_besides_chars(with_chars, plain):
    assert len(with_chars) == len(plain) > 0
    for a, b in zip(with_chars, plain, strict=True):
        assert set(a) == {*b, "char_ids"}
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize(
    "base, vocab, split, seq_len",
    [
        ("sst2", "bert_uncased", "validation", 32),
        ("conll2003_ner", "words:glove6b", "validation", 24),
        ("bert_pretrain", "bert_uncased", "validation", 64),  # masked ids: after masking
    ],
)
def test_char_ids_variant_spells_input_tokens(base, vocab, split, seq_len):
    extra = {"seq_len": seq_len} if base == "bert_pretrain" else {}
    plain = data_pipelines.get_task_name(base, vocab=vocab, **extra)
    name = data_pipelines.get_task_name(base, vocab=vocab, char_ids=True, **extra)
    assert name != plain and name.startswith(f"{base}__")
    assert data_pipelines.get_task_name(base, vocab=vocab, char_ids=False, **extra) == plain
    assert data_pipelines.get_task_name(base, vocab=vocab, char_ids=True, **extra) == name
    spec, rows = _rows(name, split, seq_len, 16)
    assert spec["char_ids"].shape == (seq_len, chars.MAX_CHARS)
    feature = tasks.seqio.get_mixture_or_task(name).output_features["char_ids"]
    assert feature.rank == 2 and feature.vocabulary.vocab_size == chars.CHAR_VOCAB_SIZE
    _assert_spelled(rows, vocab, seq_len)
    # Everything else is the plain variant's, masks (seqio's per-preprocessor seeds) included.
    _assert_same_besides_chars(rows, _rows(plain, split, seq_len, 16)[1])
    if base == "bert_pretrain":
        mask_id = vocabularies.special_ids(vocabularies.get_vocabulary(vocab)).mask
        assert any((r["input_ids"] == mask_id).any() for r in rows)
    else:
        assert data_pipelines.downstream_info(name) == data_pipelines.downstream_info(base)


def test_elmo_config_reads_char_ids_through_the_task():
    """configs/elmo/pretrain.py sets data.options.char_ids; its task (causal_lm over the
    corpus words) keeps char ids when get_dataset routes to the variant for seq_len."""
    cfg = elmo_pretrain.get_config("runlocal=True")
    assert cfg.data.options.char_ids is True and "char_ids" not in cfg.data
    name = data_pipelines.get_task_name(cfg.data.task, vocab=cfg.data.vocab, **cfg.data.options)
    assert name != data_pipelines.get_task_name(cfg.data.task, vocab=cfg.data.vocab)
    spec, rows = _rows(name, "validation", cfg.data.seq_len, 8)
    assert spec["char_ids"].shape == (cfg.data.seq_len, chars.MAX_CHARS)
    _assert_spelled(rows, cfg.data.vocab, cfg.data.seq_len)
    plain = data_pipelines.get_task_name(cfg.data.task, vocab=cfg.data.vocab)
    _assert_same_besides_chars(rows, _rows(plain, "validation", cfg.data.seq_len, 8)[1])


def test_char_ids_mixture():
    plain = data_pipelines.get_task_name(tasks.MIXTURE)
    name = data_pipelines.get_task_name(tasks.MIXTURE, char_ids=True)
    assert name != plain and name.startswith(f"{tasks.MIXTURE}__")
    assert data_pipelines.get_task_name(tasks.MIXTURE, char_ids=True) == name
    members, plain_members = tasks.mixture_members(name), tasks.mixture_members(plain)
    assert [b for _, b in members] == [b for _, b in plain_members]
    rates = tasks.seqio.MixtureRegistry.get(name).rate_per_task_name
    plain_rates = tasks.seqio.MixtureRegistry.get(plain).rate_per_task_name
    assert [rates[m] for m, _ in members] == [plain_rates[m] for m, _ in plain_members]
    assert data_pipelines.downstream_info(name) == data_pipelines.downstream_info(plain)
    assert tasks.split_files(name, "train") == tasks.split_files(plain, "train")
    spec, rows = _rows(name, "train", 32, 8)
    assert spec["char_ids"].shape == (32, chars.MAX_CHARS) and "task_id" in spec
    _assert_spelled(rows, "bert_uncased", 32)


def test_char_ids_rejected_where_there_are_no_input_ids():
    with pytest.raises(ValueError, match="no input_ids"):
        data_pipelines.get_task_name("skipgram", char_ids=True)
    with pytest.raises(TypeError, match="char_ids must be True or False"):
        data_pipelines.get_task_name("sst2", char_ids="yes")


def test_vocab_table_built_once_and_read_only():
    table = chars.vocab_char_table("bert_uncased")
    assert table is chars.vocab_char_table("bert_uncased") and not table.flags.writeable
    assert table.shape == (vocabularies.get_vocabulary("bert_uncased").vocab_size, 50)
