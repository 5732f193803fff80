"""Multi30k English -> German translation (`multi30k_en_de`), the task CoVe's encoder learns on.

Data: $TLX_DATA_DIR/parallel/multi30k_en_de/{train,val,test_2016_flickr,...}.{en,de}.gz, one
sentence per line, line-aligned. Splits: train (29,000), validation = val (1,014), test =
test_2016_flickr (1,000), and test_2017_flickr / test_2017_mscoco by name.

Source side: the run's word vocabulary (`data.vocab`, `words:glove6b` for CoVe) with tlx's word
tokenizer, the same ids a downstream task over that vocabulary gives, so the encoder reads
SST-2 exactly as it read Multi30k. Target side: German words and punctuation, lower-cased
(`target_tokenize`), over the training split's words seen `target_min_count`+ times; the
vocabulary file is built once into the cache dir. BLEU is computed on these lower-cased,
space-joined tokens against the equally tokenized references (tlx.translate).

Features, each int32 [L]:
  input_ids / input_mask               source words, padding after them
  decoder_input_ids                    [CLS] (used as BOS) y_1 .. y_n
  decoder_target_ids                   y_1 .. y_n [SEP] (EOS)
  decoder_mask                         1 on the n + 1 decoder positions
A sentence longer than L - 1 target tokens keeps its first L - 1 (counted by `truncation`).
"""

import dataclasses
import functools
import hashlib
import pathlib
import re
from collections import Counter

import numpy as np
import seqio
import tensorflow as tf

from data_pipelines import cache, datafiles, paths, sources, vocabularies, words
from data_pipelines.errors import DataError

DIRNAME = "parallel/multi30k_en_de"
SPLITS = {
    "train": "train",
    "validation": "val",
    "test": "test_2016_flickr",
    "test_2016_flickr": "test_2016_flickr",
    "test_2017_flickr": "test_2017_flickr",
    "test_2017_mscoco": "test_2017_mscoco",
}
PAD, UNK, BOS, EOS = 0, 1, 2, 3  # [PAD] [UNK] [CLS] [SEP] of every tlx word vocabulary
FEATURES = ("input_ids", "input_mask", "decoder_input_ids", "decoder_target_ids", "decoder_mask")
_TARGET_TOKEN = re.compile(r"\w+|[^\w\s]")
_SALT = 0x7A3517


@dataclasses.dataclass(frozen=True)
class TranslationOptions:
    target_min_count: int = 2  # rarer German training words are [UNK]

    def __post_init__(self):
        if self.target_min_count < 1:
            raise ValueError(f"target_min_count={self.target_min_count} must be >= 1")


def target_tokenize(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: "Ein Mann, der" -> [ein, mann, ",", der]."""
    return _TARGET_TOKEN.findall(text.lower())


def split_path(split: str, lang: str, data_dir=None) -> pathlib.Path:
    if split not in SPLITS:
        raise ValueError(f"multi30k_en_de has no split {split!r}; expected one of {list(SPLITS)}")
    return paths.data_dir(data_dir) / DIRNAME / f"{SPLITS[split]}.{lang}.gz"


def split_files(split: str, data_dir=None) -> list[pathlib.Path]:
    """The files a split reads: its two sides, and train.de.gz, which the target vocabulary is
    built from (when its cache entry is missing)."""
    return [
        split_path(split, "en", data_dir),
        split_path(split, "de", data_dir),
        *([] if split == "train" else [split_path("train", "de", data_dir)]),
    ]


def read_split(split: str, data_dir=None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(English sentences, German sentences) of a split, checked to be line-aligned."""
    paths_ = [split_path(split, lang, data_dir) for lang in ("en", "de")]
    return _read_sides(*(str(p) for p in paths_))


def _read_side(path: pathlib.Path) -> tuple[str, ...]:
    side = []
    for line_no, line in datafiles.lines(path):
        line = line.rstrip("\n")
        if not line.strip():
            raise datafiles.bad(path, line_no, "empty sentence (every line holds one sentence)")
        side.append(line)
    return tuple(side)


@functools.cache
def _read_sides(en_path: str, de_path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    en, de = (_read_side(pathlib.Path(p)) for p in (en_path, de_path))
    if len(en) != len(de):
        raise DataError(
            f"Multi30k: {en_path} has {len(en)} lines but {de_path} has {len(de)}; the sides "
            "must be line-aligned"
        )
    return en, de


def target_vocab_path(options: TranslationOptions) -> pathlib.Path:
    """The German word list (word<TAB>count, most frequent first), built once per data dir."""
    key = hashlib.sha256(
        repr((str(paths.data_dir().resolve()), options.target_min_count)).encode()
    ).hexdigest()[:12]
    path = paths.cache_dir() / "translation" / f"de-words-{key}.txt"
    if not cache.trusted_file(path):
        counts = Counter(w for s in read_split("train")[1] for w in target_tokenize(s))
        counts.pop("", None)
        kept = sorted(
            (w for w, c in counts.items() if c >= options.target_min_count and w not in
             words.SPECIALS),
            key=lambda w: (-counts[w], w),
        )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.tmp_path(path)
        try:
            tmp.write_text("".join(f"{w}\t{counts[w]}\n" for w in kept), encoding="utf-8")
            cache.commit_file(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


@functools.cache
def target_vocabulary(options: TranslationOptions = TranslationOptions()) -> words.WordVocabulary:
    """The German word vocabulary, read (and built, the first time) on first use."""
    return words.WordVocabulary(
        lambda: words.read_word_list(target_vocab_path(options)),
        f"multi30k_de_min{options.target_min_count}",
    )


def encode_targets(vocab: words.WordVocabulary, texts) -> list[np.ndarray]:
    index = vocab._token_to_id
    return [np.array([index.get(w, UNK) for w in target_tokenize(t)], np.int32) for t in texts]


def pad_rows(rows: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded [N, length] ids and their mask; longer rows keep their first `length`."""
    ids = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        r = r[:length]
        ids[i, : len(r)] = r
    return ids, (ids != PAD).astype(np.int32)


def decoder_rows(targets: list[np.ndarray], length: int) -> dict[str, np.ndarray]:
    """Teacher-forcing rows: BOS y -> y EOS, with at most length - 1 target tokens."""
    kept = [t[: length - 1] for t in targets]
    inputs, _ = pad_rows([np.concatenate([[BOS], t]) for t in kept], length)
    outputs, mask = pad_rows([np.concatenate([t, [EOS]]) for t in kept], length)
    return {"decoder_input_ids": inputs, "decoder_target_ids": outputs, "decoder_mask": mask}


def truncation(split: str, length: int, options=TranslationOptions()) -> float:
    """Fraction of a split's target sentences longer than length - 1 tokens."""
    targets = encode_targets(target_vocabulary(options), read_split(split)[1])
    return float(np.mean([len(t) > length - 1 for t in targets]))


@functools.cache
def _encoded(split: str, vocab_spec: str, options: TranslationOptions):
    en, de = read_split(split)
    src = vocabularies.encode_batch(vocabularies.get_vocabulary(vocab_spec), en)
    return src, encode_targets(target_vocabulary(options), de)


def source_dataset(split, shuffle_files, seed=None, shard_info=None, *, vocab_spec, options):
    src, tgt = _encoded(split, vocab_spec, options)
    order = sources.shard_order(len(src), shuffle_files, seed, shard_info, _SALT)
    ragged = tf.TensorSpec([None], tf.int32)

    def generate():
        for i in order:
            yield {"inputs": src[i], "targets": tgt[i]}

    return tf.data.Dataset.from_generator(
        generate, output_signature={"inputs": ragged, "targets": ragged}
    )


def pad_preprocessor(ds: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
    """Variable-length (inputs, targets) -> the fixed-length features of the module docstring."""
    length = sequence_length["input_ids"]

    def fn(ex):
        def np_rows(inputs, targets):
            src, mask = pad_rows([inputs], length)
            dec = decoder_rows([targets], length)
            return src[0], mask[0], *(dec[k][0] for k in FEATURES[2:])

        out = tf.numpy_function(
            np_rows, [ex["inputs"], ex["targets"]], [tf.int32] * 5, stateful=False
        )
        return {k: tf.ensure_shape(v, [length]) for k, v in zip(FEATURES, out)}

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def register(name: str, vocab_spec: str, options: TranslationOptions) -> None:
    src_vocab = vocabularies.get_vocabulary(vocab_spec)
    tgt_vocab = target_vocabulary(options)

    def feature(v):
        return seqio.Feature(v, add_eos=False, dtype=tf.int32, rank=1)

    flags = seqio.PassThroughVocabulary(2)
    seqio.TaskRegistry.add(
        name,
        source=sources.ShardedFunctionSource(
            functools.partial(source_dataset, vocab_spec=vocab_spec, options=options),
            splits=tuple(SPLITS),
        ),
        preprocessors=[pad_preprocessor],
        output_features={
            "input_ids": feature(src_vocab),
            "input_mask": feature(flags),
            "decoder_input_ids": feature(tgt_vocab),
            "decoder_target_ids": feature(tgt_vocab),
            "decoder_mask": feature(flags),
        },
        shuffle_buffer_size=1024,
    )
