"""Bad data files are caught by their readers and named: every reader of the data layout (the
classification, tagging, translation and pretraining corpora, word lists, vocabularies, word
vectors, word benchmarks) meets an empty file, bytes that are not UTF-8, a malformed line and a
missing file. The manifest check and the pre-flight are in test_bad_data_preflight.py, the
caches under TLX_CACHE_DIR in test_bad_caches.py.

Every case builds its input in a temporary data root from a small piece of the real layout
($TLX_DATA_DIR, never written), damages it, and checks the error's type, that its message names
the file (and line), that the CLIs would exit with status 2, and that no input file changed.
"""

import pathlib
import sys
from typing import NamedTuple

import numpy as np
import pytest

from data_pipelines import classification, corpus, tagging, translation, vocabularies, words
from data_pipelines.errors import DataError
from tlx import word_benchmarks, wordvec

_damaged = sys.modules["tlx_tests_conftest"]._load_module(
    "tlx_tests_damaged_data", "damaged_data.py"
)  # tests/damaged_data.py
VOCAB_TXT = _damaged.VOCAB_TXT
head, write, copy, expect = _damaged.head, _damaged.write, _damaged.copy, _damaged.expect


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
