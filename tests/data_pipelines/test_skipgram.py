"""The skip-gram rows on a toy corpus: exact tokens, sentences and noise layout, per centre and
per group (data option noise_group / noise_draws)."""

import types

import numpy as np
import pytest

from data_pipelines import skipgram


def toy_corpus():
    # 7 words in two sentences; no subsampling (sample=0), so every word is a centre.
    ids = np.array([5, 6, 7, 8, 9, 10, 11], np.int32)
    sentence = np.array([0, 0, 0, 1, 1, 1, 1], np.int32)
    counts = np.arange(1, 13, dtype=np.int64)
    return types.SimpleNamespace(ids=ids, sentence=sentence, counts=counts)


@pytest.mark.parametrize("group, draws", [(1, 1), (2, 3)])
def test_toy_rows_are_exactly_the_stream_with_its_halo(group, draws):
    opts = skipgram.SkipGramOptions(
        seq_len=4, window=1, negatives=2, sample=0.0, noise_group=group, noise_draws=draws
    )
    tokens, sent, window, noise = skipgram.epoch_rows(toy_corpus(), opts, np.random.default_rng(0))
    np.testing.assert_array_equal(tokens, [[0, 5, 6, 7, 8, 9], [8, 9, 10, 11, 0, 0]])
    np.testing.assert_array_equal(sent, [[-1, 0, 0, 0, 1, 1], [1, 1, 1, 1, -1, -1]])
    np.testing.assert_array_equal(window, np.ones((2, 4)))
    want = (2, 4, 2) if (group, draws) == (1, 1) else (2, 2, 3, 2)
    assert noise.shape == want and noise.min() >= 0 and noise.max() < 12
    assert opts.features[3] == ("negatives" if group == draws == 1 else "group_negatives")
    assert opts.noise_shape() == want[1:]


def test_group_noise_follows_the_unigram_power_law():
    opts = skipgram.SkipGramOptions(seq_len=4, window=1, negatives=5, sample=0.0, noise_group=2,
                                    noise_draws=500)  # fmt: skip
    wc = toy_corpus()
    noise = skipgram.epoch_rows(wc, opts, np.random.default_rng(1))[3]
    p = wc.counts**0.75 / (wc.counts**0.75).sum()
    share = np.bincount(noise.reshape(-1), minlength=12) / noise.size
    np.testing.assert_allclose(share, p, atol=0.02)


def test_group_must_divide_the_row():
    with pytest.raises(ValueError, match="noise_group"):
        skipgram.SkipGramOptions(seq_len=6, noise_group=4)
