"""Sentence and pair classification (sst2, sst5, trec, ag_news, mrpc, rte) and their mixture,
on the real files."""

import collections
import functools
import hashlib

import numpy as np
import pytest
import seqio
import tensorflow as tf

import data_pipelines
from data_pipelines import classification as cls_tasks
from data_pipelines import paths, vocabularies
from data_pipelines.corpus import CorpusFormatError

SEQ_LEN = 48
COUNTS = {
    "sst2": {"train": 6920, "validation": 872, "test": 1821},
    "sst5": {"train": 8544, "validation": 1101, "test": 2210},
    "trec": {"train": 5452 - 545, "validation": 545, "test": 500},
    "ag_news": {"train": 7600 - 1600, "validation": 800, "test": 800},  # one file, 1,900 a class
    "mrpc": {"train": 4076 - 408, "validation": 408, "test": 1725},
    "rte": {"train": 2490, "validation": 277},
}


@functools.cache
def _special():
    return vocabularies.special_ids(vocabularies.get_vocabulary("bert_uncased"))


def _examples(task, split, **kw):
    kw = dict(seq_len=SEQ_LEN, seed=0, shuffle=False, num_epochs=1) | kw
    return list(data_pipelines.get_dataset(task, split=split, **kw).as_numpy_iterator())


def _keys(examples):
    return [tuple(e["input_ids"].tolist()) + (int(e["label"]),) for e in examples]


def test_split_counts_and_label_balance():
    for task, counts in COUNTS.items():
        info = data_pipelines.downstream_info(task)
        assert info.splits == tuple(counts)
        labels = {s: np.array([r.label for r in cls_tasks.split_rows(task, s)]) for s in counts}
        assert {s: len(v) for s, v in labels.items()} == counts, task
        for split, ids in labels.items():
            freq = np.bincount(ids, minlength=info.num_classes) / len(ids)
            assert len(freq) == info.num_classes and freq.min() > 0, (task, split, freq)
            if info.num_classes == 2:
                assert 0.3 < freq[1] < 0.7, (task, split, freq)
        carved = [s for s in counts if cls_tasks.DATASETS[task].carved(s)]
        train = np.bincount(labels["train"]) / len(labels["train"])
        for split in carved:  # a carved split looks like the rest of its file
            cut = np.bincount(labels[split], minlength=len(train)) / len(labels[split])
            assert np.abs(train - cut).max() < 0.05, (task, split, train, cut)
    assert sorted(COUNTS) == sorted(cls_tasks.DATASETS)  # every entry is counted here


@pytest.mark.parametrize(
    "task,file,cut",
    [
        ("trec", "TREC.train.label.txt", ("validation",)),
        ("mrpc", "msr_paraphrase_train.txt", ("validation",)),
        ("ag_news", "test.csv", ("validation", "test")),
    ],
)
def test_carved_splits_are_disjoint_covering_and_seed_independent(task, file, cut):
    data = cls_tasks.DATASETS[task]
    assert data.carve[0] in data.files and data.files[data.carve[0]] == file
    all_lines = [r.line for r in data.read(paths.data_dir() / data.folder / file)]
    lines = {s: [r.line for r in cls_tasks.split_rows(task, s)] for s in ("train", *cut)}
    assert sum(map(len, lines.values())) == len(all_lines)
    assert sorted(x for v in lines.values() for x in v) == all_lines  # disjoint and covering
    for split in cut:
        assert lines[split] == sorted(lines[split])  # file order
        assert lines[split] == [r.line for r in cls_tasks.split_rows(task, split)]
        # Run seeds reorder a carved split but never change which examples it holds.
        a = _keys(_examples(task, split, shuffle=True, seed=1))
        b = _keys(_examples(task, split, shuffle=True, seed=2))
        assert a != b and sorted(a) == sorted(b) and len(a) == len(lines[split])


def test_carve_cuts_in_order_and_keeps_the_old_dev_sets():
    rows = [cls_tasks.Row(i + 1, i % 3, (f"text {i}",)) for i in range(100)]
    parts = cls_tasks.carve(rows, {"validation": 0.1, "test": 25}, salt=7)
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [65, 10, 25]
    # The first split takes the same rows whether or not more splits follow it.
    assert cls_tasks.carve(rows, {"validation": 0.1}, salt=7)["validation"] == parts["validation"]
    assert cls_tasks.carve(rows, {"validation": 0.1}, salt=8)["validation"] != parts["validation"]
    with pytest.raises(ValueError, match="no train rows"):
        cls_tasks.carve(rows, {"validation": 60, "test": 40}, salt=7)
    # trec's and mrpc's dev sets are the ones earlier versions carved (line numbers pinned).
    for task, digest in (("trec", "10e8410cef04fa49"), ("mrpc", "717c2d9587a940e0")):
        dev = [r.line for r in cls_tasks.split_rows(task, "validation")]
        assert hashlib.sha256(str(dev).encode()).hexdigest()[:16] == digest, task


def test_an_entry_without_a_file_or_carve_for_a_split_is_refused():
    info = data_pipelines.downstream_info("sst2")
    with pytest.raises(ValueError, match=r"splits \['test'\] have no file"):
        cls_tasks.TaskData(info, {"train": "a", "validation": "b"}, cls_tasks.read_sst)
    with pytest.raises(ValueError, match="other than train"):
        cls_tasks.TaskData(info, {"all": "a"}, cls_tasks.read_sst, carve=("all", {"train": 9}))


def test_ag_news_rows_join_title_and_description(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text('"3","Oil up","Prices rose\\again, ""sharply"" today"\n"1","Vote","A\nB"\n')
    rows = cls_tasks.read_class_csv(path, data_pipelines.downstream_info("ag_news").labels)
    assert rows == [
        cls_tasks.Row(1, 2, ('Oil up Prices rose again, "sharply" today',)),
        cls_tasks.Row(2, 0, ("Vote A B",)),  # a quoted line break is whitespace
    ]
    first = cls_tasks.split_rows("ag_news", "train")[0]  # test.csv line 1, a Business story
    assert first.line == 1 and first.label == 2 and first.texts[0].startswith("Fears for T N")


def test_sentence_structure():
    vocab = vocabularies.get_vocabulary("bert_uncased")
    special = _special()
    rows = cls_tasks.split_rows("trec", "test")
    pieces = vocabularies.encode_batch(vocab, [r.texts[0] for r in rows])
    examples = _examples("trec", "test", seq_len=16)
    assert [int(e["label"]) for e in examples] == [r.label for r in rows]
    truncated = 0
    for ex, piece in zip(examples, pieces, strict=True):
        ids, mask = ex["input_ids"], ex["input_mask"]
        assert ids.shape == mask.shape == ex["segment_ids"].shape == (16,) and ids.dtype == np.int32
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any() and not ex["segment_ids"].any()
        assert (
            ids[0] == special.cls and ids[n - 1] == special.sep and (ids[n:] == special.pad).all()
        )
        assert ids[1 : n - 1].tolist() == piece[:14].tolist()
        truncated += n == 16
    assert truncated > 0


def test_pair_structure():
    vocab = vocabularies.get_vocabulary("bert_uncased")
    special = _special()
    rows = cls_tasks.split_rows("mrpc", "validation")
    pieces = vocabularies.encode_batch(vocab, [t for r in rows for t in r.texts])
    examples = _examples("mrpc", "validation")
    assert len(examples) == 408 and [int(e["label"]) for e in examples] == [r.label for r in rows]
    truncated = 0
    for i, ex in enumerate(examples):
        ids, mask, seg = ex["input_ids"], ex["input_mask"], ex["segment_ids"]
        n = int(mask.sum())
        seps = np.flatnonzero(ids == special.sep).tolist()
        assert ids[0] == special.cls and len(seps) == 2 and seps[1] == n - 1
        assert mask[:n].all() and not mask[n:].any() and (ids[n:] == special.pad).all()
        assert not seg[: seps[0] + 1].any() and seg[seps[0] + 1 : n].all() and not seg[n:].any()
        a, b = pieces[2 * i].tolist(), pieces[2 * i + 1].tolist()
        n_a, n_b = seps[0] - 1, n - seps[0] - 2
        assert ids[1 : seps[0]].tolist() == a[:n_a] and ids[seps[0] + 1 : n - 1].tolist() == b[:n_b]
        assert (n_a, n_b) == _reference_truncation(len(a), len(b), SEQ_LEN - 3)
        truncated += n_a < len(a) or n_b < len(b)
    assert truncated > 0


def _reference_truncation(len_a, len_b, budget):
    """google-research/bert's _truncate_seq_pair, on lengths."""
    while len_a + len_b > budget:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


def test_longest_first_truncation():
    grid = np.array([(a, b) for a in range(0, 40) for b in range(0, 40)], np.int32)
    for budget in (0, 1, 7, 8, 29):
        got = cls_tasks.truncated_pair_lengths(grid[:, 0], grid[:, 1], budget)
        want = np.array([_reference_truncation(a, b, budget) for a, b in grid])
        np.testing.assert_array_equal(np.stack([g.numpy() for g in got], 1), want)
    # A crafted long pair through the real preprocessor: budget 13 -> a keeps 7, b keeps 6;
    # then a short first sentence is kept whole and only the long second one is cut.
    vocab = vocabularies.get_vocabulary("bert_uncased")
    apple, pear = vocab.encode("apple")[0], vocab.encode("pear")[0]
    pairs = [("apple " * 30, "pear " * 20, 7, 6), ("apple apple", "pear " * 40, 2, 11)]
    ds = tf.data.Dataset.from_tensor_slices(
        {
            "sentence1": [p[0] for p in pairs],
            "sentence2": [p[1] for p in pairs],
            "label": [0, 1],
        }
    )
    encode = cls_tasks.make_encode_preprocessor("bert_uncased", "pair")
    special = _special()
    for ex, (_, _, n_a, n_b) in zip(encode(ds, {"input_ids": 16}).as_numpy_iterator(), pairs):
        frame = [special.cls] + [apple] * n_a + [special.sep] + [pear] * n_b + [special.sep]
        assert ex["input_ids"].tolist() == frame and ex["input_mask"].all()
        assert ex["segment_ids"].tolist() == [0] * (n_a + 2) + [1] * (n_b + 1)


def test_shards_are_disjoint_and_cover_the_split():
    whole = _keys(_examples("rte", "validation"))
    shards = [
        _keys(_examples("rte", "validation", shuffle=True, seed=3, shard_index=i, num_shards=3))
        for i in range(3)
    ]
    assert sorted(len(s) for s in shards) == [92, 92, 93]
    assert sorted(shards[0] + shards[1] + shards[2]) == sorted(whole)
    assert len(set(whole)) == len(whole)  # so equal multisets mean disjoint shards


def test_metrics():
    acc, mrpc = cls_tasks.accuracy, cls_tasks.accuracy_and_f1
    # Fractions in [0, 1], not percent (tables multiply by 100 for display).
    assert acc([0, 1, 1, 0], [0, 1, 0, 0]) == {"accuracy": 0.75}
    assert acc(np.array([5, 3, 0]), np.array([5, 3, 0])) == {"accuracy": 1.0}
    # tp=2 fp=1 fn=1: precision = recall = f1 = 2/3; 3 of 5 right.
    got = mrpc([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert got == pytest.approx({"accuracy": 0.6, "f1": 2 / 3, "accuracy_and_f1": 19 / 30})
    assert mrpc([1, 0], [1, 0]) == {"accuracy": 1.0, "f1": 1.0, "accuracy_and_f1": 1.0}
    assert mrpc([0, 0], [0, 0])["f1"] == 0.0  # no positives at all: 0, not a warning
    for fn in (acc, mrpc):
        with pytest.raises(ValueError, match="differ"):
            fn([0, 1, 1], [0, 1])
    for task, metric, primary in [
        ("sst2", acc, "accuracy"),
        ("trec", acc, "accuracy"),
        ("mrpc", mrpc, "accuracy_and_f1"),
        ("rte", acc, "accuracy"),
    ]:
        info = data_pipelines.downstream_info(task)
        assert info.metric_fn is metric and info.primary_metric == primary
        assert info.primary_metric in metric([0, 1], [1, 1])
        assert all(0.0 <= v <= 1.0 for v in metric([0, 1, 1], [1, 1, 1]).values())
        assert seqio.get_mixture_or_task(task).metric_fns == [metric]
    assert data_pipelines.downstream_info("trec").labels == cls_tasks.TREC_LABELS


def test_malformed_inputs_name_file_and_line(tmp_path):
    read_sst5 = cls_tasks.DATASETS["sst5"].read
    read_ag_news = cls_tasks.DATASETS["ag_news"].read
    cases = [
        (cls_tasks.read_sst, "stsa.binary.dev", "1 a fine film\n2 not a label\n", 2, "2 not a"),
        (cls_tasks.read_sst, "stsa.binary.dev", "1 a fine film\nnolabel\n", 2, "nolabel"),
        (read_sst5, "stsa.fine.dev", "4 a fine film\n5 not a label\n", 2, "5 not a"),
        (read_ag_news, "test.csv", '"4","t","d"\n"5","t","d"\n', 2, "5,t,d"),
        (read_ag_news, "test.csv", '"4","t","d"\n"2","",""\n', 2, "2,,"),
        (
            cls_tasks.read_trec,
            "TREC.test.label.txt",
            "NUM:date When ?\nDESC What ?\n",
            2,
            "DESC What",
        ),  # fmt: skip
        (
            cls_tasks.read_trec,
            "TREC.test.label.txt",
            "NUM:date When ?\nFOO:bar Why ?\n",
            2,
            "FOO:bar",
        ),  # fmt: skip
        (
            cls_tasks.read_mrpc,
            "msr_paraphrase_test.txt",
            "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\tA b.\tA c.\r\n"
            "yes\t3\t4\tD e.\tD f.\r\n",
            3,
            "yes",
        ),
        (
            cls_tasks.read_mrpc,
            "msr_paraphrase_test.txt",
            "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\tonly four\r\n",
            2,
            "only four",
        ),
        (cls_tasks.read_mrpc, "msr_paraphrase_test.txt", "Quality\t#1 ID\r\n", 1, "Quality"),
        (
            cls_tasks.read_rte,
            "validation.jsonl",
            '{"sentence1": "a", "sentence2": "b", "label": "entailment"}\n{"sentence1": "a"\n',
            2,
            "sentence1",
        ),
        (
            cls_tasks.read_rte,
            "validation.jsonl",
            '{"sentence1": "a", "sentence2": "b", "label": "contradiction"}\n',
            1,
            "contradiction",
        ),
    ]
    for reader, name, text, line_no, shown in cases:
        path = tmp_path / name
        path.write_bytes(text.encode("utf-8"))
        with pytest.raises(CorpusFormatError, match=rf"{name}:{line_no}: .*{shown}"):
            reader(path)
    # The readers parse the real quirks: BOM, CRLF, quotes kept literally (QUOTE_NONE).
    path = tmp_path / "msr_paraphrase_test.txt"
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
    path.write_bytes((header + '0\t1\t2\tHe said "no.\tOk.\r\n').encode())
    assert cls_tasks.read_mrpc(path) == [cls_tasks.Row(2, 0, ('He said "no.', "Ok."))]
    # The task's source reads from a data_dir, so a bad file there is reported the same way.
    trec = tmp_path / "classification" / "trec"
    trec.mkdir(parents=True)
    (trec / "TREC.train.label.txt").write_text("NUM:date When ?\nXYZ:q Who ?\n")
    with pytest.raises(CorpusFormatError, match=r"TREC\.train\.label\.txt:2: .*XYZ:q"):
        cls_tasks.source_dataset("validation", False, task="trec", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"'rte'.*\('train', 'validation'\).*'test'"):
        cls_tasks.split_rows("rte", "test")


def test_mixture_samples_at_the_rates():
    name = cls_tasks.get_mixture_name()
    assert name == "glue_mix" and cls_tasks.get_mixture_name() == name
    tasks = cls_tasks.mixture_tasks(name)
    assert tasks == ("sst2", "trec", "mrpc", "rte")
    sizes = np.array([COUNTS[t]["train"] for t in tasks])
    ds = data_pipelines.get_dataset(name, split="train", seq_len=32, seed=0, shuffle=True)
    examples = list(ds.take(2000).as_numpy_iterator())
    assert set(examples[0]) == {"input_ids", "input_mask", "segment_ids", "label", "task_id"}
    task_ids = np.array([e["task_id"] for e in examples])
    share = np.bincount(task_ids, minlength=4) / len(task_ids)
    np.testing.assert_allclose(share, sizes / sizes.sum(), atol=0.03)
    labels = collections.defaultdict(set)
    for e in examples:
        task = tasks[e["task_id"]]
        labels[task].add(int(e["label"]))
        is_pair = data_pipelines.downstream_info(task).kind == "pair"
        assert bool(e["segment_ids"].any()) == is_pair
    for task in tasks:
        assert labels[task] == set(range(data_pipelines.downstream_info(task).num_classes))

    custom = cls_tasks.get_mixture_name(("trec", "rte"), rates={"trec": 3, "rte": 1})
    assert custom.startswith("glue_mix__") and custom != name
    assert cls_tasks.get_mixture_name(["trec", "rte"], {"trec": 3.0, "rte": 1.0}) == custom
    assert cls_tasks.mixture_tasks(custom) == ("trec", "rte")
    ds = data_pipelines.get_dataset(custom, split="validation", seq_len=32, seed=1, shuffle=False)
    task_ids = np.array([e["task_id"] for e in ds.take(600).as_numpy_iterator()])
    assert abs(np.mean(task_ids == 0) - 0.75) < 0.05
    with pytest.raises(ValueError, match="rate"):
        cls_tasks.get_mixture_name(("trec", "rte"), rates={"trec": 1})


def test_tfds_variants_map_to_the_same_features():
    """The TFDS tasks' preprocessors on in-memory TFDS-shaped examples (nothing downloaded)."""
    for task, fields in [("sst2", ("sentence",)), ("rte", ("sentence1", "sentence2"))]:
        tfds_task = seqio.get_mixture_or_task(f"{task}_tfds")
        assert isinstance(tfds_task.source, seqio.TfdsDataSource)
        assert tfds_task.source.tfds_dataset.name == f"glue/{task}:2.0.0"
        assert tuple(tfds_task.splits) == ("train", "validation")
        assert data_pipelines.downstream_info(f"{task}_tfds").labels == (
            data_pipelines.downstream_info(task).labels
        )
        rows = cls_tasks.split_rows(task, "validation")[:5]
        fake = tf.data.Dataset.from_tensor_slices(
            {
                "idx": tf.range(5, dtype=tf.int32),
                "label": tf.constant([r.label for r in rows], tf.int64),  # GLUE's order is ours
                **{k: tf.constant([r.texts[j] for r in rows]) for j, k in enumerate(fields)},
            }
        )
        got = tfds_task.preprocess_postcache(fake, sequence_length={"input_ids": SEQ_LEN})
        got = list(got.as_numpy_iterator())
        want = _examples(task, "validation")[:5]
        assert [sorted(g) for g in got] == [sorted(w) for w in want]
        for g, w in zip(got, want, strict=True):
            for k in w:
                assert g[k].dtype == w[k].dtype and (g[k] == w[k]).all(), (task, k)
    mrpc = seqio.get_mixture_or_task("mrpc_tfds")
    assert mrpc.source.tfds_dataset.name == "glue/mrpc:2.0.0"


def test_variant_with_another_vocab_spec():
    path = vocabularies.get_vocabulary("bert_uncased").vocab_file
    name = data_pipelines.get_task_name("rte", vocab=f"wordpiece:{path}")
    assert name != "rte" and data_pipelines.downstream_info(name).kind == "pair"
    got = _examples(name, "validation", seq_len=24)
    assert _keys(got) == _keys(_examples("rte", "validation", seq_len=24))
