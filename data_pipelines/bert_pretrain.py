"""BERT masked-LM + next-sentence examples, after google-research/bert create_pretraining_data.py.

Two stages, so masks can be re-drawn every epoch while the sentence pairs stay fixed for a seed:
  1. `create_instances`: `[CLS] A [SEP] B [SEP]` pairs from tokenized documents (numpy, per seed).
  2. `mask_batch`: MLM positions/ids/weights of a batch of instances (numpy, vectorised), each
     row's draws a hash of its own key (seed, epoch, instance): any row computable directly.

`next_sentence_labels` follows google-research: 0 = B is the actual continuation of A,
1 = B was drawn from a different document.
"""

import dataclasses
import functools
import hashlib
import logging
import pathlib
import re

import numpy as np
import seqio
import tensorflow as tf

from data_pipelines import cache, corpus, hashrng, paths, sources, vocabularies

FEATURES = (
    "input_ids",
    "input_mask",
    "segment_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)


@dataclasses.dataclass(frozen=True)
class PretrainOptions:
    seq_len: int = 128
    # None: round(seq_len * mask_rate), so raising mask_rate in an ablation is not silently capped.
    max_predictions_per_seq: int | None = None
    mask_rate: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    random_next_prob: float = 0.5
    short_seq_prob: float = 0.1
    # Corpus source names, or "tfds:NAME[:SPLIT]" to read a TFDS text dataset instead.
    sources: tuple[str, ...] = corpus.DEFAULT_SOURCES
    eval_fraction: float = 0.05

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        if self.seq_len < 5:
            raise ValueError(f"seq_len={self.seq_len} leaves no room for [CLS] A [SEP] B [SEP]")
        for name in ("mask_rate", "random_next_prob", "short_seq_prob", "eval_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} is not in [0, 1]")
        if not (0 <= self.mask_token_prob and 0 <= self.random_token_prob) or (
            self.mask_token_prob + self.random_token_prob > 1.0
        ):
            raise ValueError("mask_token_prob + random_token_prob must lie in [0, 1]")

    @property
    def max_predictions(self) -> int:
        if self.max_predictions_per_seq is not None:
            return self.max_predictions_per_seq
        return max(1, round(self.seq_len * self.mask_rate))


# A document is a list of sentences, each an int32 array of token ids.
TokenizedDoc = list[np.ndarray]


def load_tokenized(
    vocab: seqio.Vocabulary,
    split: str,
    sources=corpus.DEFAULT_SOURCES,
    eval_fraction: float = 0.05,
    data_dir=None,
) -> list[TokenizedDoc]:
    """Token ids of the split's documents, cached as .npz under cache_dir()/tokens."""
    root = paths.data_dir(data_dir)
    docs = []
    for source in sources:
        # The key covers everything the ids depend on, including the data files' sizes/mtimes.
        source_dir = root / "pretrain" / source
        files = (
            sorted(p for p in source_dir.glob("*") if p.is_file()) if source_dir.is_dir() else []
        )
        stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        key = repr(
            (vocabularies.fingerprint(vocab), str(root), source, split, eval_fraction, stamp)
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", source)
        cache_file = paths.cache_dir() / "tokens" / f"{stem}_{split}_{digest}.npz"
        docs.extend(_load_or_tokenize(cache_file, vocab, root, source, split, eval_fraction))
    return docs


def _token_cache_layout(z: dict[str, np.ndarray]) -> str | None:
    lengths, doc_sizes = z["sentence_lengths"], z["doc_sizes"]
    if int(lengths.sum()) != len(z["ids"]) or int(doc_sizes.sum()) != len(lengths):
        return "sentence lengths or document sizes do not add up"
    return None


def _load_or_tokenize(cache_file: pathlib.Path, vocab, root, source, split, eval_fraction):
    names = ("ids", "sentence_lengths", "doc_sizes")
    z = cache.load_arrays(cache_file, names, _token_cache_layout)
    if z is None:
        all_docs = corpus.read_source(root, source)
        docs = corpus.split_documents(all_docs, split, eval_fraction)
        sentences = [s for d in docs for s in d.sentences]
        ids = vocabularies.encode_batch(vocab, sentences)
        z = {
            "ids": np.concatenate(ids).astype(np.int32) if ids else np.zeros([0], np.int32),
            "sentence_lengths": np.array([len(x) for x in ids], np.int64),
            "doc_sizes": np.array([len(d.sentences) for d in docs], np.int64),
        }
        cache.save_arrays(cache_file, z)
    flat, lengths, doc_sizes = (z[k] for k in names)
    sentences = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
    bounds = np.concatenate([[0], np.cumsum(doc_sizes)])
    # Sentences that tokenize to nothing (e.g. stray symbols) would make empty segments.
    docs = [[s for s in sentences[a:b] if len(s)] for a, b in zip(bounds[:-1], bounds[1:])]
    return [d for d in docs if d]


@dataclasses.dataclass
class Instances:
    """Unmasked sentence pairs, [N, seq_len] (ids, mask, segments) and [N] labels."""

    input_ids: np.ndarray
    input_mask: np.ndarray
    segment_ids: np.ndarray
    next_sentence_labels: np.ndarray

    def __len__(self) -> int:
        return len(self.next_sentence_labels)


def _truncate_pair(a: np.ndarray, b: np.ndarray, max_tokens: int, rng: np.random.Generator):
    """Drops tokens from a random end of the longer segment until the pair fits."""
    a_lo, a_hi, b_lo, b_hi = 0, len(a), 0, len(b)
    excess = (a_hi + b_hi) - max_tokens
    if excess > 0:
        from_front = rng.random(excess) < 0.5
        for front in from_front:
            if a_hi - a_lo > b_hi - b_lo:
                a_lo, a_hi = (a_lo + 1, a_hi) if front else (a_lo, a_hi - 1)
            else:
                b_lo, b_hi = (b_lo + 1, b_hi) if front else (b_lo, b_hi - 1)
    return a[a_lo:a_hi], b[b_lo:b_hi]


def _draw_target(max_tokens: int, short_seq_prob: float, rng: np.random.Generator) -> int:
    # Sometimes shorter, so the model also sees inputs unlike the full-length pretraining ones.
    if rng.random() < short_seq_prob:
        return int(rng.integers(2, max_tokens + 1))
    return max_tokens


def create_instances(
    docs: list[TokenizedDoc],
    options: PretrainOptions,
    special: vocabularies.SpecialIds,
    rng: np.random.Generator,
) -> Instances:
    """Sentence-pair instances from every document, in document order."""
    seq_len, max_tokens = options.seq_len, options.seq_len - 3
    rows_a, rows_b, labels = [], [], []
    for doc_index, doc in enumerate(docs):
        target = _draw_target(max_tokens, options.short_seq_prob, rng)
        chunk, chunk_len, i = [], 0, 0
        while i < len(doc):
            chunk.append(doc[i])
            chunk_len += len(doc[i])
            if i == len(doc) - 1 or chunk_len >= target:
                a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                tokens_a = np.concatenate(chunk[:a_end])
                is_random = rng.random() < options.random_next_prob
                if not is_random and len(chunk) == 1:
                    # google-research forces a random B for one-sentence chunks, which pushes the
                    # random-next rate above random_next_prob; take B from the sentences that
                    # follow instead, and fall back to random only at the document's end.
                    b_parts, b_len = [], 0
                    while i + 1 < len(doc) and (not b_parts or b_len < target - len(tokens_a)):
                        i += 1
                        b_parts.append(doc[i])
                        b_len += len(doc[i])
                    if b_parts:
                        tokens_b = np.concatenate(b_parts)
                    else:
                        is_random = True
                elif not is_random:
                    tokens_b = np.concatenate(chunk[a_end:])
                if is_random and len(docs) < 2:
                    is_random, tokens_b = False, None
                if is_random:
                    other = int(rng.integers(0, len(docs) - 1))
                    other += other >= doc_index  # any document but this one
                    random_doc = docs[other]
                    b_parts, b_len = [], 0
                    for sentence in random_doc[int(rng.integers(0, len(random_doc))) :]:
                        b_parts.append(sentence)
                        b_len += len(sentence)
                        if b_len >= target - len(tokens_a):
                            break
                    tokens_b = np.concatenate(b_parts)
                    # The unused tail of the chunk is re-read as the start of the next chunk.
                    i -= len(chunk) - a_end
                if tokens_b is not None and len(tokens_b):
                    tokens_a, tokens_b = _truncate_pair(tokens_a, tokens_b, max_tokens, rng)
                    if len(tokens_a) and len(tokens_b):
                        rows_a.append(tokens_a)
                        rows_b.append(tokens_b)
                        labels.append(int(is_random))
                chunk, chunk_len = [], 0
                # Redrawn per instance, not per document as google-research does: a whole book
                # is one document here, so a per-document draw would make 10% of books short.
                target = _draw_target(max_tokens, options.short_seq_prob, rng)
            i += 1

    n = len(labels)
    input_ids = np.full([n, seq_len], special.pad, np.int32)
    segment_ids = np.zeros([n, seq_len], np.int32)
    input_mask = np.zeros([n, seq_len], np.int32)
    for row, (a, b) in enumerate(zip(rows_a, rows_b)):
        la, lb = len(a), len(b)
        input_ids[row, : la + lb + 3] = np.concatenate(
            [[special.cls], a, [special.sep], b, [special.sep]]
        )
        segment_ids[row, la + 2 : la + lb + 3] = 1
        input_mask[row, : la + lb + 3] = 1
    return Instances(input_ids, input_mask, segment_ids, np.array(labels, np.int32))


def random_token_ids(vocab: seqio.Vocabulary) -> np.ndarray:
    """Ids a [MASK]-replacement may draw: all but bracketed specials ([PAD], [unused0], ...)."""
    tokens = vocabularies.id_to_token(vocab)
    special = set(vocabularies.special_ids(vocab).as_array().tolist())
    keep = [
        i
        for i, t in enumerate(tokens)
        if i not in special and not (t.startswith("[") and t.endswith("]"))
    ]
    return np.array(keep, np.int32)


def mask_batch(
    input_ids: np.ndarray,
    input_mask: np.ndarray,
    keys: np.ndarray,
    options: PretrainOptions,
    special: vocabularies.SpecialIds,
    random_ids: np.ndarray,
) -> dict[str, np.ndarray]:
    """MLM masking of [B, seq_len] instances, row b drawn from `keys[b]` alone (hashrng): the
    masked ids and the MLM targets, vectorised over the batch.

    Per row: num = the candidates (real tokens but [CLS], [SEP]) x mask_rate, rounded
    stochastically so short inputs keep the expected rate, at least 1, at most
    max_predictions; the num candidates of smallest random priority are predicted (a uniform
    draw without replacement); each becomes [MASK] with mask_token_prob, a random token of
    `random_ids` with random_token_prob, else stays."""
    b, length = input_ids.shape
    p = options.max_predictions
    u = hashrng.uniform(keys, 1 + length + 2 * p)  # [B, 1 + L + 2P]
    never = (input_ids == special.cls) | (input_ids == special.sep) | (input_ids == special.pad)
    candidate = (input_mask == 1) & ~never  # [B, L]
    count = candidate.sum(1)
    expected = count * options.mask_rate
    num = np.floor(expected).astype(np.int64) + (u[:, 0] < expected - np.floor(expected))
    num = np.minimum(np.minimum(np.maximum(num, 1), p), count)  # [B]

    priority = np.where(candidate, u[:, 1 : 1 + length], 2.0)  # non-candidates last
    k = min(p, length)
    smallest = np.argpartition(priority, k - 1, axis=1)[:, :k] if k < length else None
    if smallest is None:
        smallest = np.broadcast_to(np.arange(length), (b, length))
    ranked = np.take_along_axis(
        smallest, np.argsort(np.take_along_axis(priority, smallest, 1), axis=1), 1
    )  # [B, k] candidate positions, most likely picked first
    valid = np.arange(k)[None] < num[:, None]  # [B, k]
    positions = np.sort(np.where(valid, ranked, length), axis=1)  # chosen ones first, sorted
    positions = np.where(valid, positions, 0)
    rows = np.broadcast_to(np.arange(b)[:, None], (b, k))
    original = np.where(valid, input_ids[rows, positions], 0)

    action = u[:, 1 + length : 1 + length + k]  # [B, k]
    to_mask = valid & (action < options.mask_token_prob)
    to_random = valid & ~to_mask & (action < options.mask_token_prob + options.random_token_prob)
    pick = u[:, 1 + length + p : 1 + length + p + k]
    replacement = random_ids[
        np.minimum((pick * len(random_ids)).astype(np.int64), len(random_ids) - 1)
    ]
    masked = input_ids.copy()
    masked[rows[to_mask], positions[to_mask]] = special.mask
    masked[rows[to_random], positions[to_random]] = replacement[to_random]

    pad = p - k
    return {
        "input_ids": masked,
        "masked_lm_positions": np.pad(positions, ((0, 0), (0, pad))).astype(np.int32),
        "masked_lm_ids": np.pad(original, ((0, 0), (0, pad))).astype(np.int32),
        "masked_lm_weights": np.pad(valid.astype(np.float32), ((0, 0), (0, pad))),
    }


def build_instances(
    vocab: seqio.Vocabulary, split: str, options: PretrainOptions, seed: int, data_dir=None
) -> Instances:
    """Tokenized split -> instances; identical on every host for the same seed."""
    docs = load_tokenized(vocab, split, options.sources, options.eval_fraction, data_dir)
    if not docs:
        raise ValueError(
            f"split {split!r} of sources {options.sources} has no documents "
            f"(eval_fraction={options.eval_fraction})"
        )
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x5EED])
    instances = create_instances(docs, options, vocabularies.special_ids(vocab), rng)
    logging.info("bert_pretrain %s: %d documents -> %d instances", split, len(docs), len(instances))
    return instances


# Sources already permute instances by seed; this buffer only mixes across epoch boundaries.
SHUFFLE_BUFFER = 1024


# ---------------------------------------------------------------------------- the seqio task


def _bert_source(split, shuffle_files, seed=None, shard_info=None, *, vocab_spec, options):
    vocab = vocabularies.get_vocabulary(vocab_spec)
    seed = 0 if seed is None else int(seed)
    inst = build_instances(vocab, split, options, seed)
    order = np.arange(len(inst))
    if shuffle_files:
        order = np.random.default_rng([seed & 0xFFFFFFFF, 0x0D0E]).permutation(order)
    if shard_info is not None:
        order = order[shard_info.index :: shard_info.num_shards]

    def generate():
        for i in order:
            yield {
                "input_ids": inst.input_ids[i],
                "input_mask": inst.input_mask[i],
                "segment_ids": inst.segment_ids[i],
                "next_sentence_labels": inst.next_sentence_labels[i],
                "instance_id": np.int64(i),
            }

    row = tf.TensorSpec([options.seq_len], tf.int32)
    signature = {
        "input_ids": row,
        "input_mask": row,
        "segment_ids": row,
        "next_sentence_labels": tf.TensorSpec([], tf.int32),
        "instance_id": tf.TensorSpec([], tf.int64),
    }
    return tf.data.Dataset.from_generator(generate, output_signature=signature)


@functools.cache
@tf.autograph.experimental.do_not_convert
def masking_ids(vocab_spec: str):
    """(special ids, [MASK]-replacement ids), computed once in plain Python: inside the traced
    map function autograph would convert the vocabulary scan into graph ops (5 s per dataset)."""
    vocab = vocabularies.get_vocabulary(vocab_spec)
    return vocabularies.special_ids(vocab), random_token_ids(vocab)


MASK_SALT = 0x3A5C  # the masks' hashrng stream, distinct from every other draw's
_MASK_BLOCK = 256  # examples masked per vectorised call


def make_masking_preprocessor(vocab_spec: str, options: PretrainOptions):
    """Dynamic MLM masking (mask_batch): each example's masks are drawn from a
    key of its seqio seed (new each epoch) and its instance id, in blocks of _MASK_BLOCK."""

    @seqio.map_over_dataset(num_seeds=1)
    def add_key(ex, seed):
        return {**ex, "mask_seed": tf.cast(seed, tf.int64)}

    def np_mask(input_ids, input_mask, mask_seed, instance_id):
        special, random_ids = masking_ids(vocab_spec)
        seeds = mask_seed.astype(np.uint64)
        keys = hashrng.keys(0, MASK_SALT, seeds[:, 0], seeds[:, 1], instance_id)
        out = mask_batch(input_ids, input_mask, keys, options, special, random_ids)
        return tuple(out[k] for k in _MASKED)

    def block(ex):
        ids, positions, lm_ids, weights = tf.numpy_function(
            np_mask,
            [ex["input_ids"], ex["input_mask"], ex["mask_seed"], ex["instance_id"]],
            [tf.int32, tf.int32, tf.int32, tf.float32],
            stateful=False,
        )
        n, length = options.max_predictions, options.seq_len
        return {
            "input_ids": tf.ensure_shape(ids, [None, length]),
            "input_mask": ex["input_mask"],
            "segment_ids": ex["segment_ids"],
            "masked_lm_positions": tf.ensure_shape(positions, [None, n]),
            "masked_lm_ids": tf.ensure_shape(lm_ids, [None, n]),
            "masked_lm_weights": tf.ensure_shape(weights, [None, n]),
            "next_sentence_labels": ex["next_sentence_labels"],
        }

    def mask(ds: tf.data.Dataset) -> tf.data.Dataset:
        ds = add_key(ds).batch(_MASK_BLOCK)
        return ds.map(block, num_parallel_calls=tf.data.AUTOTUNE).unbatch()

    return mask


_MASKED = ("input_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights")


def _bert_features(vocab: seqio.Vocabulary, options: PretrainOptions) -> dict[str, seqio.Feature]:
    def feature(v, dtype=tf.int32, rank=1):
        return seqio.Feature(v, add_eos=False, dtype=dtype, rank=rank)

    flags = seqio.PassThroughVocabulary(2)
    return {
        "input_ids": feature(vocab),
        "input_mask": feature(flags),
        "segment_ids": feature(flags),
        "masked_lm_positions": feature(seqio.PassThroughVocabulary(options.seq_len)),
        "masked_lm_ids": feature(vocab),
        "masked_lm_weights": feature(seqio.PassThroughVocabulary(1), dtype=tf.float32),
        "next_sentence_labels": feature(flags, rank=0),
    }


def register(name: str, vocab_spec: str, options: PretrainOptions) -> None:
    seqio.TaskRegistry.add(
        name,
        source=sources.ShardedFunctionSource(
            functools.partial(_bert_source, vocab_spec=vocab_spec, options=options),
            splits=("train", "validation"),
        ),
        preprocessors=[make_masking_preprocessor(vocab_spec, options)],
        output_features=_bert_features(vocabularies.get_vocabulary(vocab_spec), options),
        shuffle_buffer_size=SHUFFLE_BUFFER,
    )
