"""GPT data: the causal_lm task on the real corpus, and GPT-1 framing of the downstream tasks."""

import collections

import numpy as np
import pytest
import seqio

import data_pipelines
from data_pipelines import bert_pretrain, causal_lm, vocabularies

SEQ_LEN = 128


@pytest.fixture(scope="module")
def vocab():
    return vocabularies.get_vocabulary("bert_uncased")


@pytest.fixture(scope="module")
def gpt(vocab):
    return vocabularies.gpt_ids(vocab)


def _rows(task, split, seq_len=SEQ_LEN, **kw) -> dict[str, np.ndarray]:
    """All rows of one pass, [R, seq_len] per feature (batched: per-row iteration is slow)."""
    kw = dict(seed=0, shuffle=False, num_epochs=1) | kw
    ds = data_pipelines.get_dataset(task, split=split, seq_len=seq_len, **kw)
    batches = list(ds.batch(4096).as_numpy_iterator())
    return {k: np.concatenate([b[k] for b in batches]) for k in ds.element_spec}


def _segments(rows) -> list[tuple[int, ...]]:
    """The token ids of every (row, document) of packed rows, in row order."""
    out = []
    for ids, docs in zip(rows["input_ids"], rows["document_ids"], strict=True):
        out += [tuple(ids[docs == d].tolist()) for d in range(1, docs.max() + 1)]
    return out


def _expected_chunks(vocab, split, seq_len, eos, sources=None) -> list[tuple[int, ...]]:
    """Each tokenized document + eos, cut every seq_len tokens: written the obvious way."""
    kw = {} if sources is None else {"sources": sources}
    chunks = []
    for doc in bert_pretrain.load_tokenized(vocab, split, **kw):
        tokens = [t for sentence in doc for t in sentence.tolist()] + [eos]
        chunks += [tuple(tokens[i : i + seq_len]) for i in range(0, len(tokens), seq_len)]
    return chunks


def test_gpt_ids_and_frames(vocab):
    assert vocabularies.gpt_ids(vocab) == vocabularies.GptIds(
        start=101, delimiter=102, extract=103, eos=102, pad=0
    )
    assert vocabularies.frame_ids(vocab, "bert") == (101, 102, 102)
    assert vocabularies.frame_ids(vocab, "gpt") == (101, 102, 103)
    with pytest.raises(ValueError, match="framing"):
        vocabularies.frame_ids(vocab, "elmo")


def test_chunk_documents_keeps_every_token():
    docs = [
        [np.array([5, 6, 7], np.int32), np.array([8], np.int32)],  # 4 + eos = 5: chunks 4, 1
        [np.array([9, 10, 11], np.int32)],  # 3 + eos = 4: one chunk of exactly seq_len
        [np.arange(20, 30, dtype=np.int32)],  # 10 + eos = 11: chunks 4, 4, 3
    ]
    flat, bounds = causal_lm.chunk_documents(docs, seq_len=4, eos=2)
    chunks = [flat[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]
    assert chunks == [
        [5, 6, 7, 8],
        [2],
        [9, 10, 11, 2],
        [20, 21, 22, 23],
        [24, 25, 26, 27],
        [28, 29, 2],
    ]
    assert flat.dtype == np.int32


def test_pack_first_fit():
    # Chunks of 3, 4, 2, 1 tokens into rows of 4: the 1 goes back to the first row's gap.
    ids = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], np.int32)
    rows = causal_lm.pack(ids, np.array([3, 4, 2, 1]), seq_len=4, pad=0)
    assert list(rows) == list(causal_lm.FEATURES)
    assert rows["input_ids"].tolist() == [[1, 2, 3, 10], [4, 5, 6, 7], [8, 9, 0, 0]]
    assert rows["document_ids"].tolist() == [[1, 1, 1, 2], [1, 1, 1, 1], [1, 1, 0, 0]]
    assert rows["positions"].tolist() == [[0, 1, 2, 0], [0, 1, 2, 3], [0, 1, 0, 0]]
    assert all(v.dtype == np.int32 for v in rows.values())
    with pytest.raises(ValueError, match="does not fit"):
        causal_lm.pack(ids[:5], np.array([5]), seq_len=4, pad=0)


def test_rows_pack_documents_with_restarting_positions(gpt):
    rows = _rows("causal_lm", "validation")
    assert set(rows) == set(causal_lm.FEATURES)
    assert all(v.dtype == np.int32 and v.shape[1:] == (SEQ_LEN,) for v in rows.values())
    ids, docs, pos = rows["input_ids"], rows["document_ids"], rows["positions"]
    for i in range(len(ids)):
        n = int((docs[i] > 0).sum())
        assert n > 0 and docs[i][:n].all() and not docs[i][n:].any()  # padding only at the end
        assert (ids[i][n:] == gpt.pad).all() and not pos[i][n:].any()
        assert gpt.pad not in ids[i][:n]
        starts = np.flatnonzero(pos[i][:n] == 0)
        assert starts[0] == 0
        # document_ids count up by one exactly where positions restart, and nowhere else.
        np.testing.assert_array_equal(np.flatnonzero(np.diff(docs[i][:n])) + 1, starts[1:])
        assert (np.diff(docs[i][:n]) <= 1).all()
        for start, end in zip(starts, [*starts[1:], n]):
            np.testing.assert_array_equal(pos[i][start:end], np.arange(end - start))
    several = docs.max(1) > 1
    assert several.sum() >= 2, "no row holds more than one document"
    # A row's earlier documents are documents' last chunks, so they end with eos.
    for i in np.flatnonzero(several):
        ends = np.flatnonzero(np.diff(docs[i]) != 0)  # last token of every document but the last
        assert (ids[i][ends] == gpt.eos).all()


def test_validation_rows_are_the_documents_chunked(vocab, gpt):
    rows = _rows("causal_lm", "validation")
    got = _segments(rows)
    want = _expected_chunks(vocab, "validation", SEQ_LEN, gpt.eos)
    assert collections.Counter(got) == collections.Counter(want)  # no token lost or repeated
    num_docs = len(bert_pretrain.load_tokenized(vocab, "validation"))
    assert len(want) > 10 * num_docs and max(map(len, want)) == SEQ_LEN  # long ones are chunked
    # Unshuffled: every chunk sits where first-fit puts it in document order, on every call.
    again = _rows("causal_lm", "validation", seed=5)
    assert all(np.array_equal(rows[k], again[k]) for k in rows)
    assert got[:5] == want[:5]


def test_train_stream_is_seeded_and_shards_partition_it(vocab, gpt):
    # A one-source variant keeps whole passes fast; the code paths are the default task's.
    small = data_pipelines.get_task_name("causal_lm", sources=("inaugural",))
    kw = dict(split="train", seq_len=SEQ_LEN, shuffle=True, num_epochs=None)

    def head(seed, n=200):
        ds = data_pipelines.get_dataset(small, seed=seed, **kw)
        return next(ds.batch(n).as_numpy_iterator())

    first = head(seed=1)
    assert all(np.array_equal(v, head(seed=1)[k]) for k, v in first.items())
    assert not np.array_equal(first["input_ids"], head(seed=2)["input_ids"])
    kw["num_epochs"] = 1
    whole = _segments(_rows(small, seed=1, **kw))
    want = collections.Counter(_expected_chunks(vocab, "train", SEQ_LEN, gpt.eos, ("inaugural",)))
    assert collections.Counter(whole) == want
    shards = [
        collections.Counter(_segments(_rows(small, seed=1, shard_index=i, num_shards=2, **kw)))
        for i in range(2)
    ]
    assert shards[0] + shards[1] == want  # disjoint (as multisets) and covering
    assert abs(shards[0].total() - shards[1].total()) <= 1  # balanced within one chunk
    # The seed permutes the chunks themselves, not only seqio's row shuffle buffer after packing.
    options = causal_lm.CausalLMOptions(sources=("inaugural",))

    def chunks(seed, shuffle=True):
        ds = causal_lm.source_dataset(
            "train", shuffle, seed, vocab_spec="bert_uncased", options=options
        )
        return [tuple(x["input_ids"].tolist()) for x in ds.as_numpy_iterator()]

    in_order = chunks(None, shuffle=False)
    assert collections.Counter(in_order) == want
    assert chunks(1) == chunks(1) != chunks(2) and chunks(1)[:50] != in_order[:50]


def test_options_and_sequence_length_variants(vocab, gpt):
    assert data_pipelines.get_task_name("causal_lm") == "causal_lm"
    small = data_pipelines.get_task_name("causal_lm", sources=("inaugural",))
    assert small.startswith("causal_lm__")
    assert data_pipelines.get_task_name("causal_lm", sources=["inaugural"]) == small
    with pytest.raises(TypeError):
        data_pipelines.get_task_name("causal_lm", mask_rate=0.1)
    # get_dataset cuts chunks for the length it is asked for.
    rows = _rows(small, "train", seq_len=32)
    assert rows["input_ids"].shape[1] == 32
    want = _expected_chunks(vocab, "train", 32, gpt.eos, sources=("inaugural",))
    assert collections.Counter(_segments(rows)) == collections.Counter(want)
    # Rows shorter than the task's chunks would cut them: refused, not truncated.
    with pytest.raises(ValueError, match="cut chunks"):
        seqio.get_mixture_or_task("causal_lm").get_dataset(
            {k: 64 for k in causal_lm.FEATURES}, split="validation", shuffle=False
        )


# ---------------------------------------------------------------------------- GPT framing


def _examples(task, split, n, seq_len=48):
    ds = data_pipelines.get_dataset(
        task, split=split, seq_len=seq_len, seed=0, shuffle=False, num_epochs=1
    )
    return list(ds.take(n).as_numpy_iterator())


@pytest.mark.parametrize("base", ["sst2", "mrpc", "conll2003_ner"])
def test_gpt_framing_differs_from_bert_only_in_the_last_token(base, gpt):
    name = data_pipelines.get_task_name(base, framing="gpt")
    assert name.startswith(f"{base}__")
    assert data_pipelines.get_task_name(base, framing="bert") == base
    assert data_pipelines.downstream_info(name) == data_pipelines.downstream_info(base)
    gpt_examples, bert_examples = (
        _examples(name, "validation", 200),
        _examples(base, "validation", 200),
    )
    assert len(gpt_examples) == 200
    for g, b in zip(gpt_examples, bert_examples, strict=True):
        assert set(g) == set(b)
        n = int(g["input_mask"].sum())
        assert g["input_ids"][0] == gpt.start and g["input_ids"][n - 1] == gpt.extract
        assert b["input_ids"][n - 1] == gpt.delimiter  # [SEP]
        delimiters = np.flatnonzero(g["input_ids"][:n] == gpt.delimiter)
        if base == "mrpc":  # start a delimiter b extract, b's segment after the delimiter
            assert len(delimiters) == 1 and g["segment_ids"][delimiters[0] + 1 : n].all()
            assert not g["segment_ids"][: delimiters[0] + 1].any()
        else:
            assert len(delimiters) == 0
        same = np.arange(len(g["input_ids"])) != n - 1
        np.testing.assert_array_equal(g["input_ids"][same], b["input_ids"][same])
        for k in set(g) - {"input_ids"}:
            np.testing.assert_array_equal(g[k], b[k])


def test_gpt_framing_in_the_mixture_and_bad_framing(gpt):
    options = dict(tasks=("trec", "rte"), rates="trec=1;rte=1")
    name = data_pipelines.get_task_name("glue_mix", framing="gpt", **options)
    assert name.startswith("glue_mix__") and name != data_pipelines.get_task_name(
        "glue_mix", **options
    )
    assert data_pipelines.get_task_name("glue_mix", framing="bert") == "glue_mix"
    ds = data_pipelines.get_dataset(name, split="validation", seq_len=32, seed=0, shuffle=True)
    examples = list(ds.take(60).as_numpy_iterator())
    assert {int(ex["task_id"]) for ex in examples} == {0, 1}
    for ex in examples:
        assert ex["input_ids"][int(ex["input_mask"].sum()) - 1] == gpt.extract
    with pytest.raises(ValueError, match="framing"):
        data_pipelines.get_task_name("sst2", framing="elmo")
    with pytest.raises(TypeError):
        data_pipelines.get_task_name("sst2", framin="gpt")
