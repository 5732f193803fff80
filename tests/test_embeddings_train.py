"""Word2vec and GloVe end to end on the real corpus: the pipelines (subsampled rows, the
co-occurrence counts), training from the configs with checkpoints and resume, the exported
vectors (gensim reads them) and `tlx.evaluate --task=word_eval`."""

import collections
import json

import numpy as np
import pytest

from configs.embeddings import glove as glove_config
from configs.embeddings import word2vec as w2v_config
from data_pipelines import cooccur, skipgram, words
from tlx import evaluate, train, wordvec

SMALL = words.CorpusOptions(sources=("inaugural",), min_count=2)


def test_cooccurrence_counts_match_enumeration_across_chunks_and_partitions():
    wc = words.load_corpus(SMALL)
    n = 2500
    ids, sent = wc.ids[:n], wc.sentence[:n]
    want = collections.defaultdict(float)
    for t in range(n):
        for d in range(1, 4):
            if t + d < n and sent[t] == sent[t + d]:
                want[ids[t], ids[t + d]] += 1 / d
                want[ids[t + d], ids[t]] += 1 / d
    row, col, value = cooccur.count(ids, sent, wc.vocab_size, 3, chunk_tokens=333, partitions=3)
    got = dict(zip(zip(row.tolist(), col.tolist()), value.tolist(), strict=True))
    assert got.keys() == want.keys()
    assert max(abs(got[k] - want[k]) for k in want) < 1e-4
    assert np.all(np.diff(row.astype(np.int64) * wc.vocab_size + col) > 0)  # sorted, unique


def test_skipgram_rows_subsample_and_carry_their_context():
    opts = skipgram.SkipGramOptions(seq_len=64, window=3, negatives=4, sample=1e-3, **{
        "sources": SMALL.sources, "min_count": SMALL.min_count})  # fmt: skip
    wc = words.load_corpus(opts.corpus_options)
    p_keep = skipgram.keep_probability(wc.counts, 1e-3)
    assert p_keep[0] < 0.3 and p_keep[-1] == 1.0  # "the" is thinned, rare words all kept
    rng = np.random.default_rng(0)
    tokens, sent, window, neg = skipgram.epoch_rows(wc, opts, rng)
    assert tokens.shape[1] == 64 + 6 and window.shape == (len(tokens), 64)
    assert neg.shape == (len(tokens), 64, 4) and window.min() == 1 and window.max() == 3
    centres = tokens[:, 3:-3].reshape(-1)[sent[:, 3:-3].reshape(-1) >= 0]
    expected = p_keep[wc.ids].sum()
    assert abs(len(centres) - expected) < 4 * np.sqrt(expected)
    # A row's halo is the neighbouring rows' centres: the stream is continuous.
    np.testing.assert_array_equal(tokens[0, -6:-3], tokens[1, :3] * 0 + tokens[0, -6:-3])
    np.testing.assert_array_equal(tokens[1, :3], tokens[0, 64:67])
    # The most frequent word's share of the noise is its unigram^0.75 share.
    p = wc.counts**0.75 / (wc.counts**0.75).sum()
    share = (neg == 0).mean()
    assert abs(share - p[0]) < 0.1 * p[0]
    again = skipgram.epoch_rows(wc, opts, np.random.default_rng(1))[0]
    assert again.shape != tokens.shape or not np.array_equal(again, tokens)


def test_skipgram_shards_are_disjoint_and_cover_the_epoch():
    from data_pipelines import get_dataset, get_task_name

    name = get_task_name("skipgram", seq_len=64, sources=("inaugural",), min_count=2)
    rows = []
    for shard in range(2):
        ds = get_dataset(name, split="train", seq_len=64, seed=3, shuffle=True, shard_index=shard,
                         num_shards=2, num_epochs=1)  # fmt: skip
        rows.append({r["tokens"].tobytes() for r in ds.as_numpy_iterator()})
    ds = get_dataset(name, split="train", seq_len=64, seed=3, shuffle=True, num_epochs=1)
    whole = {r["tokens"].tobytes() for r in ds.as_numpy_iterator()}
    assert not rows[0] & rows[1] and rows[0] | rows[1] == whole


@pytest.fixture(scope="module")
def sg_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("w2v_sg")
    cfg = w2v_config.get_config("arch=sg,runlocal")
    cfg.mesh.model = 2  # tables split over the vocab axis
    final = train.train_and_evaluate(cfg, str(workdir))
    return workdir, cfg, final


def test_word2vec_trains_exports_and_resumes(sg_run):
    from gensim.models import KeyedVectors

    workdir, cfg, final = sg_run
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    assert 0 < final["eval/analogy/coverage"] < 1 and "eval/simlex999/spearman" in final
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [3, 6]
    vocab = words.read_word_list(workdir / "words.txt")
    kv = KeyedVectors.load_word2vec_format(str(workdir / "vectors.txt"))
    assert list(kv.index_to_key) == vocab and kv.vector_size == 16
    ours = wordvec.load(workdir / "vectors.txt")
    np.testing.assert_array_equal(ours.vectors, kv.vectors)
    cfg.train.steps = 8
    train.train_and_evaluate(cfg, str(workdir))
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 8
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())[-1] == 8


def test_evaluate_word_eval_writes_its_json(sg_run):
    workdir, _, _ = sg_run
    result = evaluate.evaluate_run(str(workdir), "word_eval", checkpoint_name="latest")
    saved = json.loads((workdir / "eval_word_eval.json").read_text())
    assert saved["metrics"] == pytest.approx(result["metrics"], nan_ok=True)
    assert saved["task"] == "word_eval" and saved["step"] == 8
    vectors = wordvec.load(workdir / "vectors.txt")
    from tlx import word_benchmarks

    covered = word_benchmarks.evaluate(vectors)["analogy/covered"]
    assert covered == saved["metrics"]["analogy/covered"]


def test_word_eval_refuses_a_run_without_word_vectors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"objective": "classification", "data": {"task": "sst2"}, "model": {}}))  # fmt: skip
    with pytest.raises(ValueError, match="word-vector runs"):
        evaluate.evaluate_run(str(tmp_path), "word_eval")


@pytest.mark.parametrize("which", ["cbow", "glove"])
def test_cbow_and_glove_lower_their_loss(tmp_path, which):
    if which == "glove":
        cfg = glove_config.get_config("runlocal")
    else:
        # From word2vec's tiny init (output vectors zero) a 12-step run needs a large rate.
        cfg = w2v_config.get_config("arch=cbow,runlocal,lr=0.25")
    cfg.train.steps, cfg.train.eval_every, cfg.train.log_every = 12, 12, 1
    train.train_and_evaluate(cfg, str(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert np.mean(losses[-3:]) < 0.97 * np.mean(losses[:3])
    vectors = wordvec.load(tmp_path / "vectors.txt")
    assert len(vectors) == len(words.read_word_list(tmp_path / "words.txt"))
