"""Word-level text: one tokenizer, the corpus as word ids, and a word vocabulary for SeqIO tasks.

Word-embedding paradigms (word2vec, GloVe, the embedding-layer transfer models) work on whole
words: lower-cased maximal runs of letters, digits and apostrophes, with leading and trailing
apostrophes stripped ("Don't stop!" -> ["don't", "stop"]). The Python tokenizer (corpus
preparation) and the TF one (SeqIO tasks) implement the same rule, and a test holds them equal.

Vocabulary spec `words:PATH` reads PATH (one word per line, optionally `word<TAB>count`),
`words:glove6b` the 400,000 words of the imported GloVe 6B vectors, `words:corpus` the
pretraining corpus' words seen 5+ times (CorpusOptions()). Ids 0-4 are the special
tokens [PAD] [UNK] [CLS] [SEP] [MASK] (so the downstream framing code works unchanged); word i of
the file gets id i + 5.
"""

import dataclasses
import functools
import hashlib
import pathlib
import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_text as tf_text

from data_pipelines import cache, corpus, datafiles, paths, vector_files

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NUM_SPECIALS = len(SPECIALS)
_DELIM_PY = re.compile(r"(?:[^\w']|_)+")
_DELIM_TF = r"[^\pL\pN']+"
_CACHE_VERSION = 1


def tokenize(text: str) -> list[str]:
    """Lower-cased words of `text` (see the module docstring for the rule)."""
    text = text.replace("\u2019", "'").lower()
    words = (w.strip("'") for w in _DELIM_PY.split(text))
    return [w for w in words if w]


def tokenize_tf(text: tf.Tensor) -> tf.RaggedTensor:
    """`tokenize` in TF: strings [...] -> words [..., (n)]."""
    text = tf.strings.lower(tf.strings.regex_replace(text, "\u2019", "'"), encoding="utf-8")
    words = tf_text.regex_split(text, _DELIM_TF)
    words = tf.strings.regex_replace(words, "^'+|'+$", "")
    return tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)


def read_word_list(path: str | pathlib.Path) -> list[str]:
    """Words of a vocabulary file: one per line, `word` or `word<TAB>count`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"word vocabulary file {path} does not exist")
    words, seen = [], {}
    for line_no, line in datafiles.lines(path):
        word, tab, count = line.rstrip("\n").partition("\t")
        if not word or word != word.strip():
            raise datafiles.bad(path, line_no, f"empty or space-padded word {word!r}")
        if tab and not count.strip().isdigit():
            raise datafiles.bad(path, line_no, f"count {count!r} of {word!r} is not an integer")
        if word in seen:
            raise datafiles.bad(path, line_no, f"word {word!r} already on line {seen[word]}")
        seen[word] = line_no
        words.append(word)
    return words


class WordVocabulary(seqio.Vocabulary):
    """Whole-word ids: [PAD] [UNK] [CLS] [SEP] [MASK], then the words in file order."""

    def __init__(self, words: Callable[[], list[str]], name: str):
        self._words_fn = words
        self._name = name
        super().__init__(extra_ids=0)

    @functools.cached_property
    def tokens(self) -> list[str]:
        words = self._words_fn()
        clash = [w for w in words if w in SPECIALS]
        if clash:
            raise ValueError(f"word vocabulary {self._name} contains special tokens {clash}")
        return [*SPECIALS, *words]

    @functools.cached_property
    def _token_to_id(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @functools.cached_property
    def _table(self) -> tf.lookup.StaticHashTable:
        # First use may happen while tf.data traces a map function; init_scope builds the table
        # eagerly so later datasets (other graphs) can share it.
        with tf.init_scope():
            init = tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.tokens), tf.range(len(self.tokens), dtype=tf.int32)
            )
            return tf.lookup.StaticHashTable(init, default_value=SPECIALS.index("[UNK]"))

    def token_to_id(self, token: str) -> int | None:
        return self._token_to_id.get(token)

    @property
    def eos_id(self) -> int | None:
        return None

    @property
    def unk_id(self) -> int | None:
        return SPECIALS.index("[UNK]")

    @property
    def _base_vocab_size(self) -> int:
        return len(self.tokens)

    def _encode(self, s: str) -> Sequence[int]:
        unk = self.unk_id
        return [self._token_to_id.get(w, unk) for w in tokenize(s)]

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        words = tokenize_tf(s)
        return tf.ragged.map_flat_values(self._table.lookup, words)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(self._encode(t), np.int32) for t in texts]

    def _decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.tokens[i] for i in ids if i > 0)

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        words = tf.gather(tf.constant(self.tokens), tf.where(ids > 0, ids, 0))
        return tf.strings.reduce_join(tf.ragged.boolean_mask(words, ids > 0), -1, separator=" ")

    def __eq__(self, other) -> bool:
        return isinstance(other, WordVocabulary) and self._name == other._name

    def __hash__(self) -> int:
        return hash(self._name)

    def __str__(self) -> str:
        return f"WordVocabulary({self._name})"


def vocabulary(spec: str) -> WordVocabulary:
    """`words:PATH`, `words:glove6b` or `words:corpus` -> WordVocabulary (read on first use)."""
    source = spec.removeprefix("words:")
    if source == "glove6b":
        return WordVocabulary(vector_files.glove6b_words, "glove6b")
    if source == "corpus":  # the pretraining corpus' min-count words (ELMo's softmax)
        return WordVocabulary(lambda: load_corpus().words, "corpus")
    return WordVocabulary(functools.partial(read_word_list, source), source)


# ---------------------------------------------------------------------------- the corpus as ids


@dataclasses.dataclass(frozen=True)
class WordCorpus:
    """The training split as word ids over a min-count vocabulary, OOV words dropped.

    words / counts: the vocabulary, most frequent first (ties alphabetical); ids: [N] int32 over
    it; sentence: [N] int32, the sentence each token belongs to (windows never cross sentences).
    """

    words: list[str]
    counts: np.ndarray
    ids: np.ndarray
    sentence: np.ndarray

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def write_vocab(self, path: str | pathlib.Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(f"{w}\t{c}\n" for w, c in zip(self.words, self.counts))


@dataclasses.dataclass(frozen=True)
class CorpusOptions:
    sources: tuple[str, ...] = corpus.DEFAULT_SOURCES
    min_count: int = 5
    max_vocab: int = 0  # 0: no cap
    eval_fraction: float = 0.05  # the documents held out from pretraining (same as BERT/GPT)

    def key(self, data_dir: pathlib.Path) -> str:
        text = repr((_CACHE_VERSION, str(data_dir.resolve()), dataclasses.astuple(self)))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _build_corpus(opts: CorpusOptions, root: pathlib.Path) -> WordCorpus:
    docs = corpus.split_documents(
        corpus.read_documents(root, opts.sources), "train", opts.eval_fraction
    )
    sentences = [tokenize(s) for d in docs for s in d.sentences]
    counts = Counter(w for s in sentences for w in s)
    vocab = sorted(
        (w for w, c in counts.items() if c >= opts.min_count), key=lambda w: (-counts[w], w)
    )
    if opts.max_vocab:
        vocab = vocab[: opts.max_vocab]
    if not vocab:
        raise ValueError(f"no word occurs {opts.min_count}+ times in corpus sources {opts.sources}")
    index = {w: i for i, w in enumerate(vocab)}
    ids, sent = [], []
    for n, s in enumerate(sentences):
        kept = [index[w] for w in s if w in index]
        ids.extend(kept)
        sent.extend([n] * len(kept))
    return WordCorpus(
        words=vocab,
        counts=np.array([counts[w] for w in vocab], np.int64),
        ids=np.array(ids, np.int32),
        sentence=np.array(sent, np.int32),
    )


_CORPUS_ARRAYS = ("words", "counts", "ids", "sentence")


def _corpus_layout(z: dict[str, np.ndarray]) -> str | None:
    n = len(z["words"])
    if len(z["counts"]) != n or len(z["ids"]) != len(z["sentence"]):
        return "array lengths disagree"
    if len(z["ids"]) and not 0 <= int(z["ids"].min()) <= int(z["ids"].max()) < n:
        return f"word ids outside the {n}-word vocabulary"
    return None


def load_corpus(opts: CorpusOptions = CorpusOptions()) -> WordCorpus:
    """The word-id corpus for `opts`, built once and cached under the cache dir."""
    return _load_corpus(opts, paths.data_dir(), paths.cache_dir())


@functools.cache  # per data root and cache dir, which the environment may change
def _load_corpus(opts: CorpusOptions, root: pathlib.Path, cache_dir: pathlib.Path) -> WordCorpus:
    path = cache_dir / "words" / f"corpus-{opts.key(root)}.npz"
    z = cache.load_arrays(path, _CORPUS_ARRAYS, _corpus_layout)
    if z is not None:
        return WordCorpus(z["words"].tolist(), z["counts"], z["ids"], z["sentence"])
    wc = _build_corpus(opts, root)
    cache.save_arrays(
        path,
        {"words": np.array(wc.words), "counts": wc.counts, "ids": wc.ids, "sentence": wc.sentence},
    )
    return wc
