"""BERT masked-LM + next-sentence examples, after google-research/bert create_pretraining_data.py.

Two stages, so masks can be re-drawn every epoch while the sentence pairs stay fixed for a seed:
  1. `create_instances`: `[CLS] A [SEP] B [SEP]` pairs from tokenized documents (numpy, per seed).
  2. `mask_instance`: MLM positions/ids/weights for one instance (numpy, per example seed).

`next_sentence_labels` follows google-research: 0 = B is the actual continuation of A,
1 = B was drawn from a different document.
"""

import dataclasses
import hashlib
import logging
import pathlib
import re

import numpy as np
import seqio

from data_pipelines import cache, corpus, paths, vocabularies

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


def mask_instance(
    input_ids: np.ndarray,
    input_mask: np.ndarray,
    options: PretrainOptions,
    special: vocabularies.SpecialIds,
    random_ids: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """MLM masking of one [seq_len] instance; returns the masked ids and the MLM targets."""
    never = np.isin(input_ids, [special.cls, special.sep, special.pad])
    candidates = np.flatnonzero((input_mask == 1) & ~never)
    # Stochastic rounding keeps the expected selection rate at mask_rate even for short inputs.
    expected = len(candidates) * options.mask_rate
    num = int(expected) + int(rng.random() < expected - int(expected))
    num = min(options.max_predictions, max(1, num), len(candidates))
    positions = np.sort(rng.choice(candidates, size=num, replace=False))
    original = input_ids[positions]

    masked = input_ids.copy()
    u = rng.random(num)
    to_mask = u < options.mask_token_prob
    to_random = ~to_mask & (u < options.mask_token_prob + options.random_token_prob)
    masked[positions[to_mask]] = special.mask
    masked[positions[to_random]] = rng.choice(random_ids, size=int(to_random.sum()))

    pad = options.max_predictions - num
    return {
        "input_ids": masked,
        "masked_lm_positions": np.pad(positions, (0, pad)).astype(np.int32),
        "masked_lm_ids": np.pad(original, (0, pad)).astype(np.int32),
        "masked_lm_weights": np.pad(np.ones(num, np.float32), (0, pad)),
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
