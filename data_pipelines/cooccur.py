"""GloVe's co-occurrence matrix, and the SeqIO task `glove` that streams its entries.

Counting (as glove's cooccur.c): words j within `window` of word i in the same sentence add
1/distance to X_ij, symmetrically. Memory is bounded the way cooccur.c bounds it: the corpus is
counted in chunks of `chunk_tokens` words; each chunk's entries are reduced (summed per (i, j))
and spilled to disk split into row-range partitions; each partition is then reduced alone, so
peak memory is one chunk's pairs or one partition's entries, never the whole pair stream. The
result is cached under the cache dir, keyed by the corpus and the counting options.

The task yields rows of `seq_len` entries: `row`, `col` [E] int32, `log_count` [E] (log X_ij)
and `weight` [E] (f(X_ij) = min(1, (X_ij / x_max)^alpha); 0 marks padding). Each epoch reshuffles
all entries (from (seed, epoch)) and deals rows round-robin to shards.
"""

import dataclasses
import functools
import hashlib
import itertools
import pathlib
import tempfile

import numpy as np
import seqio
import tensorflow as tf

from data_pipelines import cache, corpus, paths, sources, words

_SALT = 0x610E
FEATURES = ("row", "col", "log_count", "weight")


@dataclasses.dataclass(frozen=True)
class GloveOptions:
    seq_len: int = 4096  # co-occurrence entries per row
    window: int = 10
    x_max: float = 100.0
    alpha: float = 0.75
    min_count: int = 5
    max_vocab: int = 0
    sources: tuple[str, ...] = corpus.DEFAULT_SOURCES
    eval_fraction: float = 0.05
    chunk_tokens: int = 1 << 20  # words counted per in-memory chunk
    partitions: int = 8  # row ranges reduced one at a time

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        for name in ("seq_len", "window", "min_count", "chunk_tokens", "partitions"):
            if getattr(self, name) < 1:
                raise ValueError(f"glove option {name}={getattr(self, name)} must be >= 1")
        if self.x_max <= 0 or self.alpha <= 0:
            raise ValueError(f"glove options x_max={self.x_max}, alpha={self.alpha} must be > 0")

    @property
    def corpus_options(self) -> words.CorpusOptions:
        return words.CorpusOptions(self.sources, self.min_count, self.max_vocab, self.eval_fraction)


def _reduce(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum `values` per distinct key; keys come back sorted."""
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.add.reduceat(values, starts) if len(keys) else values


def count(
    ids: np.ndarray,
    sentence: np.ndarray,
    vocab_size: int,
    window: int,
    chunk_tokens: int = 1 << 20,
    partitions: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, value): X_ij = sum over pairs at distance d <= window of 1/d, both orders."""
    n = len(ids)
    bounds = np.linspace(0, vocab_size * vocab_size, partitions + 1).astype(np.int64)
    with tempfile.TemporaryDirectory(dir=paths.cache_dir()) as tmp:
        spills: list[list[pathlib.Path]] = [[] for _ in range(partitions)]
        for c, start in enumerate(range(0, n, chunk_tokens)):
            stop = min(start + chunk_tokens, n)
            keys, vals = [], []
            for d in range(1, window + 1):
                left = np.arange(start, min(stop, n - d))  # pairs (t, t + d) starting in the chunk
                same = sentence[left] == sentence[left + d]
                i, j = ids[left[same]].astype(np.int64), ids[left[same] + d].astype(np.int64)
                keys += [i * vocab_size + j, j * vocab_size + i]
                vals += [np.full(2 * len(i), 1.0 / d, np.float64)]
            k, v = _reduce(np.concatenate(keys), np.concatenate(vals))
            cuts = np.searchsorted(k, bounds)
            for p in range(partitions):
                path = pathlib.Path(tmp) / f"{p}-{c}.npz"
                np.savez(path, k=k[cuts[p] : cuts[p + 1]], v=v[cuts[p] : cuts[p + 1]])
                spills[p].append(path)
        rows, cols, values = [], [], []
        for p in range(partitions):
            parts = [np.load(path) for path in spills[p]]
            k, v = _reduce(
                np.concatenate([z["k"] for z in parts]), np.concatenate([z["v"] for z in parts])
            )
            rows.append((k // vocab_size).astype(np.int32))
            cols.append((k % vocab_size).astype(np.int32))
            values.append(v.astype(np.float32))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(values)


def load_cooccurrences(options: GloveOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cached (row, col, value) of the corpus under `options`, counted on first use."""
    return _load_cooccurrences(options, paths.data_dir(), paths.cache_dir())


@functools.cache  # per data root and cache dir, which the environment may change
def _load_cooccurrences(options: GloveOptions, root: pathlib.Path, cache_dir: pathlib.Path):
    copts = options.corpus_options
    key = repr((copts.key(root), options.window))
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = cache_dir / "words" / f"cooccur-{digest}.npz"
    wc = words.load_corpus(copts)
    z = cache.load_arrays(path, ("row", "col", "value"), functools.partial(_layout, wc.vocab_size))
    if z is not None:
        return z["row"], z["col"], z["value"]
    row, col, value = count(
        wc.ids, wc.sentence, wc.vocab_size, options.window, options.chunk_tokens, options.partitions
    )
    cache.save_arrays(path, {"row": row, "col": col, "value": value})
    return row, col, value


def _layout(vocab_size: int, z: dict[str, np.ndarray]) -> str | None:
    row, col, value = z["row"], z["col"], z["value"]
    if not len(row) == len(col) == len(value):
        return "row, col and value lengths disagree"
    if len(row) and (max(int(row.max()), int(col.max())) >= vocab_size or value.min() <= 0):
        return f"entries outside the {vocab_size}-word vocabulary or counts <= 0"
    return None


def weight(x: np.ndarray, x_max: float, alpha: float) -> np.ndarray:
    """GloVe's f(x) = min(1, (x / x_max)^alpha)."""
    return np.minimum(1.0, (x / x_max) ** alpha).astype(np.float32)


def training_triples(options: GloveOptions) -> dict[str, np.ndarray]:
    """The co-occurrence triples as GloVe trains on them: row, col, log X_ij and f(X_ij)."""
    row, col, value = load_cooccurrences(options)
    return {
        "row": row.astype(np.int32),
        "col": col.astype(np.int32),
        "log_count": np.log(value).astype(np.float32),
        "weight": weight(value, options.x_max, options.alpha),
    }


def epoch_rows(triples: dict, seq_len: int, seed, epoch: int, shuffle: bool) -> dict:
    """One epoch's rows [ceil(N / seq_len), seq_len] of a seeded permutation of the triples;
    the last row padded with zeros (weight 0: no loss)."""
    n = len(triples["row"])
    n_rows = -(-n // seq_len)
    rng = np.random.default_rng([(seed or 0) & 0xFFFFFFFF, _SALT, epoch])
    perm = rng.permutation(n) if shuffle else np.arange(n)
    perm = np.concatenate([perm, np.full(n_rows * seq_len - n, -1)]).reshape(n_rows, seq_len)
    take, real = np.maximum(perm, 0), perm >= 0
    return {k: np.where(real, v[take], 0).astype(v.dtype) for k, v in triples.items()}


def source_dataset(split, shuffle_files, seed=None, shard_info=None, *, options: GloveOptions):
    if split != "train":
        raise ValueError("glove has only a train split (word vectors are scored on word_eval)")
    triples = training_triples(options)
    e = options.seq_len
    epochs = itertools.count()

    def generate():
        rows = epoch_rows(triples, e, seed, next(epochs), shuffle_files)
        for r in sources.shard_order(len(rows["row"]), False, None, shard_info, _SALT):
            yield {k: v[r] for k, v in rows.items()}

    spec = {
        "row": tf.TensorSpec([e], tf.int32),
        "col": tf.TensorSpec([e], tf.int32),
        "log_count": tf.TensorSpec([e], tf.float32),
        "weight": tf.TensorSpec([e], tf.float32),
    }
    return tf.data.Dataset.from_generator(generate, output_signature=spec)


def register(name: str, vocab_spec: str, options: GloveOptions) -> None:
    del vocab_spec  # the vocabulary is the corpus' own min-count word list

    def feature(dtype):
        vocab = seqio.PassThroughVocabulary(1)
        return seqio.Feature(vocab, add_eos=False, dtype=dtype, rank=1)

    seqio.TaskRegistry.add(
        name,
        source=sources.ShardedFunctionSource(
            functools.partial(source_dataset, options=options), splits=("train",)
        ),
        preprocessors=[],
        output_features={
            "row": feature(tf.int32),
            "col": feature(tf.int32),
            "log_count": feature(tf.float32),
            "weight": feature(tf.float32),
        },
        shuffle_buffer_size=16,
    )
