"""Bad data is caught before training and named: readers, the manifest check, the pre-flight,
and the caches under TLX_CACHE_DIR.

Every case builds its input in a temporary data root from a small piece of the real layout
($TLX_DATA_DIR, never written), damages it, and checks the error's type, that its message names
the file (and line), that the CLIs would exit with status 2, and that no input file changed.
"""

import gzip
import os
import pathlib
import shutil
from typing import NamedTuple

import numpy as np
import pytest
import seqio
import tensorflow as tf

import data_pipelines
from configs.bert import finetune as bert_finetune
from configs.bert import pretrain as bert_pretrain_config
from data_pipelines import (
    bert_pretrain,
    cache,
    classification,
    cooccur,
    corpus,
    paths,
    tagging,
    tasks,
    translation,
    vocabularies,
    words,
)
from data_pipelines.errors import DataError
from tlx import errors, word_benchmarks, wordvec
from tlx.data import fetch, verify

SOURCE = pathlib.Path(os.environ["TLX_DATA_DIR"])
VOCAB_TXT = "models/minilm_l6_bert_uncased/vocab.txt"


def head(rel: str, n: int) -> list[bytes]:
    """The first n lines (with their endings) of a real layout file, gunzipped if .gz."""
    path = SOURCE / rel
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        return [f.readline() for _ in range(n)]


def write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def copy(root: pathlib.Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SOURCE / rel, root / rel)


def snapshot(*roots: pathlib.Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p): (p.read_bytes(), p.stat().st_mtime_ns)
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def expect(error_type, call, inputs, path, line: int | None = None, *fragments) -> str:
    """Runs `call`, which must raise `error_type` naming `path` (and `line`, and `fragments`)
    with exit status 2, and leave every file under `inputs` (a folder or a tuple of folders)
    as it was; returns the message."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    before = snapshot(*inputs)
    with pytest.raises(error_type) as info:
        call()
    message = str(info.value)
    print(f"\n  [{error_type.__name__}] {message}")
    assert (f"{path}:{line}:" if line is not None else str(path)) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert errors.exit_status(info.value) == errors.EXIT_BAD_INPUT
    assert snapshot(*inputs) == before, "an input file was changed"
    return message


# ---------------------------------------------------------------------------- readers


class Reader(NamedTuple):
    lines: list[bytes]  # a good file (a real file's head, or built)
    name: str  # layout path under the data root
    bad_at: int | None  # 1-based line the malformed line goes to (None: no line format)
    bad: bytes  # the malformed line (or, with bad_at None, the whole malformed file)
    read: object  # (path, root) -> the reader's result
    fragment: str  # what the malformed-line message must say


def _word2vec_lines() -> list[bytes]:
    return [b"3 2\n", b"the 0.1 0.2\n", b"of -1.5 2\n", b"and 3 4\n"]


READERS = {
    "sst2": Reader(
        head("classification/sst2/stsa.binary.dev", 5),
        "classification/sst2/stsa.binary.dev",
        3,
        b"2 a label that is neither 0 nor 1\n",
        lambda p, root: classification.split_rows("sst2", "validation", root),
        "expected '<0|1> <sentence>'",
    ),
    "trec": Reader(
        head("classification/trec/TREC.test.label.txt", 5),
        "classification/trec/TREC.test.label.txt",
        4,
        b"XYZ:abc What is this ?\n",
        lambda p, root: classification.split_rows("trec", "test", root),
        "XYZ:abc",
    ),
    "ag_news": Reader(
        head("classification/ag_news/test.csv", 5),
        "classification/ag_news/test.csv",
        3,
        b'"5","a class","that is not 1..4"\n',
        lambda p, root: classification.DATASETS["ag_news"].read(p),
        'expected \'"<1|2|3|4>","<title>","<text>"\', got \'5,a class',
    ),
    "mrpc": Reader(
        head("pair_classification/mrpc/msr_paraphrase_test.txt", 5),
        "pair_classification/mrpc/msr_paraphrase_test.txt",
        3,
        b"1\t1\t2\tonly four columns\r\n",
        lambda p, root: classification.split_rows("mrpc", "test", root),
        "only four columns",
    ),
    "rte": Reader(
        head("pair_classification/rte/validation.jsonl", 3),
        "pair_classification/rte/validation.jsonl",
        2,
        b'{"sentence1": "a", "sentence2": \n',
        lambda p, root: classification.split_rows("rte", "validation", root),
        "bad JSON",
    ),
    "conll2003": Reader(
        head("tagging/conll2003/valid.txt", 12),
        "tagging/conll2003/valid.txt",
        5,
        b"EU\n",  # a token line without its tag
        lambda p, root: tagging.read_split("conll2003_ner", "validation", root),
        "expected 'token TAG', got 1 column(s)",
    ),
    "wnut17": Reader(
        head("tagging/wnut17/dev.conll", 8),
        "tagging/wnut17/dev.conll",
        3,
        b"word\n",  # no tab, no tag
        lambda p, root: tagging.read_split("wnut17_ner", "validation", root),
        "expected 'token<TAB>TAG'",
    ),
    "conllu": Reader(
        head("tagging/ud_ewt/en_ewt-ud-dev.conllu", 12),
        "tagging/ud_ewt/en_ewt-ud-dev.conllu",
        6,
        b"2\tthe\tthe\tDET\n",
        lambda p, root: tagging.read_split("ud_ewt_upos", "validation", root),
        "expected 10 tab-separated CoNLL-U columns, got 4",
    ),
    "conllu_gz": Reader(
        head("tagging/ud_ewt/en_ewt-ud-train.conllu.gz", 12),
        "tagging/ud_ewt/en_ewt-ud-train.conllu.gz",
        7,
        b"x\tWord\tword\tNOT_A_TAG\t_\t_\t0\troot\t_\t_\n",
        lambda p, root: tagging.read_split("ud_ewt_upos", "train", root),
        "bad token ID 'x'",
    ),
    "multi30k": Reader(
        head("parallel/multi30k_en_de/val.en.gz", 6),
        "parallel/multi30k_en_de/val.en.gz",
        3,
        b"  \n",
        lambda p, root: translation.read_split("validation", root),
        "empty sentence",
    ),
    "wikitext2": Reader(
        head("pretrain/wikitext2/wiki.test.raw.txt", 10),
        "pretrain/wikitext2/wiki.test.raw.txt",
        1,
        b" text before any title line .\n",
        lambda p, root: corpus.read_documents(root, ("wikitext2",)),
        "text before the first ' = Title = ' line",
    ),
    "gutenberg": Reader(
        head("pretrain/gutenberg/a_modest_proposal.txt", 40),
        "pretrain/gutenberg/a_modest_proposal.txt",
        None,
        b"\n   \n\t\n",
        lambda p, root: corpus.read_documents(root, ("gutenberg",)),
        "no sentences in the book's text",
    ),
    "inaugural": Reader(
        head("pretrain/inaugural/inaugural.jsonl", 2),
        "pretrain/inaugural/inaugural.jsonl",
        2,
        b'["id", "text"]\n',
        lambda p, root: corpus.read_documents(root, ("inaugural",)),
        "expected an object with 'id' and 'text'",
    ),
    "word_list": Reader(
        [b"the\t120\n", b"of\t90\n", b"and\t80\n", b"to\t7\n"],
        "vocab/words.txt",
        3,
        b"in\tmany\n",
        lambda p, root: words.read_word_list(p),
        "count 'many' of 'in' is not an integer",
    ),
    "wordpiece_vocab": Reader(
        head(VOCAB_TXT, 200),
        VOCAB_TXT,
        150,
        b"two tokens\n",
        lambda p, root: vocabularies.WordPieceVocabulary(p).tokens,
        "expected one token without spaces, got 'two tokens'",
    ),
    "word2vec_text": Reader(
        _word2vec_lines(),
        "vectors/vectors.txt",
        3,
        b"with 0.5\n",
        lambda p, root: wordvec.load(p, "word2vec"),
        "word 'with' has 1 values, expected 2",
    ),
    "glove_text": Reader(
        _word2vec_lines()[1:],
        "vectors/glove.txt",
        2,
        b"with 0.5 x\n",
        lambda p, root: wordvec.load(p, "glove"),
        "word 'with': non-float value",
    ),
    "wordsim353": Reader(
        head("word_eval/wordsim353.tsv", 6),
        "word_eval/wordsim353.tsv",
        4,
        b"cat\tdog\n",
        lambda p, root: word_benchmarks.read_pairs(p),
        "expected 'w1<TAB>w2<TAB>score'",
    ),
    "analogies": Reader(
        head("word_eval/questions-words.txt", 6),
        "word_eval/questions-words.txt",
        3,
        b"Athens Greece Baghdad\n",
        lambda p, root: word_benchmarks.read_analogies(p),
        "expected 4 words 'a b c d'",
    ),
}
# The other file each multi-file reader needs, written good.
_VAL_DE = "parallel/multi30k_en_de/val.de.gz"
COMPANIONS = {"multi30k": [(_VAL_DE, head(_VAL_DE, 6))]}


def _layout(root: pathlib.Path, case: str, data: bytes) -> pathlib.Path:
    for rel, lines in COMPANIONS.get(case, []):
        write(root / rel, b"".join(lines))
    return write(root / READERS[case].name, data)


@pytest.mark.parametrize("case", READERS)
def test_reader_reads_the_good_file(tmp_path, case):
    """The cases below start from files the readers accept."""
    r = READERS[case]
    path = _layout(tmp_path, case, b"".join(r.lines))
    assert r.read(path, tmp_path)


@pytest.mark.parametrize("case", READERS)
def test_reader_empty_file(tmp_path, case):
    path = _layout(tmp_path, case, b"")
    message = expect(DataError, lambda: READERS[case].read(path, tmp_path), tmp_path, path)
    assert message.startswith(f"{path}: file is empty")


@pytest.mark.parametrize("case", READERS)
def test_reader_non_utf8(tmp_path, case):
    r = READERS[case]
    at = r.bad_at or 3  # damage this line: a 0xff byte after its first two bytes
    lines = list(r.lines)
    lines[at - 1] = lines[at - 1][:2] + b"\xff" + lines[at - 1][2:]
    path = _layout(tmp_path, case, b"".join(lines))
    offset = len(b"".join(lines[: at - 1])) + 2
    expect(
        DataError,
        lambda: r.read(path, tmp_path),
        tmp_path,
        path,
        at,
        "not valid utf-8: byte 0xff at offset",
        f" {offset} (byte 3 of the line)",
    )


@pytest.mark.parametrize("case", READERS)
def test_reader_malformed_line(tmp_path, case):
    r = READERS[case]
    if r.bad_at is None:  # no line format: the malformed file is `bad` itself
        data = r.bad
    else:
        data = b"".join([*r.lines[: r.bad_at - 1], r.bad, *r.lines[r.bad_at - 1 :]])
    path = _layout(tmp_path, case, data)
    expect(DataError, lambda: r.read(path, tmp_path), tmp_path, path, r.bad_at, r.fragment)


@pytest.mark.parametrize("case", READERS)
def test_reader_missing_file(tmp_path, case):
    path = _layout(tmp_path, case, b"".join(READERS[case].lines))
    path.unlink()
    where = path.parent if case == "gutenberg" else path  # a folder of books: none left
    expect(FileNotFoundError, lambda: READERS[case].read(path, tmp_path), tmp_path, where)


def test_damaged_gzip_names_the_file(tmp_path):
    rel = "tagging/ud_ewt/en_ewt-ud-train.conllu.gz"
    path = tmp_path / rel
    copy(tmp_path, rel)
    path.write_bytes(path.read_bytes()[:5000])  # truncated mid-stream
    expect(
        DataError,
        lambda: tagging.read_split("ud_ewt_upos", "train", tmp_path),
        tmp_path,
        path,
        None,
        "not a readable gzip file",
    )


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda b: b"", "file is empty"),
        (lambda b: b.replace(b"cd ", b"\xffd ", 1), "entry 2 of 2 (byte"),
        (lambda b: b[:-5], "entry 2 of 2 (byte"),
    ],
    ids=["empty", "non_utf8_word", "truncated"],
)
def test_binary_word_vectors(tmp_path, damage, fragment):
    path = tmp_path / "vectors.bin"
    wordvec.save(wordvec.WordVectors(["ab", "cd"], np.ones((2, 3))), path, "word2vec_binary")
    path.write_bytes(damage(path.read_bytes()))
    expect(DataError, lambda: wordvec.load(path), tmp_path, path, None, fragment)


# ---------------------------------------------------------------------------- the manifest


def _sst2_root(root: pathlib.Path, *extra: str) -> pathlib.Path:
    copy(root, VOCAB_TXT, "classification/sst2/stsa.binary.train", *extra)
    return root


def _flip(path: pathlib.Path, at: int = 100) -> None:
    """Changes one letter (same size, still a valid line) and keeps the file's mtime."""
    data, st = bytearray(path.read_bytes()), path.stat()
    while not chr(data[at]).isalpha():
        at += 1
    data[at] = ord("q") if data[at] != ord("q") else ord("z")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("TLX_CACHE_DIR", str(path))
    return path


def test_manifest_size_mismatch(tmp_path, cache_dir):
    root = _sst2_root(tmp_path / "data", "classification/sst2/stsa.binary.dev")
    dev = root / "classification/sst2/stsa.binary.dev"
    with open(dev, "ab") as f:
        f.write(b"1 one more line\n")
    expect(
        DataError,
        lambda: verify.verify_files([dev], root),
        root,
        dev,
        None,
        f"{dev.stat().st_size} bytes, but the manifest says 94400 bytes",
        "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1",
        f"python -m tlx.data fetch sst2 --dir={root}",
        "--config.data.verify=False",
    )


def test_manifest_sha256_mismatch_and_the_hash_cache(tmp_path, cache_dir, monkeypatch):
    root = _sst2_root(tmp_path / "data", "classification/sst2/stsa.binary.dev")
    dev = root / "classification/sst2/stsa.binary.dev"
    hashed = []
    sha256_file = fetch.sha256_file
    monkeypatch.setattr(fetch, "sha256_file", lambda p: hashed.append(p) or sha256_file(p))
    verify.verify_files([dev], root)
    verify.verify_files([dev], root)
    assert hashed == [dev]  # the second run only stats the file
    _flip(dev)  # same size, same mtime: the cached hash still vouches for it
    verify.verify_files([dev], root)
    assert hashed == [dev]
    os.utime(dev, ns=(dev.stat().st_atime_ns, dev.stat().st_mtime_ns + 1))  # a new mtime
    actual = sha256_file(dev)
    expect(
        DataError,
        lambda: verify.verify_files([dev], root),
        root,
        dev,
        None,
        f"sha256 {actual}, but the manifest says 02fedc82855dbdcabe82c65ed1af6c6570788eaac5",
        "size 94400 bytes, as the manifest says",
        f"python -m tlx.data fetch sst2 --dir={root}",
        "--config.data.verify=False",
    )
    assert hashed == [dev, dev]


def test_manifest_missing_and_unlisted_files(tmp_path, cache_dir):
    root = _sst2_root(tmp_path / "data")
    dev = root / "classification/sst2/stsa.binary.dev"
    expect(
        FileNotFoundError,
        lambda: verify.verify_files([dev], root),
        root,
        dev,
        None,
        "data file is missing",
        f"python -m tlx.data fetch sst2 --dir={root}",
    )
    own = write(tmp_path / "mine" / "vocab.txt", b"")  # a user's file: not hashed, not empty
    check = lambda: verify.verify_files([own], root)
    expect(DataError, check, (root, own.parent), own, None, "file is empty")
    write(own, b"[PAD]\n")
    verify.verify_files([own], root)


def test_corrupt_hash_cache_is_rebuilt(tmp_path, cache_dir, capsys):
    root = _sst2_root(tmp_path / "data")
    train = root / "classification/sst2/stsa.binary.train"
    write(cache_dir / verify.HASH_CACHE, b'{"truncated": ')
    verify.verify_files([train], root)
    entry = cache_dir / verify.HASH_CACHE
    assert f"cache entry {entry} is corrupt (JSONDecodeError" in capsys.readouterr().err
    verify.verify_files([train], root)
    assert "corrupt" not in capsys.readouterr().err


# ---------------------------------------------------------------------------- check_run_data


def _sst2_config(root: pathlib.Path, **data):
    cfg = bert_finetune.get_config("task=sst2,runlocal")
    with cfg.unlocked():
        cfg.data.data_dir = str(root)
        cfg.data.update(data)
        cfg.data.task_name = data_pipelines.get_task_name(
            cfg.data.task, vocab=cfg.data.vocab, **cfg.data.options
        )
    return cfg


def test_check_run_data_reads_each_split(tmp_path, cache_dir, monkeypatch):
    root = _sst2_root(tmp_path / "data", "classification/sst2/stsa.binary.dev")
    monkeypatch.setenv("TLX_DATA_DIR", str(root))
    verify.check_run_data(_sst2_config(root), ("train", "validation"))


def test_check_run_data_missing_dev_split(tmp_path, cache_dir, monkeypatch):
    root = _sst2_root(tmp_path / "data")
    monkeypatch.setenv("TLX_DATA_DIR", str(root))
    dev = root / "classification/sst2/stsa.binary.dev"
    for verify_files in (True, False):  # the manifest check, else the reader, names it
        cfg = _sst2_config(root, verify=verify_files)
        expect(
            FileNotFoundError,
            lambda cfg=cfg: verify.check_run_data(cfg, ("train", "validation")),
            root,
            dev,
        )


def test_check_run_data_verify_false_skips_the_hash_check(tmp_path, cache_dir, monkeypatch):
    root = _sst2_root(tmp_path / "data", "classification/sst2/stsa.binary.dev")
    monkeypatch.setenv("TLX_DATA_DIR", str(root))
    dev = root / "classification/sst2/stsa.binary.dev"
    _flip(dev)
    os.utime(dev)
    expect(
        DataError,
        lambda: verify.check_run_data(_sst2_config(root), ("train", "validation")),
        root,
        dev,
        None,
        "but the manifest says",
    )
    verify.check_run_data(_sst2_config(root, verify=False), ("train", "validation"))


def test_check_run_data_bad_dev_line_surfaces_intact(tmp_path, cache_dir, monkeypatch):
    """A reader's error comes out of the seqio / tf.data dataset construction unchanged."""
    root = _sst2_root(tmp_path / "data")
    monkeypatch.setenv("TLX_DATA_DIR", str(root))
    dev = write(root / "classification/sst2/stsa.binary.dev", b"1 fine .\n0 also fine .\n7 bad\n")
    message = expect(
        DataError,
        lambda: verify.check_run_data(_sst2_config(root, verify=False), ("validation",)),
        root,
        dev,
        3,
    )
    assert message == f"{dev}:3: expected '<0|1> <sentence>', got '7 bad'"


def test_check_run_data_bad_wordpiece_vocab_surfaces_intact(tmp_path, cache_dir, monkeypatch):
    root = _sst2_root(tmp_path / "data", "classification/sst2/stsa.binary.dev")
    monkeypatch.setenv("TLX_DATA_DIR", str(root))
    lines = head(VOCAB_TXT, 30522)
    lines[2000] = b"\xff" + lines[2000]
    vocab = write(tmp_path / "mine" / "vocab.txt", b"".join(lines))
    cfg = _sst2_config(root, vocab=f"wordpiece:{vocab}", verify=False)
    check = lambda: verify.check_run_data(cfg, ("validation",))
    expect(DataError, check, (root, vocab.parent), vocab, 2001)


def test_check_run_data_empty_split(tmp_path, cache_dir, monkeypatch):
    root = _sst2_root(tmp_path / "data", "classification/sst2/stsa.binary.dev")
    monkeypatch.setenv("TLX_DATA_DIR", str(root))
    monkeypatch.setattr(data_pipelines, "get_dataset", lambda *a, **k: tf.data.Dataset.range(0))
    expect(
        DataError,
        lambda: verify.check_run_data(_sst2_config(root), ("train", "validation")),
        root,
        "'sst2': split 'train' yields no examples",
    )


def test_check_run_data_corrupt_pretraining_corpus(tmp_path, cache_dir, monkeypatch):
    """The manifest check fails before the pretraining corpus is tokenized."""
    cfg = bert_pretrain_config.get_config("runlocal")
    root = tmp_path / "data"
    files = tasks.split_files("bert_pretrain", "validation", SOURCE)
    copy(root, *(str(f.relative_to(SOURCE)) for f in files))
    monkeypatch.setenv("TLX_DATA_DIR", str(root))
    book = root / "pretrain/gutenberg/emma.txt"
    _flip(book, 5000)
    os.utime(book)
    with cfg.unlocked():
        cfg.data.data_dir = str(root)
        cfg.data.task_name = data_pipelines.get_task_name(
            cfg.data.task, vocab=cfg.data.vocab, **cfg.data.options
        )
    expect(
        DataError,
        lambda: verify.check_run_data(cfg, ("train", "validation")),
        root,
        book,
        None,
        "python -m tlx.data fetch gutenberg",
    )


def test_split_files_of_every_kind_of_task():
    def rel(task, split):
        return [str(f.relative_to(SOURCE)) for f in tasks.split_files(task, split, SOURCE)]

    assert rel("sst2_tfds", "train") == [VOCAB_TXT]  # TFDS reads no local file
    assert rel("trec", "validation") == [VOCAB_TXT, "classification/trec/TREC.train.label.txt"]
    mix = rel(data_pipelines.get_task_name("glue_mix"), "validation")
    assert (
        mix[0] == VOCAB_TXT and len(mix) == 5 and "pair_classification/rte/validation.jsonl" in mix
    )
    assert rel("ud_ewt_upos", "train")[1:] == ["tagging/ud_ewt/en_ewt-ud-train.conllu.gz"]
    assert rel("multi30k_en_de", "validation")[1:] == [
        "parallel/multi30k_en_de/val.en.gz",
        "parallel/multi30k_en_de/val.de.gz",
        "parallel/multi30k_en_de/train.de.gz",
    ]
    pretrain = rel("bert_pretrain", "train")
    assert pretrain[0] == VOCAB_TXT and len(pretrain) == 1 + 1 + 9 + 2
    assert rel("causal_lm", "validation") == pretrain
    assert rel("skipgram", "train") == rel("glove", "train") == pretrain[1:]  # corpus words
    for task in ("bert_pretrain", "sst2", "multi30k_en_de", "glove"):
        name = data_pipelines.get_task_name(task)
        for split in seqio.get_mixture_or_task(name).splits:
            # Every file a split reads is one the manifest vouches for.
            assert set(rel(name, split)) <= set(verify.manifest_index()), (task, split)
    with pytest.raises(ValueError, match="has splits"):
        tasks.split_files("rte", "test")


# ---------------------------------------------------------------------------- caches


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


def test_check_run_data_unknown_split_is_a_config_error(tmp_path, cache_dir, monkeypatch):
    root = _sst2_root(tmp_path / "data", "classification/sst2/stsa.binary.dev")
    monkeypatch.setenv("TLX_DATA_DIR", str(root))
    cfg = _sst2_config(root)
    with pytest.raises(errors.ConfigError, match=r"task 'sst2' has no split 'dev'") as info:
        verify.check_run_data(cfg, ("train", "dev"))
    assert errors.exit_status(info.value) == errors.EXIT_BAD_INPUT
