"""The sst2 task on the real SST-2 files."""

import numpy as np
import pytest
import seqio

import data_pipelines
from data_pipelines import sst2, vocabularies
from data_pipelines.corpus import CorpusFormatError

SEQ_LEN = 32


def _examples(split, **kw):
    kw = dict(seq_len=SEQ_LEN, seed=0, shuffle=False, num_epochs=1) | kw
    return list(data_pipelines.get_dataset("sst2", split=split, **kw).as_numpy_iterator())


def test_counts_and_structure():
    special = vocabularies.special_ids(vocabularies.get_vocabulary("bert_uncased"))
    dev = _examples("validation")
    assert len(dev) == 872
    assert len(sst2.read_sst2(sst2.split_file("train"))[0]) == 6920
    labels = np.array([ex["label"] for ex in dev])
    assert set(labels.tolist()) == {0, 1} and 0.4 < labels.mean() < 0.6
    truncated = 0
    for ex in dev:
        ids, mask = ex["input_ids"], ex["input_mask"]
        assert ids.shape == mask.shape == ex["segment_ids"].shape == (SEQ_LEN,)
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any() and not ex["segment_ids"].any()
        assert ids[0] == special.cls and ids[n - 1] == special.sep
        assert (ids[n:] == special.pad).all() and special.sep not in ids[1 : n - 1]
        truncated += n == SEQ_LEN
    assert truncated > 0  # some dev sentences exceed 32 pieces, and are cut, not dropped
    first_text = sst2.read_sst2(sst2.split_file("validation"))[1][0]
    assert dev[0]["label"] == int(open(sst2.split_file("validation")).read(1))
    vocab = vocabularies.get_vocabulary("bert_uncased")
    expected = vocab.encode(first_text)[: SEQ_LEN - 2]
    assert dev[0]["input_ids"][1 : 1 + len(expected)].tolist() == expected


def test_shuffle_and_shards_are_deterministic_and_disjoint():
    a = _examples("validation", shuffle=True, seed=5)
    b = _examples("validation", shuffle=True, seed=5)
    c = _examples("validation", shuffle=True, seed=6)
    key = lambda exs: [tuple(e["input_ids"].tolist()) for e in exs]
    assert key(a) == key(b) and key(a) != key(c)
    shards = [key(_examples("validation", shard_index=i, num_shards=3)) for i in range(3)]
    assert sorted(shards[0] + shards[1] + shards[2]) == sorted(key(_examples("validation")))


def test_metric_is_registered():
    task = seqio.get_mixture_or_task("sst2")
    assert task.metric_fns and sst2.accuracy in task.metric_fns
    assert sst2.accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == {"accuracy": 75.0}


def test_malformed_line_names_file_and_line(tmp_path):
    bad = tmp_path / "stsa.binary.dev"
    bad.write_text("1 a fine film\n0 a dull one\n2 not a label\n")
    with pytest.raises(CorpusFormatError, match=r"stsa\.binary\.dev:3"):
        sst2.read_sst2(bad)
    bad.write_text("1 a fine film\nnolabel\n")
    with pytest.raises(CorpusFormatError, match=r"stsa\.binary\.dev:2"):
        sst2.read_sst2(bad)
