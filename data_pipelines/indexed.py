"""Random-access example streams: the training batch at step s is computed from (task, seed,
step, global batch size), never by replaying the stream, so a resume at step 100,000 costs what
one at step 10 does, and any number of processes read the same global batches.

A split is held as fixed-shape arrays (`Examples`), built once per process from the registered
task (data_pipelines.tasks): the downstream, translation and packed causal-LM rows as the seqio
task makes them unshuffled; BERT's sentence pairs as arrays with their masks drawn per read.

The stream: global example position g (counted over all processes and steps) is example
`order_e[i]` of epoch e, (e, i) = divmod(g, N), order_e a permutation seeded by (seed, e). The
training batch at step s is positions [s B, (s + 1) B); process p of P reads its contiguous
slice of B / P rows. Whatever an epoch redraws is drawn per (seed, epoch, example) with
counter-based hashes (hashrng): BERT's masks; word2vec's subsampling, windows and noise and
GloVe's order are whole-epoch draws (their rows are rebuilt per epoch, in a fraction of a
second). Mixtures sample each position's member by rate and its example uniformly, both hashed
from (seed, g), i.e. with replacement.

`fingerprint()` digests the arrays (and the draws' options): a resumed run whose data changed
is told so instead of drifting.
"""

import bisect
import functools
import hashlib
from collections.abc import Callable

import numpy as np
import seqio

from data_pipelines import bert_pretrain, chars, cooccur, hashrng, skipgram, tasks, vocabularies

_ORDER_SALT = 0x0D0E
_MIX_SALT = 0x313C
_BLOCK = 4096  # rows read from tf.data per batch when a split is materialised


def _digest(arrays: dict[str, np.ndarray], *extra) -> str:
    h = hashlib.blake2b(repr(extra).encode(), digest_size=16)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype}:{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


class Examples:
    """A split as a function of stream position: `take(positions)` -> rows, fixed shapes."""

    spec: dict[str, tuple[tuple[int, ...], np.dtype]]

    def take(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def __len__(self) -> int:  # examples per (first) epoch
        raise NotImplementedError


class Epochs(Examples):
    """N examples per epoch, visited in a seeded permutation per epoch (or in order)."""

    def __init__(self, n: int, seed: int, shuffle: bool):
        if n <= 0:
            raise ValueError("the split has no examples")
        self.n, self.seed, self.shuffle = n, int(seed), shuffle

    def __len__(self) -> int:
        return self.n

    @functools.lru_cache(maxsize=4)  # noqa: B019 -- the streams live as long as the process
    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, _ORDER_SALT, epoch])
        return rng.permutation(self.n)

    def take(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        epoch, i = np.divmod(np.asarray(positions, np.int64), self.n)
        index = np.empty_like(i)
        for e in np.unique(epoch):  # several when the batch is larger than the split
            at = epoch == e
            index[at] = self.order(int(e))[i[at]]
        return self.rows(index, epoch)

    def rows(self, index: np.ndarray, epoch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError


class Arrays(Epochs):
    """Fixed rows [N, ...]."""

    def __init__(self, arrays: dict[str, np.ndarray], seed: int, shuffle: bool):
        self.arrays = arrays
        super().__init__(len(next(iter(arrays.values()))), seed, shuffle)
        self.spec = {k: (a.shape[1:], a.dtype) for k, a in arrays.items()}

    def rows(self, index, epoch):
        return {k: a[index] for k, a in self.arrays.items()}

    def fingerprint(self) -> str:  # the arrays and the order they are read in
        return _digest({**self.arrays, "order": self.order(0)[:4096]})


class MaskedPairs(Arrays):
    """BERT's sentence pairs; each read draws the MLM masks of (seed, epoch, instance)."""

    def __init__(self, arrays, seed, shuffle, options, vocab_spec):
        self.options, self.vocab_spec = options, vocab_spec
        super().__init__(arrays, seed, shuffle)
        n = options.max_predictions
        for k in ("masked_lm_positions", "masked_lm_ids"):
            self.spec[k] = ((n,), np.int32)
        self.spec["masked_lm_weights"] = ((n,), np.float32)

    def rows(self, index, epoch):
        special, random_ids = bert_pretrain.masking_ids(self.vocab_spec)
        keys = hashrng.keys(self.seed, bert_pretrain.MASK_SALT, epoch, index)
        ids, mask = self.arrays["input_ids"][index], self.arrays["input_mask"][index]
        out = bert_pretrain.mask_batch(ids, mask, keys, self.options, special, random_ids)
        out["input_mask"] = mask
        out["segment_ids"] = self.arrays["segment_ids"][index]
        out["next_sentence_labels"] = self.arrays["next_sentence_labels"][index]
        return out

    def fingerprint(self) -> str:
        order = {"order": self.order(0)[:4096]}
        return _digest({**self.arrays, **order}, repr(self.options), self.vocab_spec)


class WithChars(Examples):
    """ELMo's `char_ids` [L, 50] added to another Examples' rows: table[input_ids]
    (data_pipelines.chars), the characters of the ids the model reads (after masking)."""

    def __init__(self, inner: Examples, table: np.ndarray):
        self.inner, self.table = inner, table
        length = inner.spec["input_ids"][0]
        self.spec = {**inner.spec, "char_ids": ((*length, chars.MAX_CHARS), np.int32)}

    def __len__(self) -> int:
        return len(self.inner)

    def _add(self, out):
        return {**out, "char_ids": self.table[out["input_ids"]]}

    def take(self, positions):
        return self._add(self.inner.take(positions))

    def rows(self, index, epoch):
        return self._add(self.inner.rows(index, epoch))

    def fingerprint(self) -> str:
        return _digest({"table": self.table}, self.inner.fingerprint())


class EpochRows(Examples):
    """Rows rebuilt per epoch by `build(epoch) -> arrays` (word2vec, GloVe); an epoch's row
    count `size(epoch)` may vary (subsampling), so positions map to epochs by the running sum,
    computed once per epoch passed (`size` is a fraction of `build`'s cost)."""

    def __init__(self, build: Callable, size: Callable, digest: str):
        self._build, self._size, self._digest = build, size, digest
        self._ends = [size(0)]  # cumulative rows at the end of each epoch so far
        first = self.epoch(0)
        self.spec = {k: (a.shape[1:], a.dtype) for k, a in first.items()}

    def __len__(self) -> int:
        return self._ends[0]

    @functools.lru_cache(maxsize=2)  # noqa: B019
    def epoch(self, e: int) -> dict[str, np.ndarray]:
        return self._build(e)

    def _epoch_of(self, g: int) -> int:
        while self._ends[-1] <= g:
            self._ends.append(self._ends[-1] + self._size(len(self._ends)))
        return bisect.bisect_right(self._ends, g)

    def take(self, positions):
        positions = np.asarray(positions, np.int64)
        epochs = np.array([self._epoch_of(int(g)) for g in (positions.min(), positions.max())])
        out = None
        for e in range(epochs[0], epochs[1] + 1):
            start = self._ends[e - 1] if e else 0
            at = (positions >= start) & (positions < self._ends[e])
            rows = {k: a[positions[at] - start] for k, a in self.epoch(e).items()}
            if out is None:
                out = {
                    k: np.empty((len(positions), *a.shape[1:]), a.dtype) for k, a in rows.items()
                }
            for k in out:
                out[k][at] = rows[k]
        return out

    def fingerprint(self) -> str:
        return self._digest


class Mixture(Examples):
    """Members sampled per position by rate, each member's example uniformly (with replacement)."""

    def __init__(self, members: list[Examples], rates: list[float], seed: int):
        self.members, self.seed = members, int(seed)
        self.cumulative = np.cumsum(rates) / np.sum(rates)
        self.spec = members[0].spec

    def __len__(self) -> int:
        return sum(len(m) for m in self.members)

    def take(self, positions):
        positions = np.asarray(positions, np.int64)
        u = hashrng.uniform(hashrng.keys(self.seed, _MIX_SALT, positions), 2)
        member = np.minimum(
            np.searchsorted(self.cumulative, u[:, 0], side="right"), len(self.members) - 1
        )
        out = {k: np.empty((len(positions), *s), d) for k, (s, d) in self.spec.items()}
        for m in np.unique(member):
            at = member == m
            sizes = len(self.members[m])
            index = np.minimum((u[at, 1] * sizes).astype(np.int64), sizes - 1)
            rows = self.members[m].rows(index, np.zeros_like(index))
            for k in out:
                out[k][at] = rows[k]
        return out

    def fingerprint(self) -> str:
        return _digest({}, [m.fingerprint() for m in self.members], self.cumulative.tolist())


# ---------------------------------------------------------------------------- from tasks


@functools.lru_cache(maxsize=8)  # shared by a split's shuffled and in-order Examples
def materialize(task_name: str, split: str, seq_len: int) -> dict[str, np.ndarray]:
    """Every example of a split of a deterministic task, unshuffled, as arrays [N, ...]."""
    ds = tasks.get_dataset(
        task_name, split=split, seq_len=seq_len, seed=0, shuffle=False, num_epochs=1
    )
    parts = list(ds.batch(_BLOCK).as_numpy_iterator())
    if not parts:
        raise ValueError(f"split {split!r} of task {task_name!r} has no examples")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@functools.lru_cache(maxsize=16)
def examples(task_name: str, split: str, seq_len: int, seed: int, shuffle: bool) -> Examples:
    """The split of a registered task or mixture as random-access Examples (built once per
    process and arguments)."""
    if task_name in tasks._CHAR_IDS:
        plain = tasks._CHAR_IDS[task_name]
        vocab_spec = (
            tasks.classification._MIXTURE_VOCABS.get(task_name) or tasks._VARIANTS[task_name][1]
        )
        inner = examples(plain, split, seq_len, seed, shuffle)
        return WithChars(inner, chars.vocab_char_table(vocab_spec))
    members = tasks.mixture_members(task_name)
    if members is not None:
        rates = seqio.MixtureRegistry.get(task_name).rate_per_task_name
        parts = [examples(m, split, seq_len, seed, shuffle) for m, _ in members]
        if not shuffle:  # evaluation: every member's examples once, in task_id order
            arrays = [p.rows(np.arange(len(p)), np.zeros(len(p), np.int64)) for p in parts]
            cat = {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}
            return Arrays(cat, seed, False)
        return Mixture(parts, [rates[m] for m, _ in members], seed)
    base, vocab_spec, options = tasks._VARIANTS.get(
        task_name, (task_name, vocabularies.DEFAULT_VOCAB, {})
    )
    if base in tasks._PRETRAIN and options.get("seq_len", seq_len) != seq_len:
        task_name = tasks.get_task_name(base, vocab_spec, **{**options, "seq_len": seq_len})
        options = tasks._VARIANTS[task_name][2]
    if base == "bert_pretrain":
        opts = tasks.PretrainOptions(**options)
        arrays = _instances(vocab_spec, split, opts, seed)
        return MaskedPairs(arrays, seed, shuffle, opts, vocab_spec)
    if base == "skipgram":
        return _skipgram(tasks.SkipGramOptions(**options), split, seed, shuffle)
    if base == "glove":
        return _glove(tasks.GloveOptions(**options), split, seed, shuffle)
    return Arrays(materialize(task_name, split, seq_len), seed, shuffle)


@functools.lru_cache(maxsize=8)
def _instances(vocab_spec: str, split: str, opts, seed: int) -> dict[str, np.ndarray]:
    inst = bert_pretrain.build_instances(vocabularies.get_vocabulary(vocab_spec), split, opts, seed)
    return {
        "input_ids": inst.input_ids,
        "input_mask": inst.input_mask,
        "segment_ids": inst.segment_ids,
        "next_sentence_labels": inst.next_sentence_labels,
    }


def _skipgram(opts, split: str, seed: int, shuffle: bool) -> EpochRows:
    if split != "train":
        raise ValueError("skipgram has only a train split (word vectors are scored on word_eval)")
    wc = tasks.words.load_corpus(opts.corpus_options)
    keep_p = skipgram.keep_probability(wc.counts, opts.sample)[wc.ids]

    def size(e):  # the epoch's first draw is its subsampling: the row count without the rest
        return -(
            -int((skipgram.epoch_rng(seed, e).random(len(wc.ids)) < keep_p).sum()) // opts.seq_len
        )

    def build(e):
        arrays = skipgram.epoch_rows(wc, opts, skipgram.epoch_rng(seed, e))
        order = np.arange(len(arrays[0]))
        if shuffle:
            order = np.random.default_rng([seed & 0xFFFFFFFF, _ORDER_SALT, e]).permutation(order)
        return {name: a[order] for name, a in zip(opts.features, arrays)}

    digest = _digest({"ids": wc.ids, "counts": wc.counts}, repr(opts), seed)
    return EpochRows(build, size, digest)


def _glove(opts, split: str, seed: int, shuffle: bool) -> EpochRows:
    if split != "train":
        raise ValueError("glove has only a train split (word vectors are scored on word_eval)")
    triples = cooccur.training_triples(opts)
    n_rows = -(-len(triples["row"]) // opts.seq_len)

    def build(e):
        return cooccur.epoch_rows(triples, opts.seq_len, seed, e, shuffle)

    return EpochRows(build, lambda e: n_rows, _digest(triples, repr(opts), seed))


def global_rows(ex: Examples, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows of stream positions [start, stop)."""
    return ex.take(np.arange(start, stop, dtype=np.int64))
