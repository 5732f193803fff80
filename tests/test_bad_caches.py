"""Bad cache entries under TLX_CACHE_DIR are caught and rebuilt: every kind of entry (tokenized
corpora, word corpora, co-occurrences, SentencePiece models, target word lists) garbled,
truncated, emptied, tampered with or stripped of its digest is reported once and rebuilt equal
to a clean build, without touching the data; an interrupted write leaves no trusted entry.
"""

import pathlib
import sys

import numpy as np
import pytest
import seqio

from data_pipelines import bert_pretrain, cache, cooccur, paths, translation, vocabularies, words

_damaged = sys.modules["tlx_tests_conftest"]._load_module(
    "tlx_tests_damaged_data", "damaged_data.py"
)  # tests/damaged_data.py
VOCAB_TXT = _damaged.VOCAB_TXT
write, copy, snapshot = _damaged.write, _damaged.copy, _damaged.snapshot
cache_dir = _damaged.cache_dir  # a fixture


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory) -> pathlib.Path:
    """A data root holding one small corpus source, the vocabulary and Multi30k's train split."""
    root = tmp_path_factory.mktemp("corpus_root")
    copy(
        root,
        "pretrain/inaugural/inaugural.jsonl",
        VOCAB_TXT,
        "parallel/multi30k_en_de/train.en.gz",
        "parallel/multi30k_en_de/train.de.gz",
    )
    return root


def _tokens(root):
    vocab = vocabularies.get_vocabulary("bert_uncased")
    docs = bert_pretrain.load_tokenized(vocab, "validation", ("inaugural",), data_dir=root)
    return [np.concatenate(d).tolist() for d in docs]


def _word_corpus(root):
    # __wrapped__: past the in-process memo, to the cache entry on disk
    opts = words.CorpusOptions(sources=("inaugural",))
    wc = words._load_corpus.__wrapped__(opts, paths.data_dir(), paths.cache_dir())
    return wc.words, wc.counts.tolist(), wc.ids.tolist(), wc.sentence.tolist()


def _cooccurrences(root):
    options = cooccur.GloveOptions(sources=("inaugural",), window=2)
    loaded = cooccur._load_cooccurrences.__wrapped__(options, paths.data_dir(), paths.cache_dir())
    return [a.tolist() for a in loaded]


def _sentencepiece(root):
    model = vocabularies.train_sentencepiece(
        120, data_dir=root, sources=("inaugural",), max_sentences=400
    )
    return vocabularies.id_to_token(seqio.SentencePieceVocabulary(str(model)))


def _target_words(root):
    return pathlib.Path(translation.target_vocab_path(translation.TranslationOptions())).read_text()


# kind -> (build-or-load, glob of its entry under the cache dir, is an arrays entry)
CACHES = {
    "tokens": (_tokens, "tokens/inaugural_validation_*.npz", True),
    "word_corpus": (_word_corpus, "words/corpus-*.npz", True),
    "cooccurrences": (_cooccurrences, "words/cooccur-*.npz", True),
    "sentencepiece": (_sentencepiece, "vocab/sp120_*.model", False),
    "multi30k_target_words": (_target_words, "translation/de-words-*.txt", False),
}


def _tamper_arrays(path: pathlib.Path) -> None:
    """A well-formed .npz whose arrays are not the ones its digest was computed over."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    name = next(k for k in arrays if k != cache.DIGEST_KEY and arrays[k].dtype.kind in "iuf")
    arrays[name] = arrays[name].copy()
    arrays[name][0] += 1
    with open(path, "wb") as f:
        np.savez(f, **arrays)


DAMAGE = {
    "garbage": lambda p: p.write_bytes(b"not a cache entry \x00\xff" * 50),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "tampered": lambda p: (
        _tamper_arrays(p) if p.suffix == ".npz" else p.write_bytes(p.read_bytes()[:-3] + b"zz\n")
    ),
    "no_digest": lambda p: (
        _drop_digest(p) if p.suffix == ".npz" else p.with_name(p.name + ".sha256").unlink()
    ),
}


def _drop_digest(path: pathlib.Path) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != cache.DIGEST_KEY}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.fixture(scope="module")
def clean_builds(corpus_root, tmp_path_factory):
    """Each cache kind built once from nothing, in a cache dir of its own."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLX_DATA_DIR", str(corpus_root))
        mp.setenv("TLX_CACHE_DIR", str(tmp_path_factory.mktemp("clean_cache")))
        for kind, (build, _, _) in CACHES.items():
            out[kind] = build(corpus_root)
    return out


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("kind", CACHES)
def test_corrupt_cache_entry_is_rebuilt(
    kind, damage, corpus_root, clean_builds, cache_dir, monkeypatch, capsys
):
    build, pattern, _ = CACHES[kind]
    monkeypatch.setenv("TLX_DATA_DIR", str(corpus_root))
    assert build(corpus_root) == clean_builds[kind]
    (entry,) = cache_dir.glob(pattern)
    DAMAGE[damage](entry)
    capsys.readouterr()
    before = snapshot(corpus_root)
    assert build(corpus_root) == clean_builds[kind]  # rebuilt, equal to a clean build
    err = capsys.readouterr().err
    with capsys.disabled():
        print(f"\n  {err.strip()}")
    assert err.startswith(f"cache entry {entry} is corrupt (") and err.endswith("); rebuilding\n")
    assert err.count("\n") == 1
    assert snapshot(corpus_root) == before
    build(corpus_root)  # the rebuilt entry is trusted again
    assert capsys.readouterr().err == ""
    assert not [p for p in entry.parent.iterdir() if ".tmp-" in p.name]


def test_interrupted_cache_write_leaves_no_trusted_entry(tmp_path, monkeypatch):
    path = tmp_path / "entry.npz"
    arrays = {"ids": np.arange(10, dtype=np.int32)}

    def savez_then_die(f, **_):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # as a Ctrl-C mid-write

    with monkeypatch.context() as m:
        m.setattr(cache.np, "savez", savez_then_die)
        with pytest.raises(KeyboardInterrupt):
            cache.save_arrays(path, arrays)
    assert list(tmp_path.iterdir()) == []  # no entry, no temporary
    # A killed process leaves its temporary behind: it is never read as the entry.
    write(cache.tmp_path(path), b"PK\x03\x04 half a zip")
    assert cache.load_arrays(path, ["ids"]) is None
    cache.save_arrays(path, arrays)
    np.testing.assert_array_equal(cache.load_arrays(path, ["ids"])["ids"], arrays["ids"])
    # A file entry moved into place whose digest was never written is not trusted.
    model = write(tmp_path / "m.model", b"model bytes")
    assert not cache.trusted_file(model)
    tmp = write(tmp_path / ".m.model.tmp-1", b"model bytes")
    cache.commit_file(tmp, model)
    assert cache.trusted_file(model)
