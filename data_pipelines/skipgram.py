"""SeqIO task `skipgram`: word2vec training rows from the real corpus.

Each epoch (word2vec.c's recipe): every corpus word is kept with probability
min(1, sqrt(t / f) + t / f), f its relative frequency (`sample` = t; gensim's formula), and the
kept stream is cut into rows of `seq_len` centre words plus `window` words of context on either
side. Per centre the row also carries its reduced window b ~ U{1..W} and K noise words drawn
from the unigram^0.75 distribution. Pairs are formed on the device (tlx.models.embeddings), so
a row costs the pipeline (C + 2W) + C(K + 1) ints instead of one record per (centre, context).
With `noise_group` = G and `noise_draws` = S (other than 1 and 1) the row carries
`group_negatives` [C / G, S, K] instead of `negatives` [C, K]: per group of G consecutive
centres, S draws of K noise words that all the group's pairs share (the model's per-group
formulation), so a row costs (C + 2W) + C + C S K / G ints.

Epochs differ (subsampling, windows, noise and row order are redrawn from (seed, epoch)); rows
are dealt to shards round-robin, so shards are disjoint and together are the whole epoch.
"""

import dataclasses
import functools
import itertools

import numpy as np
import seqio
import tensorflow as tf

from data_pipelines import corpus, sources, words

_SALT = 0x5C1B
_BLOCK = 64  # rows per generator element
FEATURES = ("tokens", "sentence", "window", "negatives")
GROUP_FEATURES = ("tokens", "sentence", "window", "group_negatives")  # noise shared by groups


@dataclasses.dataclass(frozen=True)
class SkipGramOptions:
    seq_len: int = 512  # centre words per row
    window: int = 5  # max context words either side (word2vec `-window`)
    negatives: int = 5  # noise words per centre (`-negative`)
    sample: float = 1e-3  # subsampling threshold t (`-sample`); 0 disables
    noise_power: float = 0.75
    noise_group: int = 1  # G: consecutive centres that share their noise draws
    noise_draws: int = 1  # S: draws of `negatives` noise words per group
    min_count: int = 5
    max_vocab: int = 0
    sources: tuple[str, ...] = corpus.DEFAULT_SOURCES
    eval_fraction: float = 0.05

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        for name in ("seq_len", "window", "negatives", "min_count", "noise_group", "noise_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"skipgram option {name}={getattr(self, name)} must be >= 1")
        if self.seq_len % self.noise_group:
            raise ValueError(
                f"skipgram option noise_group={self.noise_group} must divide seq_len={self.seq_len}"
            )
        if self.sample < 0:
            raise ValueError(f"skipgram option sample={self.sample} must be >= 0")

    @property
    def corpus_options(self) -> words.CorpusOptions:
        return words.CorpusOptions(self.sources, self.min_count, self.max_vocab, self.eval_fraction)

    @property
    def grouped(self) -> bool:
        return (self.noise_group, self.noise_draws) != (1, 1)

    @property
    def features(self) -> tuple[str, ...]:
        return GROUP_FEATURES if self.grouped else FEATURES

    def noise_shape(self) -> tuple[int, ...]:
        """A row's noise words: [C, K] per centre, or [C / G, S, K] per group."""
        if self.grouped:
            return (self.seq_len // self.noise_group, self.noise_draws, self.negatives)
        return (self.seq_len, self.negatives)


def keep_probability(counts: np.ndarray, sample: float) -> np.ndarray:
    """Per-word probability of surviving subsampling (gensim's form of word2vec.c's rule)."""
    if sample <= 0:
        return np.ones(len(counts))
    threshold = sample * counts.sum()
    return np.minimum(1.0, (np.sqrt(counts / threshold) + 1) * threshold / counts)


NOISE_TABLE = 10_000_000  # word2vec.c samples noise from a table like this (of 1e8)


def noise_table(counts: np.ndarray, power: float, size: int = NOISE_TABLE) -> np.ndarray:
    """Word ids, each repeated in proportion to count^power: a uniform index into the table
    draws a noise word (one array lookup per draw instead of a binary search)."""
    p = counts.astype(np.float64) ** power
    ends = np.round(np.cumsum(p / p.sum()) * size).astype(np.int64)
    return np.repeat(np.arange(len(counts), dtype=np.int32), np.diff(ends, prepend=0))


def epoch_rows(wc: words.WordCorpus, opts: SkipGramOptions, rng: np.random.Generator):
    """One epoch: (tokens [R, C+2W], sentence [R, C+2W], window [R, C], noise words [R, C, K]
    or, grouped, [R, C / G, S, K])."""
    c, w = opts.seq_len, opts.window
    keep = rng.random(len(wc.ids)) < keep_probability(wc.counts, opts.sample)[wc.ids]
    ids, sent = wc.ids[keep], wc.sentence[keep]
    n_rows = -(-len(ids) // c)
    pad = n_rows * c - len(ids)
    ids = np.concatenate([np.zeros(w, np.int32), ids, np.zeros(pad + w, np.int32)])
    sent = np.concatenate([np.full(w, -1, np.int32), sent, np.full(pad + w, -1, np.int32)])
    starts = np.arange(n_rows)[:, None] * c + np.arange(c + 2 * w)[None]  # [R, C+2W]
    window = rng.integers(1, w + 1, (n_rows, c), dtype=np.int32)
    table = noise_table(wc.counts, opts.noise_power)
    negatives = table[rng.integers(0, len(table), (n_rows, *opts.noise_shape()))]
    return ids[starts], sent[starts], window, negatives


def epoch_rng(seed, epoch: int) -> np.random.Generator:
    """The generator of one epoch's draws; its first draw is the subsampling (epoch_rows)."""
    return np.random.default_rng([(seed or 0) & 0xFFFFFFFF, _SALT, epoch])


def source_dataset(split, shuffle_files, seed=None, shard_info=None, *, options: SkipGramOptions):
    if split != "train":
        raise ValueError("skipgram has only a train split (word vectors are scored on word_eval)")
    wc = words.load_corpus(options.corpus_options)
    epochs = itertools.count()  # seqio repeats this dataset; each repetition is a new epoch
    spec = {
        "tokens": tf.TensorSpec([options.seq_len + 2 * options.window], tf.int32),
        "sentence": tf.TensorSpec([options.seq_len + 2 * options.window], tf.int32),
        "window": tf.TensorSpec([options.seq_len], tf.int32),
        options.features[3]: tf.TensorSpec(options.noise_shape(), tf.int32),
    }

    def generate():
        epoch = next(epochs)
        arrays = epoch_rows(wc, options, epoch_rng(seed, epoch))
        order = sources.shard_order(
            len(arrays[0]), shuffle_files, (seed or 0) + epoch, shard_info, _SALT
        )
        for i in range(0, len(order), _BLOCK):  # blocks of rows: the per-element cost is Python's
            take = order[i : i + _BLOCK]
            yield {name: a[take] for name, a in zip(options.features, arrays)}

    block_spec = {k: tf.TensorSpec([None, *v.shape], v.dtype) for k, v in spec.items()}
    return tf.data.Dataset.from_generator(generate, output_signature=block_spec).unbatch()


def register(name: str, vocab_spec: str, options: SkipGramOptions) -> None:
    del vocab_spec  # the vocabulary is the corpus' own min-count word list

    def feature(rank):
        return seqio.Feature(
            seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.int32, rank=rank
        )

    seqio.TaskRegistry.add(
        name,
        source=sources.ShardedFunctionSource(
            functools.partial(source_dataset, options=options), splits=("train",)
        ),
        preprocessors=[],
        output_features={
            "tokens": feature(1),
            "sentence": feature(1),
            "window": feature(1),
            options.features[3]: feature(len(options.noise_shape())),
        },
        shuffle_buffer_size=64,
    )
