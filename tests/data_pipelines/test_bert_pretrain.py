"""BERT MLM+NSP instances, masking statistics and the bert_pretrain task, on the real corpus."""

import numpy as np
import pytest

import data_pipelines
from data_pipelines import bert_pretrain, corpus, hashrng, vocabularies
from data_pipelines.bert_pretrain import PretrainOptions

SEQ_LEN = 128


@pytest.fixture(scope="module")
def vocab():
    return vocabularies.get_vocabulary("bert_uncased")


@pytest.fixture(scope="module")
def special(vocab):
    return vocabularies.special_ids(vocab)


@pytest.fixture(scope="module")
def instances(vocab):
    return bert_pretrain.build_instances(vocab, "train", PretrainOptions(seq_len=SEQ_LEN), seed=0)


def _mask_many(instances, options, special, vocab, n=3000, seed=0):
    random_ids = bert_pretrain.random_token_ids(vocab)
    keys = hashrng.keys(seed, 1, np.zeros(n), np.arange(n))
    out = bert_pretrain.mask_batch(
        instances.input_ids[:n], instances.input_mask[:n], keys, options, special, random_ids
    )
    return [{k: v[i] for k, v in out.items()} for i in range(n)]


def _rates(instances, masked, special):
    """(selection rate over non-special tokens, [MASK] share, random share, unchanged share)."""
    candidates = selected = n_mask = n_same = 0
    for i, m in enumerate(masked):
        orig = instances.input_ids[i]
        real = instances.input_mask[i] == 1
        candidates += int((real & ~np.isin(orig, [special.cls, special.sep, special.pad])).sum())
        k = int(m["masked_lm_weights"].sum())
        pos = m["masked_lm_positions"][:k]
        selected += k
        n_mask += int((m["input_ids"][pos] == special.mask).sum())
        n_same += int((m["input_ids"][pos] == orig[pos]).sum())
    return (
        selected / candidates,
        n_mask / selected,
        (selected - n_mask - n_same) / selected,
        n_same / selected,
    )


def test_instance_structure(instances, special):
    assert instances.input_ids.shape == (len(instances), SEQ_LEN) and len(instances) > 10_000
    for i in range(0, len(instances), 97):
        ids, seg, mask = instances.input_ids[i], instances.segment_ids[i], instances.input_mask[i]
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
        assert (ids[n:] == special.pad).all() and not seg[n:].any()
        sep = np.flatnonzero(ids[:n] == special.sep)
        assert ids[0] == special.cls and len(sep) == 2 and sep[1] == n - 1
        assert sep[0] >= 2 and sep[1] - sep[0] >= 2  # A and B both non-empty
        assert not seg[: sep[0] + 1].any() and seg[sep[0] + 1 : n].all()
        assert special.cls not in ids[1:n] and special.pad not in ids[:n]


def test_random_next_rate_is_half(instances):
    assert abs(instances.next_sentence_labels.mean() - 0.5) < 0.03


def test_random_next_rate_follows_option(vocab):
    options = PretrainOptions(seq_len=SEQ_LEN, random_next_prob=0.2, sources=("state_union",))
    inst = bert_pretrain.build_instances(vocab, "train", options, seed=0)
    assert abs(inst.next_sentence_labels.mean() - 0.2) < 0.03


def test_real_next_segment_continues_the_document(vocab, special):
    options = PretrainOptions(
        seq_len=SEQ_LEN, random_next_prob=0.0, short_seq_prob=0.0, sources=("inaugural",)
    )
    docs = bert_pretrain.load_tokenized(vocab, "train", ("inaugural",))
    inst = bert_pretrain.create_instances(docs, options, special, np.random.default_rng(0))
    flat = " ".join(" ".join(map(str, s)) for d in docs for s in d)
    # Only a one-sentence chunk at a document's end has no continuation and falls back to random.
    assert inst.next_sentence_labels.sum() <= len(docs)
    real = np.flatnonzero(inst.next_sentence_labels == 0)
    for i in real[::50]:  # A and B are runs of the text (truncation trims their ends), B after A
        ids = inst.input_ids[i][inst.input_mask[i] == 1].tolist()
        sep = ids.index(special.sep)
        a, b = (" ".join(map(str, part)) for part in (ids[1:sep], ids[sep + 1 : -1]))
        start = flat.find(a)
        assert start >= 0 and b in flat[start + len(a) : start + len(a) + 4 * len(b) + 2000]


def test_masking_rates_and_targets(instances, special, vocab):
    options = PretrainOptions(seq_len=SEQ_LEN)
    masked = _mask_many(instances, options, special, vocab)
    selection, to_mask, to_random, unchanged = _rates(instances, masked, special)
    assert abs(selection - 0.15) < 0.01
    assert abs(to_mask - 0.8) < 0.02 and abs(to_random - 0.1) < 0.02
    assert abs(unchanged - 0.1) < 0.02
    for i, m in enumerate(masked):
        k = int(m["masked_lm_weights"].sum())
        pos, orig = m["masked_lm_positions"], instances.input_ids[i]
        assert (
            m["masked_lm_weights"].dtype == np.float32 and (m["masked_lm_weights"][:k] == 1).all()
        )
        assert not m["masked_lm_weights"][k:].any() and not pos[k:].any()
        assert (m["masked_lm_ids"][:k] == orig[pos[:k]]).all()
        assert not np.isin(orig[pos[:k]], [special.cls, special.sep, special.pad]).any()
        assert (instances.input_mask[i][pos[:k]] == 1).all()
        unselected = np.ones(SEQ_LEN, bool)
        unselected[pos[:k]] = False
        assert (m["input_ids"][unselected] == orig[unselected]).all()


def test_mask_rate_option_changes_measured_rate(instances, special, vocab):
    options = PretrainOptions(seq_len=SEQ_LEN, mask_rate=0.3, mask_token_prob=0.5)
    assert options.max_predictions == round(SEQ_LEN * 0.3)
    selection, to_mask, _, _ = _rates(
        instances, _mask_many(instances, options, special, vocab, n=1500), special
    )
    assert abs(selection - 0.3) < 0.01 and abs(to_mask - 0.5) < 0.02


def _take(ds, n):
    return list(ds.take(n).as_numpy_iterator())


def _same(a, b):
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


def _originals(examples):
    """Unmasked input ids: the MLM targets put back at their positions."""
    out = []
    for ex in examples:
        ids = ex["input_ids"].copy()
        k = int(ex["masked_lm_weights"].sum())
        ids[ex["masked_lm_positions"][:k]] = ex["masked_lm_ids"][:k]
        out.append(tuple(ids.tolist()))
    return out


def test_task_features_and_determinism():
    kw = dict(split="validation", seq_len=SEQ_LEN, shuffle=True)
    ds = data_pipelines.get_dataset("bert_pretrain", seed=1, **kw)
    assert set(ds.element_spec) == set(bert_pretrain.FEATURES)
    assert ds.element_spec["masked_lm_positions"].shape == (19,)
    assert ds.element_spec["next_sentence_labels"].shape == ()
    a = _take(ds, 40)
    assert _same(a, _take(data_pipelines.get_dataset("bert_pretrain", seed=1, **kw), 40))
    assert not _same(a, _take(data_pipelines.get_dataset("bert_pretrain", seed=2, **kw), 40))


def test_masks_are_redrawn_each_epoch():
    ds = data_pipelines.get_dataset(
        "bert_pretrain", split="validation", seq_len=SEQ_LEN, seed=0, shuffle=False, num_epochs=2
    )
    examples = list(ds.as_numpy_iterator())
    half = len(examples) // 2
    first, second = examples[:half], examples[half:]
    assert _originals(first) == _originals(second)  # same sentence pairs ...
    differ = sum(
        not np.array_equal(x["masked_lm_positions"], y["masked_lm_positions"])
        for x, y in zip(first, second)
    )
    assert differ > 0.9 * half  # ... new masks


def test_shards_are_disjoint_and_cover_the_split():
    kw = dict(split="validation", seq_len=64, seed=3, shuffle=True, num_epochs=1)
    full = _originals(data_pipelines.get_dataset("bert_pretrain", **kw).as_numpy_iterator())
    shards = [
        _originals(
            data_pipelines.get_dataset(
                "bert_pretrain", shard_index=i, num_shards=2, **kw
            ).as_numpy_iterator()
        )
        for i in range(2)
    ]
    assert abs(len(shards[0]) - len(shards[1])) <= 1
    assert sorted(shards[0] + shards[1]) == sorted(full)
    assert not set(shards[0]) & set(shards[1])


def test_train_and_validation_documents_are_disjoint(vocab, data_dir):
    docs = corpus.read_documents(data_dir)
    valid = {d.doc_id for d in corpus.split_documents(docs, "validation")}
    train = {d.doc_id for d in corpus.split_documents(docs, "train")}
    assert valid and train and not valid & train
    n_train = sum(len(d) for d in bert_pretrain.load_tokenized(vocab, "train"))
    n_valid = sum(len(d) for d in bert_pretrain.load_tokenized(vocab, "validation"))
    n_all = sum(len(d.sentences) for d in docs)
    assert n_train + n_valid <= n_all and n_valid < 0.15 * n_all


def test_variant_task_names():
    assert data_pipelines.get_task_name("bert_pretrain") == "bert_pretrain"
    name = data_pipelines.get_task_name("bert_pretrain", mask_rate=0.3)
    assert name.startswith("bert_pretrain__") and name != "bert_pretrain"
    assert data_pipelines.get_task_name("bert_pretrain", mask_rate=0.3) == name
    assert data_pipelines.get_task_name("bert_pretrain", mask_rate=0.2) != name
    with pytest.raises(TypeError):
        data_pipelines.get_task_name("bert_pretrain", mask_rat=0.3)
    ds = data_pipelines.get_dataset(name, split="validation", seq_len=64, seed=0, shuffle=False)
    assert ds.element_spec["masked_lm_ids"].shape == (round(64 * 0.3),)
    assert ds.element_spec["input_ids"].shape == (64,)


def test_a_rows_masks_depend_on_its_key_alone(instances, special, vocab):
    """Random access: a row masked alone, or inside a batch in another order, gets the same
    masks; another key (e.g. the next epoch's) gets others."""
    options, random_ids = PretrainOptions(seq_len=SEQ_LEN), bert_pretrain.random_token_ids(vocab)
    ids, mask = instances.input_ids[:64], instances.input_mask[:64]
    keys = hashrng.keys(7, 1, np.zeros(64), np.arange(64))
    whole = bert_pretrain.mask_batch(ids, mask, keys, options, special, random_ids)
    order = np.random.default_rng(0).permutation(64)
    shuffled = bert_pretrain.mask_batch(
        ids[order], mask[order], keys[order], options, special, random_ids
    )
    alone = bert_pretrain.mask_batch(ids[5:6], mask[5:6], keys[5:6], options, special, random_ids)
    for k in whole:
        assert np.array_equal(whole[k][order], shuffled[k]), k
        assert np.array_equal(whole[k][5:6], alone[k]), k
    other = bert_pretrain.mask_batch(
        ids, mask, hashrng.keys(7, 1, np.ones(64), np.arange(64)), options, special, random_ids
    )
    differ = (whole["masked_lm_positions"] != other["masked_lm_positions"]).any(1).mean()
    assert differ > 0.9


def test_hash_uniforms_are_uniform_and_independent():
    u = hashrng.uniform(hashrng.keys(0, 1, np.arange(4000)), 50)  # [4000, 50]
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    # Neighbouring draws and neighbouring keys uncorrelated (|r| < 4 / sqrt(n))
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 4 / np.sqrt(u.size)
    assert abs(np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]) < 4 / np.sqrt(u.size)
