"""The tagging tasks on the real CoNLL-2003, WNUT-17 and UD-EWT files."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

import data_pipelines
from data_pipelines import tagging, vocabularies
from data_pipelines.corpus import CorpusFormatError

# (sentences, words) per split, from each folder's SOURCE.txt; WNUT-17 dev's 15,734 "tokens"
# count the line that is only U+FEFF.
COUNTS = {
    "conll2003_ner": ((14041, 203621), (3250, 51362), (3453, 46435)),
    "wnut17_ner": ((3394, 62730), (1009, 15733), (1287, 23394)),
    "ud_ewt_upos": ((12544, 204577), (2001, 25147), (2077, 25094)),
}
VOCAB = vocabularies.get_vocabulary("bert_uncased")
SPECIAL = vocabularies.special_ids(VOCAB)


def _examples(task, split, seq_len, **kw):
    kw = dict(seq_len=seq_len, seed=0, shuffle=False, num_epochs=1) | kw
    return list(data_pipelines.get_dataset(task, split=split, **kw).as_numpy_iterator())


def _pieces(words):
    return [p.tolist() for p in VOCAB.encode_batch(list(words))]


def _reference(words, tags, seq_len, pieces=None):
    """The alignment written the slow, obvious way; `pieces`: each word's pieces, if known."""
    ids, labels, weights = [SPECIAL.cls], [0], [0]
    for word, tag in zip(pieces or _pieces(words), tags):
        word = word or [SPECIAL.unk]
        if len(ids) + len(word) > seq_len - 1:
            break
        ids += word
        labels += [tag] + [0] * (len(word) - 1)
        weights += [1] + [0] * (len(word) - 1)
    ids.append(SPECIAL.sep)
    pad = seq_len - len(ids)
    return {
        "input_ids": ids + [SPECIAL.pad] * pad,
        "input_mask": [1] * len(ids) + [0] * pad,
        "segment_ids": [0] * seq_len,
        "labels": labels + [0] * (pad + 1),
        "label_weights": weights + [0] * (pad + 1),
        "word_labels": (list(tags) + [-1] * seq_len)[:seq_len],
    }


@pytest.mark.parametrize("base", sorted(COUNTS))
def test_counts_and_tag_inventory(base):
    splits = [tagging.read_split(base, s) for s in tagging.SPLITS]
    assert tuple((len(s), sum(len(x.words) for x in s)) for s in splits) == COUNTS[base]
    labels = data_pipelines.downstream_info(base).labels
    assert labels == tagging.CORPORA[base].tags
    train = tagging.read_split(base, "train")
    assert {t for s in train for t in s.tags} == set(labels)
    assert all(len(s.words) == len(s.tags) > 0 for s in train)
    assert all(w and not w.isspace() for s in train for w in s.words)


def test_conll2003_docstart_is_never_a_sentence(tmp_path):
    for split in tagging.SPLITS:
        assert not any("-DOCSTART-" in s.words for s in tagging.read_split("conll2003_ner", split))
    f = tmp_path / "mini.txt"
    f.write_text("-DOCSTART- O\n\nEU B-ORG \nrejects O\n-DOCSTART- O\nPeter B-PER\n\n\n")
    assert tagging.read_conll2003(f) == [
        tagging.Sentence(("EU", "rejects"), ("B-ORG", "O")),
        tagging.Sentence(("Peter",), ("B-PER",)),
    ]


def test_wnut17_strips_feff():
    dev = tagging.read_split("wnut17_ner", "validation")
    assert not any("\ufeff" in w for s in dev for w in s.words)
    assert ("Dubbz", "B-person") in [(w, t) for s in dev for w, t in zip(s.words, s.tags)]
    raw = tagging.split_file("wnut17_ner", "validation").read_text(encoding="utf-8")
    assert "\ufeff" in raw  # the quirk is still upstream, so the stripping is exercised


def test_conllu_skips_comments_multiword_tokens_and_empty_nodes(tmp_path):
    row = "{}\t{}\t_\t{}\t_\t_\t0\troot\t_\t_\n"
    f = tmp_path / "mini.conllu"
    f.write_text(
        "# sent_id = 1\n# text = don't\n"
        + row.format("1-2", "don't", "_")
        + row.format(1, "do", "AUX")
        + row.format(2, "n't", "PART")
        + row.format("2.1", "go", "VERB")
        + "\n"
        + row.format(1, "Hi", "INTJ")
    )
    assert tagging.read_conllu(f) == [
        tagging.Sentence(("do", "n't"), ("AUX", "PART")),
        tagging.Sentence(("Hi",), ("INTJ",)),
    ]


@pytest.mark.parametrize(
    "reader, content, bad_line, fragment",
    [
        (tagging.read_conll2003, "EU B-ORG\nrejects O extra\n", 2, "rejects O extra"),
        (tagging.read_conll2003, "EU B-ORG\n\nrejects B-FOO\n", 3, "B-FOO"),
        (tagging.read_wnut17, "a\tO\nb O\n", 2, "b O"),
        (tagging.read_wnut17, "a\tO\nb\tB-people\n", 2, "B-people"),
        (tagging.read_conllu, "# c\n1\tHi\t_\tINTJ\t_\n", 2, "Hi"),
        (tagging.read_conllu, "1\tHi\t_\tWORD\t_\t_\t0\troot\t_\t_\n", 1, "WORD"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, reader, content, bad_line, fragment):
    f = tmp_path / "bad.txt"
    f.write_text(content)
    with pytest.raises(CorpusFormatError) as e:
        reader(f)
    assert f"{f}:{bad_line}:" in str(e.value) and fragment in str(e.value)


def test_alignment_of_crafted_sentence():
    words = ["John", "lives", "in", "Yellowknife", "\u200b", "."]
    tags = [1, 0, 0, 5, 0, 0]
    pieces = _pieces(words)
    assert len(pieces[3]) >= 2 and pieces[4] == []  # the cases under test do occur
    out = {
        k: v.numpy().tolist()
        for k, v in tagging.align_words(words, tags, vocab=VOCAB, seq_len=16).items()
    }
    n = 1 + sum(max(len(p), 1) for p in pieces) + 1
    first = [1, 2, 3, 4, 4 + len(pieces[3]), 5 + len(pieces[3])]
    assert out["input_ids"][0] == SPECIAL.cls and out["input_ids"][n - 1] == SPECIAL.sep
    assert out["input_ids"][first[4]] == SPECIAL.unk  # a word without pieces gets [UNK]
    assert out["input_ids"][n:] == [SPECIAL.pad] * (16 - n)
    assert out["input_mask"] == [1] * n + [0] * (16 - n) and out["segment_ids"] == [0] * 16
    assert [i for i, w in enumerate(out["label_weights"]) if w] == first
    assert [out["labels"][i] for i in first] == tags
    assert sum(out["labels"]) == sum(tags)  # nothing but first pieces carries a label
    assert out["word_labels"] == tags + [-1] * (16 - len(tags))
    assert out == _reference(words, tags, 16)


def test_truncation_drops_whole_words_and_keeps_all_word_labels():
    words = ["Yellowknife", "is", "unaffable", "and", "so", "is", "Ulaanbaatar"]
    tags = [5, 0, 0, 0, 0, 0, 5]
    lengths = np.cumsum([len(p) for p in _pieces(words)])
    for seq_len in (3, 6, 8, 12, 40):
        out = tagging.align_words(words, tags, vocab=VOCAB, seq_len=seq_len)
        out = {k: v.numpy().tolist() for k, v in out.items()}
        kept = int(np.sum(lengths <= seq_len - 2))
        assert sum(out["label_weights"]) == kept
        assert out["input_ids"][sum(out["input_mask"]) - 1] == SPECIAL.sep
        assert out["word_labels"] == (tags + [-1] * seq_len)[:seq_len]
        assert out == _reference(words, tags, seq_len)
    assert 0 < int(np.sum(lengths <= 6)) < len(words)  # seq_len=8 truncates mid-sentence


def test_pipeline_matches_reference_alignment_on_real_data():
    seq_len = 24  # short enough that many sentences are truncated
    sentences = tagging.read_split("wnut17_ner", "validation")
    examples = _examples("wnut17_ner", "validation", seq_len)
    assert len(examples) == len(sentences) == 1009
    tag_id = {t: i for i, t in enumerate(tagging.WNUT17_TAGS)}
    all_pieces = iter(_pieces([w for s in sentences for w in s.words]))
    truncated = 0
    for s, ex in zip(sentences, examples):
        pieces = [next(all_pieces) for _ in s.words]
        assert {k: v.tolist() for k, v in ex.items()} == _reference(
            s.words, [tag_id[t] for t in s.tags], seq_len, pieces
        )
        truncated += int(ex["label_weights"].sum()) < len(s.words)
    assert truncated > 50


def test_words_from_pieces_round_trip_gives_perfect_scores():
    info = data_pipelines.downstream_info("conll2003_ner")
    outside = tagging.outside_id(info.labels)
    sentences = tagging.read_split("conll2003_ner", "validation")
    for seq_len, perfect in ((160, True), (16, False)):
        gold_names, pred_names = [], []
        for ex in _examples("conll2003_ner", "validation", seq_len):
            gold, pred = tagging.words_from_pieces(
                ex["labels"], ex["label_weights"], ex["word_labels"], outside
            )
            gold_names.append([info.labels[i] for i in gold])
            pred_names.append([info.labels[i] for i in pred])
        assert gold_names == [list(s.tags[:seq_len]) for s in sentences]
        scores = info.metric_fn(gold_names, pred_names)
        if perfect:
            assert scores == {
                "precision": 1.0,
                "recall": 1.0,
                "f1": 1.0,
                "token_accuracy": 1.0,
            }
        else:  # truncated words are predicted "O": entities there are missed, not dropped
            assert scores["recall"] < 0.9 and scores["f1"] < 0.95
            assert all(0.0 <= v <= 1.0 for v in scores.values())  # fractions, not percent


def test_words_from_pieces_pads_truncated_words_with_outside_id():
    gold, pred = tagging.words_from_pieces(
        pred_ids=[0, 7, 0, 3, 0, 0],
        label_weights=[0, 1, 0, 1, 0, 0],
        word_labels=[1, 2, 4, 5, -1, -1],
        outside_id=9,
    )
    assert gold == [1, 2, 4, 5] and pred == [7, 3, 9, 9]
    assert tagging.outside_id(tagging.UPOS_TAGS) == tagging.UPOS_TAGS.index("X")
    assert tagging.outside_id(tagging.WNUT17_TAGS) == 0
    with pytest.raises(ValueError, match="shapes differ"):
        tagging.words_from_pieces([0, 1], [0, 1, 0], [1, -1, -1], 0)


def test_seqeval_semantics_on_hand_cases():
    ner = tagging.entity_metrics
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    scores = ner(gold, [["B-PER", "I-PER", "O", "B-ORG"]])
    # Fractions in [0, 1], not percent (tables multiply by 100 for display).
    assert scores == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "token_accuracy": 0.75}
    # conlleval: a leading I- opens an entity; a wrong boundary makes the whole entity wrong.
    assert ner([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])["f1"] == 1.0
    assert ner([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])["f1"] == 0.0
    scores = ner([["B-ORG", "O"], ["B-LOC"]], [["B-ORG", "O"], ["O"]])
    assert scores["precision"] == 1.0 and scores["recall"] == 0.5
    assert scores["f1"] == pytest.approx(2 / 3)
    upos = tagging.tag_accuracy([["NOUN", "VERB"], ["X"]], [["NOUN", "NOUN"], ["X"]])
    assert upos == {"accuracy": pytest.approx(2 / 3)}
    assert tagging.tag_accuracy([["X", "X"]], [["X", "X"]]) == {"accuracy": 1.0}
    with pytest.raises(ValueError, match="sentence 1"):
        ner([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 target sentences but 1"):
        tagging.tag_accuracy([["X"], ["X"]], [["X"]])


def test_shards_are_disjoint_and_cover_the_split():
    def key(ds):
        return sorted(tuple(ex["words"].tolist()) for ex in ds.as_numpy_iterator())

    full = key(tagging.source_dataset("validation", False, base="ud_ewt_upos"))
    shards = [
        key(
            tagging.source_dataset(
                "validation", True, seed=3, shard_info=seqio.ShardInfo(i, 3), base="ud_ewt_upos"
            )
        )
        for i in range(3)
    ]
    assert [len(s) for s in shards] == [667, 667, 667]
    assert sorted(shards[0] + shards[1] + shards[2]) == full
    first = tagging.source_dataset("validation", True, seed=3, base="ud_ewt_upos")
    again = tagging.source_dataset("validation", True, seed=3, base="ud_ewt_upos")
    other = tagging.source_dataset("validation", True, seed=4, base="ud_ewt_upos")
    words = [ex["words"].tolist() for ex in first.take(5).as_numpy_iterator()]
    assert words == [ex["words"].tolist() for ex in again.take(5).as_numpy_iterator()]
    assert words != [ex["words"].tolist() for ex in other.take(5).as_numpy_iterator()]
    with pytest.raises(ValueError, match="'train', 'validation', 'test'"):
        tagging.source_dataset("dev", False, base="ud_ewt_upos")


def test_tasks_are_registered_for_any_vocabulary(data_dir):
    for base, primary in [
        ("conll2003_ner", "f1"),
        ("wnut17_ner", "f1"),
        ("ud_ewt_upos", "accuracy"),
        ("conll2003_ner_tfds", "f1"),
    ]:
        info = data_pipelines.downstream_info(base)
        assert info.kind == "tagging" and info.primary_metric == primary
        task = seqio.get_mixture_or_task(base)
        assert task.metric_fns == [info.metric_fn]
        assert set(task.output_features) == {
            "input_ids", "input_mask", "segment_ids", "labels", "label_weights", "word_labels"
        }  # fmt: skip
    spec = f"wordpiece:{data_dir / 'models/minilm_l6_bert_uncased/vocab.txt'}"
    name = data_pipelines.get_task_name("ud_ewt_upos", vocab=spec)
    assert (
        name != "ud_ewt_upos" and data_pipelines.downstream_info(name).labels == tagging.UPOS_TAGS
    )
    [ex] = _examples(name, "test", 32, shuffle=True, seed=1)[:1]
    assert ex["input_ids"][0] == SPECIAL.cls and ex["word_labels"].max() < len(tagging.UPOS_TAGS)


def test_tfds_variant_maps_tags_by_name():
    from tensorflow_datasets.core.dataset_builders.conll import conll_dataset_builder_utils

    assert tagging.TFDS_CONLL2003_NER_TAGS == tuple(conll_dataset_builder_utils.NER_TAGS)
    task = seqio.get_mixture_or_task("conll2003_ner_tfds")
    assert isinstance(task.source, seqio.TfdsDataSource)
    assert task.source.tfds_dataset.name == tagging.TFDS_CONLL2003
    assert tagging.TFDS_CONLL2003_SPLITS["validation"] == "dev"
    tfds_like = tf.data.Dataset.from_generator(
        lambda: iter(
            [
                {"tokens": ["EU", "rejects"], "pos": [22, 42], "chunks": [11, 21], "ner": [1, 0]},
                {"tokens": ["Peter"], "pos": [22], "chunks": [11], "ner": [2]},
            ]
        ),
        output_signature={
            "tokens": tf.TensorSpec([None], tf.string),
            **{k: tf.TensorSpec([None], tf.int64) for k in ("pos", "chunks", "ner")},
        },
    )
    shuffled = ("O", "B-ORG", "B-PER", "I-PER", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
    raw = list(tagging.tfds_conll2003_to_raw(tfds_like, source_tags=shuffled).as_numpy_iterator())
    assert [ex["words"].tolist() for ex in raw] == [[b"EU", b"rejects"], [b"Peter"]]
    names = [[tagging.CONLL2003_TAGS[i] for i in ex["tags"]] for ex in raw]
    assert names == [["B-ORG", "O"], ["B-PER"]]
    assert raw[0]["tags"].dtype == np.int32
    features = tagging.make_tagging_preprocessor("bert_uncased")(
        tagging.tfds_conll2003_to_raw(tfds_like), {"input_ids": 8}
    )
    first = next(features.as_numpy_iterator())
    assert first["word_labels"].tolist() == [1, 0] + [-1] * 6  # B-PER O
    with pytest.raises(ValueError, match="B-FOO"):
        tagging.tfds_conll2003_to_raw(tfds_like, source_tags=("O", "B-FOO"))
