"""Bad data is caught before training and named: the manifest check (size, sha256, missing and
unlisted files, the hash cache) and the pre-flight `verify.check_run_data`, which reads each
split a run will use; the files each kind of task reads.

As in test_bad_data.py, every case damages a temporary data root built from the real layout and
checks the error's type, the file it names, exit status 2, and that no input file changed.
"""

import os
import pathlib
import sys

import pytest
import seqio
import tensorflow as tf

import data_pipelines
from configs.bert import finetune as bert_finetune
from configs.bert import pretrain as bert_pretrain_config
from data_pipelines import tasks
from data_pipelines.errors import DataError
from tlx import errors
from tlx.data import fetch, verify

_damaged = sys.modules["tlx_tests_conftest"]._load_module(
    "tlx_tests_damaged_data", "damaged_data.py"
)  # tests/damaged_data.py
SOURCE, VOCAB_TXT = _damaged.SOURCE, _damaged.VOCAB_TXT
head, write, copy, expect = _damaged.head, _damaged.write, _damaged.copy, _damaged.expect
_sst2_root, _flip = _damaged.sst2_root, _damaged.flip
cache_dir = _damaged.cache_dir  # a fixture


# ---------------------------------------------------------------------------- the manifest


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


def test_check_run_data_unknown_split_is_a_config_error(tmp_path, cache_dir, monkeypatch):
    root = _sst2_root(tmp_path / "data", "classification/sst2/stsa.binary.dev")
    monkeypatch.setenv("TLX_DATA_DIR", str(root))
    cfg = _sst2_config(root)
    with pytest.raises(errors.ConfigError, match=r"task 'sst2' has no split 'dev'") as info:
        verify.check_run_data(cfg, ("train", "dev"))
    assert errors.exit_status(info.value) == errors.EXIT_BAD_INPUT
