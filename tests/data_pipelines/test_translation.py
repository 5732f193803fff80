"""Multi30k en->de task: tokenization, teacher-forcing rows, alignment checks, real features."""

import gzip

import numpy as np
import pytest

import data_pipelines
from data_pipelines import translation


def test_target_tokenize_keeps_punctuation_and_lowercases():
    assert translation.target_tokenize("Ein Mann, der etwas anstarrt.") == [
        "ein", "mann", ",", "der", "etwas", "anstarrt", ".",
    ]  # fmt: skip


def test_decoder_rows_shift_and_truncate():
    rows = translation.decoder_rows([np.array([7, 8, 9]), np.array([5, 6, 7, 8, 9, 10])], 5)
    np.testing.assert_array_equal(rows["decoder_input_ids"], [[2, 7, 8, 9, 0], [2, 5, 6, 7, 8]])
    np.testing.assert_array_equal(rows["decoder_target_ids"], [[7, 8, 9, 3, 0], [5, 6, 7, 8, 3]])
    np.testing.assert_array_equal(rows["decoder_mask"], [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


def test_misaligned_sides_name_both_files(tmp_path, monkeypatch):
    d = tmp_path / translation.DIRNAME
    d.mkdir(parents=True)
    for lang, n in (("en", 3), ("de", 2)):
        with gzip.open(d / f"val.{lang}.gz", "wt") as f:
            f.write("word\n" * n)
    with pytest.raises(ValueError, match=r"val\.en\.gz has 3 lines but .*val\.de\.gz has 2"):
        translation.read_split("validation", str(tmp_path))
    with pytest.raises(ValueError, match="no split 'dev'"):
        translation.read_split("dev", str(tmp_path))


def test_real_examples_round_trip():
    """The registered task's rows decode back to the first validation pair."""
    name = data_pipelines.get_task_name("multi30k_en_de", vocab="words:glove6b")
    ds = data_pipelines.get_dataset(name, split="validation", seq_len=48, seed=0, shuffle=False)
    ex = next(ds.as_numpy_iterator())
    en, de = translation.read_split("validation")
    src = data_pipelines.vocabularies.get_vocabulary("words:glove6b")
    n = ex["input_mask"].sum()
    assert src.decode(ex["input_ids"][:n].tolist()) == " ".join(
        data_pipelines.words.tokenize(en[0])
    )
    tgt = translation.target_vocabulary()
    m = ex["decoder_mask"].sum()
    words = [tgt.tokens[i] for i in ex["decoder_target_ids"][: m - 1]]
    expected = [w if w in tgt._token_to_id else "[UNK]" for w in translation.target_tokenize(de[0])]
    assert words == expected and ex["decoder_target_ids"][m - 1] == translation.EOS
    assert 5_000 < data_pipelines.tasks.target_vocab_size(name) < 12_000
    assert translation.truncation("train", 48) == 0.0
